"""Upstreams that reset, lie, stall or speak odd-but-legal HTTP, behind a real fastgate.

FakeOpenAI (aiohttp) speaks correct HTTP, so the misbehaviours here come from
`RawUpstream`: a bare TCP server (one thread per connection) whose replies are
written byte by byte by each test. Clients are raw sockets with h11 framing the
responses, and every read has a timeout: a hang fails the test instead of
stalling the run.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h11
import pytest

from tests.fakes.openai_fake import FakeOpenAI, Hang
from tests.harness import Gateway, channel, make_key, parse_sse, token

IDLE_TIMEOUT = 0.5
FIRST_BYTE_TIMEOUT = 2.0


# --------------------------------------------------------------------------- a raw upstream


class RawConn:
    """One accepted upstream connection, as a behaviour function sees it."""

    def __init__(self, server: RawUpstream, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buf = b""
        self.served = 0  # requests read on this connection
        sock.settimeout(0.05)

    def recv(self, timeout: float = 30.0) -> bytes:
        """Next bytes from the peer; b"" on EOF, reset, stop or timeout."""
        deadline = time.monotonic() + timeout
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return b""
        return b""

    def read_request(self, timeout: float = 30.0) -> tuple[bytes, bytes] | None:
        """The next request (head, body) framed by content-length; None if the peer left."""
        while b"\r\n\r\n" not in self.buf:
            data = self.recv(timeout)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            data = self.recv(timeout)
            if not data:
                return None
            rest += data
        body, self.buf = rest[:length], rest[length:]
        self.served += 1
        with self.server.lock:
            self.server.requests.append((head, body))
        return head, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_peer_close(self, timeout: float = 30.0) -> None:
        """Say nothing more; return when the peer (fastgate) hangs up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            try:
                if not self.sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def reset(self) -> None:
        """Abort with a RST instead of a FIN."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class RawUpstream:
    """A bare TCP server on 127.0.0.1:0 running `behaviour(conn)` per connection."""

    def __init__(self, behaviour: Callable[[RawConn], None]) -> None:
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[tuple[bytes, bytes]] = []
        self.accepted = 0
        self.lsock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.lsock.settimeout(0.05)
        self.port = self.lsock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self._socks.append(sock)
            t = threading.Thread(target=self._serve, args=(RawConn(self, sock),), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: RawConn) -> None:
        try:
            self.behaviour(conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.lsock.close()
        self._acceptor.join(2)
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def raw_upstream() -> Iterator[Callable[[Callable[[RawConn], None]], RawUpstream]]:
    servers: list[RawUpstream] = []

    def make(behaviour: Callable[[RawConn], None]) -> RawUpstream:
        srv = RawUpstream(behaviour)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


# --------------------------------------------------------------------------- wire pieces


def completion_body(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    ).encode()


def json_response(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + body
    )


def sse_event(text: str, finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def serve_forever(reply: Callable[[RawConn, bytes, bytes], None]) -> Callable[[RawConn], None]:
    """A behaviour answering every request on a connection with `reply`."""

    def behaviour(conn: RawConn) -> None:
        while (req := conn.read_request()) is not None:
            reply(conn, *req)

    return behaviour


# --------------------------------------------------------------------------- client side


@dataclass
class Resp:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    informational: list[int]

    def one(self, name: str) -> str:
        n = name.lower().encode()
        values = [v.decode("latin-1") for k, v in self.headers if k == n]
        assert len(values) == 1, f"{name}: expected exactly one header, got {values}"
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)


def chat(model: str = "gpt-4o", *, stream: bool = False) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        obj["stream"] = True
    return json.dumps(obj).encode()


def request(
    sock: socket.socket, key: str, body: bytes, request_id: str = "", timeout: float = 10.0
) -> Resp:
    """POST /v1/chat/completions on `sock` and read the whole answer (h11-framed)."""
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", "fastgate.test"),
        ("Authorization", f"Bearer {key}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    if request_id:
        headers.append(("X-Request-Id", request_id))
    data = conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    sock.settimeout(timeout)
    sock.sendall(data)
    status, hdrs, out, info = 0, [], bytearray(), []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            try:
                conn.receive_data(sock.recv(65536))
            except TimeoutError:
                raise AssertionError(f"no complete response within {timeout} s") from None
            continue
        if isinstance(ev, h11.InformationalResponse):
            info.append(ev.status_code)
        elif isinstance(ev, h11.Response):
            status, hdrs = ev.status_code, list(ev.headers)
        elif isinstance(ev, h11.Data):
            out += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            return Resp(status, hdrs, bytes(out), info)
        else:
            raise AssertionError(f"unexpected {ev!r}")


def one_request(gw: Gateway, key: str, body: bytes, request_id: str = "") -> Resp:
    with socket.create_connection((gw.host, gw.port), timeout=10) as s:
        return request(s, key, body, request_id)


@pytest.fixture
def key() -> str:
    return make_key()


def make_gw(
    make_gateway: Callable[..., Gateway], key: str, channels: list[dict[str, Any]], **server: Any
) -> Gateway:
    srv = {
        "connect_timeout": 1.0,
        "first_byte_timeout": FIRST_BYTE_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
        **server,
    }
    return make_gateway(channels=channels, tokens=[token("t1", key)], server=srv)


def raw_then_fake(raw: RawUpstream, fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The raw upstream is tried first (higher priority); the fake is the fallback."""
    return [
        channel("raw", raw.url, ["gpt-4o"], priority=10),
        channel("fake", fake.url, ["gpt-4o"], priority=0),
    ]


