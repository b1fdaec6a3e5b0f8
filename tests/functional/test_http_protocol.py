"""HTTP/1.1 protocol edges of the data plane, seen from raw sockets and h11.

A real fastgate process serves an openai-type channel (pointing at FakeOpenAI)
and a mock channel. The client side is either hand-written bytes or h11, an
HTTP implementation independent of the server's httptools, so framing mistakes
(a missing chunk terminator, a wrong content-length, a leaked 1xx) show up as
h11 protocol errors instead of being papered over by a lenient client.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, channel, make_key, parse_sse, token

MAX_HEADER = 4096
MAX_BODY = 1000
HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MSGS = [{"role": "user", "content": "hello over raw sockets"}]


# --------------------------------------------------------------------------- client helpers


@dataclass
class Resp:
    """One parsed response: status, raw header pairs (lower-cased names), body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        n = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k == n]

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, f"{name}: expected exactly one header, got {values}"
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        return self.json()["error"]["code"]


def connect(gw: Gateway, timeout: float = 10.0, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((gw.host, gw.port))
    return s


def h11_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    host: str = "fastgate.test",
) -> tuple[h11.Connection, bytes]:
    """Encode one request with a fresh h11 client connection (one per pipelined request,
    since an h11 connection will not send a request before the previous answer)."""
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("Host", host), *headers]
    if body is not None and not any(k.lower() == "content-length" for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=target, headers=hdrs))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    return conn, data


def read_responses(sock: socket.socket, conns: list[h11.Connection]) -> list[Resp]:
    """Read one response per connection, in order, from the same socket.

    Bytes left over after a response (the next pipelined answer) are handed to the
    next h11 connection, so each answer is framed by its own parser."""
    out: list[Resp] = []
    carry, eof = b"", False
    for conn in conns:
        if carry or eof:
            conn.receive_data(carry)
            if eof:
                conn.receive_data(b"")
        resp: Resp | None = None
        informational: list[int] = []
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                eof = eof or not data
                conn.receive_data(data)
                continue
            if isinstance(ev, h11.InformationalResponse):
                informational.append(ev.status_code)
            elif isinstance(ev, h11.Response):
                resp = Resp(ev.status_code, list(ev.headers), informational=informational)
            elif isinstance(ev, h11.Data):
                assert resp is not None
                resp.body += bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                raise AssertionError(f"connection closed before response {len(out) + 1} ended")
            else:
                raise AssertionError(f"unexpected h11 event {ev!r}")
        assert resp is not None
        out.append(resp)
        carry, closed = conn.trailing_data
        eof = eof or closed
    return out


def exchange(
    sock: socket.socket,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
) -> Resp:
    conn, data = h11_request(method, target, headers, body)
    sock.sendall(data)
    return read_responses(sock, [conn])[0]


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes, float]:
    """Read until the peer closes; return (closed, bytes read, seconds waited)."""
    t0 = time.monotonic()
    sock.settimeout(0.05)
    got = b""
    while time.monotonic() - t0 < timeout:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, got, time.monotonic() - t0
        if not data:
            return True, got, time.monotonic() - t0
        got += data
    return False, got, time.monotonic() - t0


def split_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, header pairs and the rest of a raw response (for HTTP/1.0 reads)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    pairs = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        pairs.append((k.strip().lower(), v.strip()))
    return status, pairs, rest


def chat_body(
    model: str, *, stream: bool = False, content: str = "hello over raw sockets"
) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        obj["stream"] = True
    return json.dumps(obj).encode()


