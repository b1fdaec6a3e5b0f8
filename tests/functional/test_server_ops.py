"""Operating the server: workers, reload, TLS upstreams, the mock provider, the CLI.

The systemd unit and the signals/ports of a service are in test_service.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Gateway, channel, children_pids, gateway_config, make_key, token

REPO = Path(__file__).resolve().parents[2]


def _chat(gw: Gateway, key: str, model: str, **kw):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello there"}], **kw
    )


# ----------------------------------------------------------------- mock provider


def test_example_config_serves_a_completion_with_no_key(tmp_path: Path) -> None:
    text = (REPO / "config.example.toml").read_text()
    # The example's demo key, read from the file itself (not hard-coded here).
    demo = next(
        line.split('"')[1] for line in text.splitlines() if line.strip().startswith("key =")
    )
    # Log to a file the test can read (the example logs nowhere by default).
    text = "\n".join(
        line for line in text.splitlines() if not line.strip().startswith("access_log")
    ).replace("[logging]", f'[logging]\naccess_log = "{tmp_path / "access.jsonl"}"')
    with Gateway(tmp_path, text) as gw:
        gw.start()
        resp = _chat(gw, demo, "mock-1")
        assert resp.choices[0].message.content
        assert resp.usage.completion_tokens == len(resp.choices[0].message.content.split())
        stream = _chat(gw, demo, "fast", stream=True, max_tokens=5)
        chunks = list(stream)
        text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text_out.split()) == 5
        # The gateway asked for usage on the client's behalf: no usage-only chunk.
        assert all(c.choices for c in chunks)
        rec = gw.wait_records(2)[-1]
        assert rec["completion_tokens"] == 5 and rec["stream"] is True
        assert rec["channel"] == "mock" and rec["model"] == "mock-1"


def test_mock_delay_paces_tokens(make_gateway, demo_key: str) -> None:
    gw = make_gateway(
        channels=[{"name": "m", "type": "mock", "models": ["slowmock"], "delay_ms": 50}],
        tokens=[token("t", demo_key)],
    )
    t0 = time.monotonic()
    stream = _chat(gw, demo_key, "slowmock", stream=True, max_tokens=6)
    arrivals = [time.monotonic() - t0 for c in stream if c.choices and c.choices[0].delta.content]
    assert len(arrivals) == 6
    # Tokens arrive spread out (about 50 ms apart), not all at the end.
    assert arrivals[-1] - arrivals[0] >= 0.2


# ----------------------------------------------------------------- workers


def test_workers_share_the_port_and_drain(make_gateway, demo_key: str) -> None:
    gw = make_gateway(
        channels=[{"name": "m", "type": "mock", "models": ["mock-1"]}],
        tokens=[token("t", demo_key)],
        args=["--workers", "2"],
    )
    deadline = time.monotonic() + 10
    while len(children_pids(gw.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(children_pids(gw.pid)) == 2
    workers = set(children_pids(gw.pid))
    answered_by = set()
    for _ in range(40):
        # New connection each time, so the kernel spreads them over both sockets.
        status, body = _get(gw, "/ready")
        assert status == 200
        answered_by.add(json.loads(body)["pid"])
        resp = _chat(gw, demo_key, "mock-1")
        assert resp.usage.total_tokens > 0
    # Both workers accepted connections (P(all 40 on one socket) is ~1e-12).
    assert answered_by == workers
    assert gw.stop() == 0
    records = gw.access_log_records()
    assert len(records) == 40
    assert len({r["request_id"] for r in records}) == 40


# ----------------------------------------------------------------- reload


def test_sighup_reloads_config_without_dropping_connections(make_gateway, demo_key: str) -> None:
    new_key = make_key()
    gw = make_gateway(
        channels=[{"name": "m", "type": "mock", "models": ["mock-1"]}],
        tokens=[token("t", demo_key)],
    )
    keepalive = http.client.HTTPConnection(gw.host, gw.port, timeout=5)
    try:
        keepalive.request("GET", "/health")
        assert keepalive.getresponse().read() and True
        assert _status(gw, new_key, "mock-1") == 401
        text = gateway_config(
            channels=[{"name": "m", "type": "mock", "models": ["mock-1", "mock-2"]}],
            tokens=[token("t", demo_key), token("t2", new_key)],
        )
        gw.config_path.write_text(text + f'\n[logging]\naccess_log = "{gw.access_log_path}"\n')
        gw.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _status(gw, new_key, "mock-2") != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(gw, new_key, "mock-2") == 200
        # The connection opened before the reload still works.
        keepalive.request("GET", "/ready")
        assert json.loads(keepalive.getresponse().read())["snapshot"] >= 2
        # An invalid file is refused; the running config stays.
        gw.config_path.write_text("[server]\nport = 'nope'\n")
        gw.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert _status(gw, new_key, "mock-2") == 200
        assert "reload failed" in gw.stderr_text()
    finally:
        keepalive.close()


def _get(gw: Gateway, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_key_the_fast_path_remembers_is_refused_once_reloaded_away(
    make_gateway, fake_openai, demo_key: str
) -> None:
    """The worker remembers the digests of keys it served (gateway/auth.py
    `DIGESTS`); the snapshot still decides: a key disabled or removed by a
    reload is refused at once, and a wrong key is never served."""
    other = make_key()
    ch = [channel("up", fake_openai.url + "/v1", ["gpt-4o-mini"])]
    gw = make_gateway(channels=ch, tokens=[token("t", demo_key), token("o", other)])
    for _ in range(3):  # served (and remembered) on the fast path
        assert _status(gw, demo_key, "gpt-4o-mini") == 200
        assert _status(gw, other, "gpt-4o-mini") == 200
        assert _status(gw, demo_key[:-1] + "x", "gpt-4o-mini") == 401
    assert len(fake_openai.requests) == 6
    log = f'\n[logging]\naccess_log = "{gw.access_log_path}"\n'
    text = gateway_config(channels=ch, tokens=[token("t", demo_key, enabled=False)])
    gw.config_path.write_text(text + log)
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while _status(gw, demo_key, "gpt-4o-mini") != 403 and time.monotonic() < deadline:
        time.sleep(0.05)
    served = len(fake_openai.requests)  # the polls answered before the reload
    assert _status(gw, demo_key, "gpt-4o-mini") == 403  # disabled
    assert _status(gw, other, "gpt-4o-mini") == 401  # removed
    assert len(fake_openai.requests) == served


def _status(gw: Gateway, key: str, model: str) -> int:
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=5)
    try:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# ----------------------------------------------------------------- TLS upstream


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _TLSUpstream:
    """A minimal OpenAI chat endpoint over TLS that records the SNI it was asked for."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.sni: list[str | None] = []
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = lambda sock, name, ctx: self.sni.append(name)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "chatcmpl-tls",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "over tls"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ctx)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> _TLSUpstream:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def test_tls_upstream_is_verified_and_gets_sni(tmp_path: Path, demo_key: str) -> None:
    cert, key = _self_signed(tmp_path)
    with _TLSUpstream(cert, key) as upstream:
        text = gateway_config(
            channels=[channel("tls", f"https://localhost:{upstream.port}", ["m"])],
            tokens=[token("t", demo_key)],
        )
        # Trusting our CA (through the standard SSL_CERT_FILE): served, with SNI.
        env = {**os.environ, "SSL_CERT_FILE": str(cert)}
        with Gateway(tmp_path / "trusted", text, env=env) as gw:
            gw.start()
            resp = _chat(gw, demo_key, "m")
            assert resp.choices[0].message.content == "over tls"
            assert "localhost" in upstream.sni
        # Not trusting it: verification fails, nothing is sent, the client gets 502.
        env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
        with Gateway(tmp_path / "untrusted", text, env=env) as gw:
            gw.start()
            with pytest.raises(openai.APIStatusError) as err:
                _chat(gw, demo_key, "m")
            assert err.value.status_code == 502
            assert err.value.body["code"] == "upstream_error"


# ----------------------------------------------------------------- CLI and packaging


def test_check_config_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "fastgate", "check-config", str(REPO / "config.example.toml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[channels]]\nname = "a"\ntype = "openai"\nbase_url = "http://x"\nmodels = ["m"]\nweight = -1\n'
    )
    res = subprocess.run(
        [sys.executable, "-m", "fastgate", "check-config", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "channels[0].weight" in res.stderr
    # The server refuses the same file with the same message.
    srv = subprocess.run(
        [sys.executable, "-m", "fastgate", "serve", "--config", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert srv.returncode == 2
    assert "channels[0].weight" in srv.stderr