# --------------------------------------------------------------------------- behaviours


def reset_on_accept(conn: RawConn) -> None:
    conn.reset()


def half_header_then_close(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Ty")
    conn.sock.close()


def garbage_reply(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http at all\r\n\r\n")
        conn.wait_peer_close()


def bad_content_length(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n{}")
        conn.wait_peer_close()


def bad_chunk_size(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n"
        )
        conn.wait_peer_close()


BROKEN = {
    "reset_on_accept": reset_on_accept,
    "half_header_then_close": half_header_then_close,
    "garbage": garbage_reply,
    "bad_content_length": bad_content_length,
    "bad_chunk_size": bad_chunk_size,
}


# --------------------------------------------------------------------------- resets and lies


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_upstream_fails_over_to_next_channel(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    fake_openai: FakeOpenAI,
    key: str,
    kind: str,
) -> None:
    raw = raw_upstream(BROKEN[kind])
    gw = make_gw(make_gateway, key, raw_then_fake(raw, fake_openai))
    t0 = time.monotonic()
    r = one_request(gw, key, chat(), request_id=f"fo-{kind}")
    assert time.monotonic() - t0 < FIRST_BYTE_TIMEOUT, "failover must not wait for a timeout"
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake"
    assert r.one("x-request-id") == f"fo-{kind}"
    assert raw.accepted >= 1 and fake_openai.request_count == 1
    rec = gw.record_for(f"fo-{kind}")
    assert rec["channel"] == "fake" and rec["attempts"] == 2 and rec["status"] == 200


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_only_upstream_gives_502(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    key: str,
    kind: str,
) -> None:
    raw = raw_upstream(BROKEN[kind])
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    t0 = time.monotonic()
    r = one_request(gw, key, chat(), request_id=f"only-{kind}")
    assert time.monotonic() - t0 < FIRST_BYTE_TIMEOUT, "a broken upstream must not look like a hang"
    assert r.status == 502, r.body
    assert r.json()["error"]["code"] == "upstream_error"
    assert r.json()["error"]["type"] == "server_error"
    assert r.one("x-request-id") == f"only-{kind}"
    assert raw.accepted >= 1
    assert gw.record_for(f"only-{kind}")["status"] == 502


# --------------------------------------------------------------------------- stalls


def headers_then_hang_json(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
        )
        conn.wait_peer_close()


def headers_then_hang_sse(conn: RawConn) -> None:
    if conn.read_request() is not None:
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        conn.wait_peer_close()


@pytest.mark.parametrize("stream", [False, True])
def test_headers_then_silence_fails_over_after_idle_timeout(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    fake_openai: FakeOpenAI,
    key: str,
    stream: bool,
) -> None:
    raw = raw_upstream(headers_then_hang_sse if stream else headers_then_hang_json)
    gw = make_gw(make_gateway, key, raw_then_fake(raw, fake_openai))
    t0 = time.monotonic()
    r = one_request(gw, key, chat(stream=stream))
    waited = time.monotonic() - t0
    assert r.status == 200
    if stream:
        assert b"Hello" in r.body and b"data: [DONE]" in r.body
    else:
        assert r.json()["choices"][0]["message"]["content"] == "Hello from fake"
    assert IDLE_TIMEOUT * 0.8 <= waited < IDLE_TIMEOUT + 1.5
    assert fake_openai.request_count == 1


@pytest.mark.parametrize("stream", [False, True])
def test_headers_then_silence_on_only_channel_gives_504(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    key: str,
    stream: bool,
) -> None:
    raw = raw_upstream(headers_then_hang_sse if stream else headers_then_hang_json)
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    t0 = time.monotonic()
    r = one_request(gw, key, chat(stream=stream), request_id="silent")
    waited = time.monotonic() - t0
    assert r.status == 504, r.body
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert r.one("x-request-id") == "silent"
    assert IDLE_TIMEOUT * 0.8 <= waited < IDLE_TIMEOUT + 1.5


def test_stream_stalling_midway_ends_with_error_event(
    make_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, key: str
) -> None:
    fake_openai.script(Hang(after_chunks=3))
    gw = make_gw(make_gateway, key, [channel("fake", fake_openai.url, ["gpt-4o"])])
    t0 = time.monotonic()
    r = one_request(gw, key, chat(stream=True), request_id="stall")
    waited = time.monotonic() - t0
    # h11 returned EndOfMessage: the chunked body was terminated properly.
    assert r.status == 200
    assert r.one("transfer-encoding").lower() == "chunked"
    assert IDLE_TIMEOUT * 0.8 <= waited < IDLE_TIMEOUT + 1.5
    datas = [e["data"] for e in parse_sse(r.body)]
    assert "[DONE]" not in datas
    objs = [json.loads(d) for d in datas]
    err = objs[-1].get("error")
    assert isinstance(err, dict) and err.get("message"), objs[-1]
    # Everything the upstream sent before it stalled reached the client, in order
    # (ignoring the `"usage": null` the provider adds once include_usage is on).
    sent = [json.loads(e["data"]) for e in parse_sse(fake_openai.last.response_body)]
    assert len(sent) == 3

    def strip(o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if not (k == "usage" and v is None)}

    assert [strip(o) for o in objs[:-1]] == [strip(o) for o in sent]
    rec = gw.record_for("stall")
    assert rec["stream"] is True


# --------------------------------------------------------------------------- odd but legal


def _eof_framed(stream: bool) -> tuple[Callable[[RawConn], None], bytes]:
    if stream:
        ctype = b"text/event-stream"
        body = sse_event("one") + sse_event(" two") + sse_event("", "stop") + b"data: [DONE]\n\n"
    else:
        ctype = b"application/json"
        body = completion_body("read until the upstream closes " * 20)
    pieces = [body[:50], body[50:51], body[51:400], body[400:]]

    def behaviour(conn: RawConn) -> None:
        if conn.read_request() is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nConnection: close\r\n\r\n")
        for p in pieces:
            time.sleep(0.03)
            conn.send(p)
        conn.sock.shutdown(socket.SHUT_WR)
        conn.wait_peer_close(5)

    return behaviour, body


@pytest.mark.parametrize("stream", [False, True])
def test_eof_framed_upstream_body_arrives_whole(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    key: str,
    stream: bool,
) -> None:
    behaviour, body = _eof_framed(stream)
    raw = raw_upstream(behaviour)
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    with socket.create_connection((gw.host, gw.port), timeout=10) as s:
        r = request(s, key, chat(stream=stream))
        assert r.status == 200
        if stream:
            assert parse_sse(r.body) == parse_sse(body)
        else:
            assert r.body == body
        # The client's framing was right: the same connection serves another request.
        r2 = request(s, key, chat(stream=stream))
        assert r2.status == 200
        assert (parse_sse(r2.body) == parse_sse(body)) if stream else (r2.body == body)
    assert raw.accepted == 2, "an EOF-framed connection cannot be reused"


def keepalive_then_idle_close(conn: RawConn) -> None:
    """Answer with keep-alive, then close the connection after 0.2 s of idleness."""
    while (req := conn.read_request(timeout=0.2)) is not None:
        conn.send(json_response(completion_body(f"conn answer {conn.served}")))
        del req


def stale_on_second_request(how: str) -> Callable[[RawConn], None]:
    """Answer the first request of a connection; on the second, drop it unanswered,
    as a server does whose keep-alive timer fired while the request was in flight."""

    def behaviour(conn: RawConn) -> None:
        while conn.read_request() is not None:
            if conn.served >= 2:
                if how == "reset":
                    conn.reset()
                return
            conn.send(json_response(completion_body("fresh connection answer")))

    return behaviour


def test_pooled_connection_closed_while_idle_is_not_an_error(
    make_gateway: Callable[..., Gateway], raw_upstream: Callable[..., RawUpstream], key: str
) -> None:
    raw = raw_upstream(keepalive_then_idle_close)
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    for i in range(3):
        r = one_request(gw, key, chat(), request_id=f"idle-{i}")
        assert r.status == 200, (i, r.body)
        assert r.json()["choices"][0]["message"]["content"] == "conn answer 1"
        time.sleep(0.5)  # the upstream closes its side meanwhile
    assert raw.accepted == 3


@pytest.mark.parametrize("how", ["close", "reset"])
def test_stale_pooled_connection_is_retried_transparently(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    key: str,
    how: str,
) -> None:
    raw = raw_upstream(stale_on_second_request(how))
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    with socket.create_connection((gw.host, gw.port), timeout=10) as s:
        for i in range(3):
            r = request(s, key, chat(), request_id=f"stale-{how}-{i}")
            assert r.status == 200, (i, r.body)
            assert r.json()["choices"][0]["message"]["content"] == "fresh connection answer"
    # Requests 2 and 3 each found a pooled connection that died under them.
    assert raw.accepted == 3
    assert len(raw.requests) == 5
    for i in range(3):
        assert gw.record_for(f"stale-{how}-{i}")["status"] == 200


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("interim", [[100], [100, 103]])
def test_upstream_interim_1xx_responses_are_skipped(
    make_gateway: Callable[..., Gateway],
    raw_upstream: Callable[..., RawUpstream],
    key: str,
    interim: list[int],
    split: bool,
) -> None:
    body = completion_body("after the interim responses")
    lines = {
        100: b"HTTP/1.1 100 Continue\r\n\r\n",
        103: b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    }

    def reply(conn: RawConn, head: bytes, req_body: bytes) -> None:
        parts = [lines[c] for c in interim] + [json_response(body)]
        if split:
            for p in parts:
                conn.send(p)
                time.sleep(0.02)
        else:
            conn.send(b"".join(parts))

    raw = raw_upstream(serve_forever(reply))
    gw = make_gw(make_gateway, key, [channel("raw", raw.url, ["gpt-4o"])])
    for _ in range(2):
        r = one_request(gw, key, chat())
        assert r.status == 200
        assert r.informational == [], "the client did not ask for 100-continue"
        assert r.body == body
    assert raw.accepted == 1, "the connection stays reusable after interim responses"