def stream_text(body: bytes) -> tuple[str, bool]:
    """Concatenated delta content of an OpenAI chat stream, and whether [DONE] arrived."""
    text, done = [], False
    for ev in parse_sse(body):
        if ev.get("data") == "[DONE]":
            done = True
            continue
        obj = json.loads(ev["data"])
        for choice in obj.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text), done


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def key() -> str:
    return make_key()


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, key: str) -> Gateway:
    """fastgate with small limits and timeouts, an openai channel and a mock channel."""
    return make_gateway(
        channels=[
            channel("fake", fake_openai.url, ["gpt-4o"]),
            {"name": "mock", "type": "mock", "models": ["mock-1"]},
        ],
        tokens=[token("t1", key)],
        server={
            "max_header_bytes": MAX_HEADER,
            "max_body_bytes": MAX_BODY,
            "header_timeout": HEADER_TIMEOUT,
            "keepalive_timeout": KEEPALIVE_TIMEOUT,
            "body_timeout": BODY_TIMEOUT,
            "first_byte_timeout": 5.0,
            "idle_timeout": 5.0,
        },
    )


def auth(key: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json"), *extra]


# --------------------------------------------------------------------------- keep-alive


def test_keep_alive_serves_many_requests_on_one_connection(
    gw: Gateway, fake_openai: FakeOpenAI, key: str
) -> None:
    with connect(gw) as s:
        r1 = exchange(s, "POST", "/v1/chat/completions", auth(key), chat_body("mock-1"))
        r2 = exchange(s, "POST", "/v1/chat/completions", auth(key), chat_body("gpt-4o"))
        r3 = exchange(s, "GET", "/health", [])
        r4 = exchange(
            s, "POST", "/v1/chat/completions", auth(key), chat_body("gpt-4o", stream=True)
        )
        r5 = exchange(s, "POST", "/v1/chat/completions", auth(key), chat_body("mock-1"))
        for r in (r1, r2, r3, r4, r5):
            assert r.status == 200, r.body
            assert "close" not in r.all("connection")
            r.one("x-request-id")
        assert r1.json()["choices"][0]["message"]["content"]
        assert (
            r5.json()["choices"][0]["message"]["content"]
            == (r1.json()["choices"][0]["message"]["content"])
        )
        assert r2.json()["choices"][0]["message"]["content"] == "Hello from fake"
        assert r3.json()["status"] == "ok"
        text, done = stream_text(r4.body)
        assert text == fake_openai.last.content and done
        # Still open: nothing arrives and no EOF within a short wait.
        closed, extra, _ = wait_closed(s, 0.3)
        assert not closed and extra == b""
    reqs = fake_openai.requests
    assert len(reqs) == 2
    assert fake_openai.connections_opened == 1, "the upstream connection is kept alive too"


def test_connection_close_is_honored(gw: Gateway, key: str) -> None:
    with connect(gw) as s:
        r = exchange(
            s,
            "POST",
            "/v1/chat/completions",
            auth(key, ("Connection", "close")),
            chat_body("gpt-4o"),
        )
        assert r.status == 200
        assert r.json()["choices"][0]["message"]["content"] == "Hello from fake"
        assert [v.lower() for v in r.all("connection")] == ["close"]
        closed, extra, waited = wait_closed(s, 2.0)
        assert closed and extra == b"" and waited < 1.0


@pytest.mark.parametrize("model,stream", [("mock-1", False), ("gpt-4o", False), ("gpt-4o", True)])
def test_http10_request_gets_complete_response_and_close(
    gw: Gateway, fake_openai: FakeOpenAI, key: str, model: str, stream: bool
) -> None:
    body = chat_body(model, stream=stream)
    raw = (
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with connect(gw) as s:
        s.sendall(raw)
        closed, got, _ = wait_closed(s, 5.0)
    assert closed, "an HTTP/1.0 request without keep-alive must end with a close"
    status, headers, rest = split_head(got)
    names = [k for k, _ in headers]
    assert status == 200
    assert b"transfer-encoding" not in names, "HTTP/1.0 clients cannot read chunked"
    assert names.count(b"x-request-id") == 1
    lengths = [int(v) for k, v in headers if k == b"content-length"]
    if lengths:
        assert lengths == [len(rest)]
    if stream:
        text, done = stream_text(rest)
        assert done and text == fake_openai.last.content
    else:
        assert json.loads(rest)["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------- pipelining


def test_pipelined_requests_are_answered_in_order(
    gw: Gateway, fake_openai: FakeOpenAI, key: str
) -> None:
    plan = [
        ("pipe-1", "POST", "/v1/chat/completions", chat_body("gpt-4o"), 200),
        ("pipe-2", "GET", "/health", None, 200),
        ("pipe-3", "POST", "/v1/chat/completions", chat_body("no-such-model"), 404),
        ("pipe-4", "POST", "/v1/chat/completions", chat_body("mock-1"), 200),
        ("pipe-5", "POST", "/v1/chat/completions", chat_body("gpt-4o", stream=True), 200),
    ]
    conns, wire = [], b""
    for rid, method, path, body, _ in plan:
        c, data = h11_request(method, path, auth(key, ("X-Request-Id", rid)), body)
        conns.append(c)
        wire += data
    with connect(gw) as s:
        s.sendall(wire)  # all five heads and bodies in one write
        resps = read_responses(s, conns)
        assert [r.status for r in resps] == [p[4] for p in plan]
        assert [r.one("x-request-id") for r in resps] == [p[0] for p in plan]
        assert resps[0].json()["choices"][0]["message"]["content"] == "Hello from fake"
        assert resps[1].json()["status"] == "ok"
        assert resps[2].error_code() == "model_not_found"
        assert resps[3].json()["model"] == "mock-1"
        text, done = stream_text(resps[4].body)
        assert done and text == "Hello from fake"
        # The connection is still usable afterwards.
        r6 = exchange(s, "GET", "/health", [("X-Request-Id", "pipe-6")])
        assert r6.status == 200 and r6.one("x-request-id") == "pipe-6"
    assert [bool(r.json.get("stream")) for r in fake_openai.requests] == [False, True]


# --------------------------------------------------------------------------- request bodies


def test_chunked_upload_is_forwarded_with_content_length(
    gw: Gateway, fake_openai: FakeOpenAI, key: str
) -> None:
    body = json.dumps(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "chunked upload " + "abc " * 40}],
            "temperature": 0.25,
        },
        indent=1,  # keep odd whitespace: the upstream must see these exact bytes
    ).encode()
    assert len(body) < MAX_BODY
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(
        h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[("Host", "x"), ("Transfer-Encoding", "chunked"), *auth(key)],
        )
    )
    with connect(gw) as s:
        s.sendall(head)
        cuts = [0, 7, 100, 101, 250, len(body)]
        for a, b in itertools.pairwise(cuts):
            time.sleep(0.05)
            s.sendall(conn.send(h11.Data(data=body[a:b])))
        s.sendall(conn.send(h11.EndOfMessage()))
        r = read_responses(s, [conn])[0]
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake"
    up = fake_openai.last
    assert up.body == body
    assert up.headers.getall("content-length") == [str(len(body))]
    assert "transfer-encoding" not in {k.lower() for k, _ in up.header_pairs}


def test_expect_100_continue(gw: Gateway, fake_openai: FakeOpenAI, key: str) -> None:
    body = chat_body("gpt-4o")
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(
        h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[
                ("Host", "x"),
                ("Expect", "100-continue"),
                ("Content-Length", str(len(body))),
                *auth(key),
            ],
        )
    )
    with connect(gw, timeout=2.0) as s:
        s.sendall(head)
        conn.receive_data(s.recv(65536))
        ev = conn.next_event()
        assert isinstance(ev, h11.InformationalResponse) and ev.status_code == 100
        s.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        r = read_responses(s, [conn])[0]
    assert r.status == 200
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake"
    assert fake_openai.last.body == body
    assert "expect" not in {k.lower() for k, _ in fake_openai.last.header_pairs}


def test_expect_100_continue_over_limit_gets_413_without_continue(gw: Gateway, key: str) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {MAX_BODY * 5}\r\n\r\n".encode()
    )
    with connect(gw, timeout=2.0) as s:
        s.sendall(head)  # and never the body
        _closed, got, waited = wait_closed(s, 3.0)
    assert waited < 1.5
    assert got.startswith(b"HTTP/1.1 413"), got[:100]
    assert b" 100 " not in got.split(b"\r\n", 1)[0]
    _status, headers, rest = split_head(got)
    assert [k for k, _ in headers].count(b"x-request-id") == 1
    assert json.loads(rest)["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------- oversize and malformed


def test_headers_over_limit_get_431(gw: Gateway, key: str) -> None:
    with connect(gw) as s:
        r = exchange(
            s,
            "POST",
            "/v1/chat/completions",
            auth(key, ("X-Big", "a" * 10_000)),
            chat_body("mock-1"),
        )
        assert r.status == 431
        assert r.error_code() == "headers_too_large"
        r.one("x-request-id")
        closed, _, _ = wait_closed(s, 2.0)
        assert closed


def test_unterminated_head_over_limit_gets_431_without_waiting(gw: Gateway) -> None:
    """A head that keeps growing is cut off at the limit, not when it finally ends."""
    with connect(gw) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for i in range(5):
            s.sendall(f"X-Pad-{i}: {'b' * 2500}\r\n".encode())
        closed, got, waited = wait_closed(s, 3.0)
    assert closed and waited < 0.8, "431 must not wait for the header timeout"
    status, headers, rest = split_head(got)
    assert status == 431
    assert [k for k, _ in headers].count(b"x-request-id") == 1
    assert json.loads(rest)["error"]["code"] == "headers_too_large"


def test_body_over_limit_with_content_length_gets_413_immediately(
    gw: Gateway, fake_openai: FakeOpenAI, key: str
) -> None:
    total = MAX_BODY * 3
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {total}\r\n\r\n".encode()
    )
    with connect(gw, timeout=2.0) as s:
        s.sendall(head + b'{"model": "gpt-4o", "messages": [')  # a start, not the rest
        _closed, got, waited = wait_closed(s, 3.0)
    assert waited < 1.5, "413 must come before the client sends the rest of the body"
    status, headers, rest = split_head(got)
    assert status == 413
    assert [k for k, _ in headers].count(b"x-request-id") == 1
    assert json.loads(rest)["error"]["code"] == "request_too_large"
    assert fake_openai.request_count == 0


def test_chunked_body_over_limit_gets_413(gw: Gateway, fake_openai: FakeOpenAI, key: str) -> None:
    conn = h11.Connection(h11.CLIENT)
    head = conn.send(
        h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[("Host", "x"), ("Transfer-Encoding", "chunked"), *auth(key)],
        )
    )
    piece = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"z" * 300
    with connect(gw) as s:
        s.sendall(head)
        try:
            for _ in range(8):  # 8 x ~360 bytes, well over MAX_BODY
                s.sendall(conn.send(h11.Data(data=piece)))
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        closed, got, _ = wait_closed(s, 3.0)
    assert closed
    status, headers, rest = split_head(got)
    assert status == 413
    assert [k for k, _ in headers].count(b"x-request-id") == 1
    assert json.loads(rest)["error"]["code"] == "request_too_large"
    assert fake_openai.request_count == 0


GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/9.9.9 what\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS hello
    b"POST /v1/chat/completions HTTP/1.1\r\nHost x no colon\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n",
]


def test_malformed_request_gets_400_and_close(gw: Gateway) -> None:
    for garbage in GARBAGE:
        with connect(gw) as s:
            s.sendall(garbage)
            closed, got, waited = wait_closed(s, 3.0)
        assert closed and waited < 1.5, garbage
        status, headers, rest = split_head(got)
        assert status == 400, (garbage, got)
        assert [k for k, _ in headers].count(b"x-request-id") == 1, garbage
        assert json.loads(rest)["error"]["code"] == "invalid_request", garbage
    assert gw.alive()


def test_invalid_json_body_gets_400_invalid_request(gw: Gateway, key: str) -> None:
    with connect(gw) as s:
        r = exchange(
            s,
            "POST",
            "/v1/chat/completions",
            auth(key, ("X-Request-Id", "bad-json-1")),
            b'{"model": "gpt-4o", "messages": [',
        )
        assert r.status == 400
        assert r.error_code() == "invalid_request"
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.one("x-request-id") == "bad-json-1"
        # An application-level error does not poison the connection.
        r2 = exchange(s, "GET", "/health", [])
        assert r2.status == 200
    assert gw.record_for("bad-json-1")["status"] == 400


# --------------------------------------------------------------------------- timeouts


def test_half_sent_head_is_closed_after_header_timeout(gw: Gateway) -> None:
    with connect(gw) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        closed, got, waited = wait_closed(s, 4.0)
    assert closed, "a stalled request head must not hold a connection forever"
    assert HEADER_TIMEOUT * 0.8 <= waited < HEADER_TIMEOUT + 1.5
    if got:  # an answer is optional; if there is one it is a well-formed error
        status, headers, _ = split_head(got)
        assert status in (400, 408)
        assert [k for k, _ in headers].count(b"x-request-id") == 1


def test_head_trickled_line_by_line_is_cut_at_header_timeout(gw: Gateway) -> None:
    """Each header line arrives well within the timeout, the whole head does not:
    the clock runs from the head's first byte, not from the last line."""
    with connect(gw) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        t0 = time.monotonic()
        s.settimeout(0.05)
        got = b""
        for i in range(40):
            try:
                s.sendall(b"x-line-%d: v\r\n" % i)
            except OSError:
                break
            try:
                got = s.recv(4096)
                if got:
                    break
            except TimeoutError:
                pass
            time.sleep(HEADER_TIMEOUT / 4)
        waited = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408 "), got[:80]
    assert HEADER_TIMEOUT * 0.8 <= waited < HEADER_TIMEOUT + 1.0


def test_stalled_body_gets_408_after_body_timeout(gw: Gateway, key: str) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" % key.encode()
    )
    with connect(gw) as s:
        s.sendall(head + b'{"model": "mock-1", ')
        time.sleep(BODY_TIMEOUT * 0.6)
        s.sendall(b'"messages": ')  # a read within body_timeout restarts the clock
        t0 = time.monotonic()
        closed, got, waited = wait_closed(s, BODY_TIMEOUT + 3)
    assert closed
    assert got.startswith(b"HTTP/1.1 408 "), got[:80]
    assert b"timed out reading the request" in got
    assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 1.0
    assert time.monotonic() - t0 < BODY_TIMEOUT + 3


def test_idle_keep_alive_connection_is_closed_after_keepalive_timeout(gw: Gateway) -> None:
    with connect(gw) as s:
        r = exchange(s, "GET", "/health", [])
        assert r.status == 200
        closed, got, waited = wait_closed(s, 4.0)
    assert closed and got == b""
    assert KEEPALIVE_TIMEOUT * 0.8 <= waited < KEEPALIVE_TIMEOUT + 1.5


# --------------------------------------------------------------------------- ops endpoints


_PROM_LINE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"]*\""
    r"(,[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"]*\")*\})? [-+0-9.eEinfNa]+( [0-9]+)?$"
)


def test_ops_endpoints_over_raw_sockets(gw: Gateway) -> None:
    with connect(gw) as s:
        health = exchange(s, "GET", "/health", [("X-Request-Id", "ops-1")])
        ready = exchange(s, "GET", "/ready", [])
        metrics = exchange(s, "GET", "/metrics", [])
    assert health.status == 200 and health.json()["status"] == "ok"
    assert health.one("x-request-id") == "ops-1"
    assert ready.status == 200
    ready.one("x-request-id")
    assert metrics.status == 200
    metrics.one("x-request-id")
    assert metrics.one("content-type").startswith("text/plain")
    lines = metrics.body.decode().splitlines()
    samples = [ln for ln in lines if ln and not ln.startswith("#")]
    assert samples, "metrics must expose samples"
    assert any(ln.startswith("# TYPE ") for ln in lines)
    bad = [ln for ln in samples if not _PROM_LINE.match(ln)]
    assert not bad, f"not Prometheus text format: {bad}"
