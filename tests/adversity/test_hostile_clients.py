"""Clients that lie, trickle, hoard connections or half-close, against a real fastgate.

`test_clients.py` has slow readers, vanishing clients, crowds and SIGTERM;
`tests/functional/test_http_protocol.py` the single-connection edges (a 431 on
a big header, a head trickled past header_timeout, five kinds of garbage, a
stalled body). Here: a lying Content-Length (shorter and longer than the
body), bad chunk sizes, framing headers that contradict each other, bytes
after a good request, a request line over max_header_bytes, JSON nested 100k
deep, a half-close after the request, a crowd trickling heads while others are
served, and 5,000 idle connections that must not keep a new request waiting.

Every case ends with the same two checks: the client got a well-formed HTTP
response (h11 parses it) or a clean close, never a hang; and the gateway still
serves a good request afterwards. One gateway serves the whole module.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

from tests.fakes.openai_fake import FakeOpenAI, Hang, Ok
from tests.harness import Gateway, channel, gateway_config, make_key, token

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_CONNECTIONS = 5000
# Each idle connection costs an fd here and one in the gateway; the test needs
# about twice as many, plus the rest of the process.
FDS_NEEDED = 2 * IDLE_CONNECTIONS + 1000


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (the gateway,
    a child, inherits it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FDS_NEEDED + 2000 if hard == resource.RLIM_INFINITY else min(hard, FDS_NEEDED + 2000)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Rig:
    gw: Gateway
    fake: FakeOpenAI
    key: str
    fd_limit: int


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fd_limit = raise_fd_limit()  # before the gateway starts: it inherits the limit
    fake = FakeOpenAI("fake")
    fake.start()
    key = make_key()
    text = gateway_config(
        channels=[
            channel("fake", fake.url, ["gpt-4o"]),
            {"name": "mock", "type": "mock", "models": ["mock-1"]},
        ],
        tokens=[token("t1", key)],
        server={
            "header_timeout": HEADER_TIMEOUT,
            "body_timeout": BODY_TIMEOUT,
            "keepalive_timeout": 30.0,
            "first_byte_timeout": 10.0,
            "idle_timeout": 10.0,
        },
    )
    gw = Gateway(tmp_path_factory.mktemp("hostile"), text).start()
    try:
        yield Rig(gw, fake, key, fd_limit)
    finally:
        gw.close()
        fake.stop()


@pytest.fixture
def gw(rig: Rig) -> Iterator[Gateway]:
    rig.fake.set_behaviour(Ok())
    yield rig.gw
    assert rig.gw.alive(), "the gateway died"
    assert_serves(rig)  # whatever the test did, a good request is still served


# --------------------------------------------------------------------------- client side


@dataclass
class Answer:
    """Responses h11 parsed off one connection, and how the connection ended."""

    responses: list[tuple[int, dict[bytes, bytes], bytes]] = field(default_factory=list)
    closed: bool = False  # the gateway closed (FIN or RST) after them
    seconds: float = 0.0

    @property
    def statuses(self) -> list[int]:
        return [r[0] for r in self.responses]

    def error_code(self, i: int = -1) -> str:
        return json.loads(self.responses[i][2])["error"]["code"]


def converse(
    gw: Gateway,
    chunks: list[bytes],
    *,
    pause: float = 0.0,
    shut_wr: bool = False,
    until: int = 0,
    timeout: float = 5.0,
) -> Answer:
    """Send raw chunks (with a pause between them), then read responses with h11
    until the gateway closes the connection (or `until` responses came); a hang
    past `timeout` fails. Every byte the gateway sends must parse as HTTP/1.1."""
    ans = Answer()
    t0 = time.monotonic()
    with socket.create_connection((gw.host, gw.port), timeout=timeout) as s:
        for i, c in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break  # the gateway answered and closed before the rest
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        read_responses(s, ans, until, timeout)
    ans.seconds = time.monotonic() - t0
    return ans


def read_responses(s: socket.socket, ans: Answer, until: int, timeout: float) -> None:
    conn = h11.Connection(h11.CLIENT)
    status, headers, body = 0, {}, bytearray()
    s.settimeout(timeout)
    while not ans.closed and not (until and len(ans.responses) >= until):
        if conn.our_state is h11.IDLE:  # h11 reads a response only after a request
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            try:
                data = s.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"neither an answer nor a close in {timeout} s: {ans}"
                ) from None
            except ConnectionResetError:
                data = b""
            if not data and conn.their_state is not h11.SEND_BODY:
                ans.closed = True
            conn.receive_data(data)  # a close inside a body makes h11 raise: not well-formed
        elif isinstance(ev, h11.ConnectionClosed):
            ans.closed = True
        elif isinstance(ev, h11.Response):
            status, headers, body = ev.status_code, dict(ev.headers), bytearray()
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            ans.responses.append((status, headers, bytes(body)))
            if conn.their_state is h11.MUST_CLOSE:
                # connection: close: only a close may follow
                rest = s.recv(65536)
                assert rest == b"", f"bytes after a closing response: {rest!r}"
                ans.closed = True
            else:
                conn.start_next_cycle()


def head(key: str, length: int | str | None = None, *extra: str, path: str = "") -> bytes:
    lines = [
        f"POST {path or '/v1/chat/completions'} HTTP/1.1",
        "Host: fastgate.test",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chat(model: str = "gpt-4o", content: str = "hi") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


def good_request(key: str, rid: str = "", model: str = "mock-1") -> bytes:
    body = chat(model)
    extra = [f"X-Request-Id: {rid}"] if rid else []
    return head(key, len(body), *extra) + body


def assert_serves(rig: Rig, model: str = "mock-1") -> float:
    """A good request on a new connection is answered 200; returns the seconds it took."""
    t0 = time.monotonic()
    ans = converse(rig.gw, [good_request(rig.key, model=model)], until=1)
    assert ans.statuses == [200], ans
    return time.monotonic() - t0


def records_for(gw: Gateway, rid: str) -> list[dict[str, Any]]:
    gw.record_for(rid)
    return [r for r in gw.access_log_records() if r["request_id"] == rid]


# --------------------------------------------------------------------------- lying framing


def test_content_length_shorter_than_the_body(gw: Gateway, rig: Rig) -> None:
    """The body is read as the length says; what follows is the next request,
    which is garbage: 400 for the short body, then 400 and a close."""
    body = chat("mock-1")
    ans = converse(gw, [head(rig.key, 10, "X-Request-Id: short-cl") + body])
    assert ans.statuses == [400, 400] and ans.closed, ans
    assert ans.error_code(0) == ans.error_code(1) == "invalid_request"
    (rec,) = records_for(gw, "short-cl")
    assert (rec["status"], rec["error_code"]) == (400, "invalid_request")


@pytest.mark.parametrize("then", ["stall", "half-close"])
def test_content_length_longer_than_the_body(gw: Gateway, rig: Rig, then: str) -> None:
    """The rest of the body never comes: 408 after body_timeout, or (the client
    half-closed, so it never will) a clean close at once; no upstream request."""
    before = rig.fake.request_count
    body = chat("gpt-4o")
    ans = converse(
        gw, [head(rig.key, len(body) + 100) + body], shut_wr=then == "half-close", timeout=4.0
    )
    assert ans.closed
    if then == "stall":
        assert ans.statuses == [408] and ans.error_code() == "request_timeout", ans
        assert BODY_TIMEOUT * 0.8 <= ans.seconds < BODY_TIMEOUT + 1.0
    else:
        assert ans.statuses == [] and ans.seconds < 1.0, ans
    assert rig.fake.request_count == before


CONTRADICTIONS = {
    # request smuggling shapes: two framings, or one framing twice with two values
    "content-length-and-chunked": ("Content-Length: 5", "Transfer-Encoding: chunked"),
    "two-content-lengths": ("Content-Length: 5", "Content-Length: 50"),
    "negative-content-length": ("Content-Length: -5",),
    "content-length-overflow": ("Content-Length: 99999999999999999999999",),
    "chunked-not-last": ("Transfer-Encoding: chunked, identity",),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_contradictory_framing_is_refused(gw: Gateway, rig: Rig, case: str) -> None:
    before = rig.fake.request_count
    body = b"0\r\n\r\n" + chat("gpt-4o")
    ans = converse(gw, [head(rig.key, None, *CONTRADICTIONS[case]) + body])
    assert ans.closed and len(ans.statuses) == 1 and ans.statuses[0] in (400, 413), ans
    assert rig.fake.request_count == before


BAD_CHUNKS = {
    "non-hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "negative": b"-5\r\n{}\r\n0\r\n\r\n",
    "overflow": b"1" + b"0" * 30 + b"\r\n{}\r\n0\r\n\r\n",
    "size-with-garbage": b"2 x\r\n{}\r\n0\r\n\r\n",
    "missing-crlf-after-data": b"2\r\n{}XX0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_CHUNKS))
def test_bad_chunk_sizes_get_400_and_close(gw: Gateway, rig: Rig, case: str) -> None:
    before = rig.fake.request_count
    ans = converse(gw, [head(rig.key, None, "Transfer-Encoding: chunked"), BAD_CHUNKS[case]])
    assert ans.closed and ans.statuses == [400], ans
    assert ans.error_code() == "invalid_request"
    assert rig.fake.request_count == before


def test_chunk_larger_than_what_follows_times_out(gw: Gateway, rig: Rig) -> None:
    """A chunk announced at 1 GB (over max_body_bytes, but unknown until its bytes
    arrive) of which 20 bytes come: body_timeout, 408, close."""
    ans = converse(
        gw, [head(rig.key, None, "Transfer-Encoding: chunked"), b"40000000\r\n" + b"x" * 20]
    )
    assert ans.closed and ans.statuses == [408], ans


def test_bytes_after_a_good_request_do_not_poison_it(gw: Gateway, rig: Rig) -> None:
    """A good request, then binary garbage on the same connection: the request is
    answered, then the garbage gets 400 and the close."""
    ans = converse(gw, [good_request(rig.key, "then-garbage") + bytes(range(256)) * 4])
    assert ans.statuses == [200, 400] and ans.closed, ans
    (rec,) = records_for(gw, "then-garbage")
    assert rec["status"] == 200


def test_request_line_over_max_header_bytes_gets_431(gw: Gateway, rig: Rig) -> None:
    """A 100 KB URL (max_header_bytes is 64 KiB): 431 as soon as the limit is
    passed, before the line even ends."""
    line = b"GET /v1/models?" + b"q" * 100_000
    ans = converse(gw, [line[:70_000], line[70_000:]], pause=0.1)
    assert ans.closed and ans.statuses == [431], ans
    assert ans.error_code() == "headers_too_large"


# --------------------------------------------------------------------------- deep JSON


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (path, body, the status it must get): past orjson's depth limit (1024) the
# body is not JSON to the gateway (400); under it the body is served, by the
# upstream (passthrough, byte for byte) or by the mock, which refuses a body it
# cannot walk (past Python's recursion limit) with a 400 in the channel's own
# error format, as a real upstream refuses what it cannot read; a local token
# count walks the whole body.
CHAT = '{"model":"%s","messages":[{"role":"user","content":"x"}],"x":'
DEEP = {
    "bare-100k": ("/v1/chat/completions", "[" * 100_000, 400),
    "content-100k": (
        "/v1/chat/completions",
        '{"model":"gpt-4o","messages":[{"role":"user","content":' + nested(100_000) + "}]}",
        400,
    ),
    "upstream-500": ("/v1/chat/completions", CHAT.replace("%s", "gpt-4o") + nested(500) + "}", 200),
    "mock-200": ("/v1/chat/completions", CHAT.replace("%s", "mock-1") + nested(200) + "}", 200),
    "mock-1000": ("/v1/chat/completions", CHAT.replace("%s", "mock-1") + nested(1000) + "}", 400),
    "anthropic-to-mock-1000": (
        "/v1/messages",
        '{"model":"mock-1","max_tokens":5,"messages":[{"role":"user","content":"x"}],'
        '"metadata":{"x":' + nested(1000) + "}}",
        200,
    ),
    "count-tokens-1000": (
        "/v1/messages/count_tokens",
        '{"model":"mock-1","messages":[{"role":"user","content":' + nested(1000) + "}]}",
        200,
    ),
}


@pytest.mark.parametrize("case", list(DEEP))
def test_deeply_nested_json(gw: Gateway, rig: Rig, case: str) -> None:
    """JSON nested 100k deep is a clear 400; nesting a parser accepts is served
    as any other body. Never a RecursionError (a 500), a hang or a dead worker;
    always one record."""
    path, text, expected = DEEP[case]
    body = text.encode()
    rid = f"deep-{case}"
    before = rig.fake.request_count
    ans = converse(
        gw, [head(rig.key, len(body), f"X-Request-Id: {rid}", path=path) + body], until=1
    )
    (status, _, raw) = ans.responses[0]
    assert status == expected, (case, status, raw[:300])
    if status == 400 and case.startswith("mock"):  # the mock's refusal, OpenAI's shape
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    elif status == 400:  # the gateway's own
        assert json.loads(raw)["error"]["code"] == "invalid_request"
    if case.startswith("upstream"):
        assert rig.fake.last.body == body  # passed through untouched
    else:
        assert rig.fake.request_count == before
    if path.endswith("/count_tokens"):
        assert json.loads(raw)["input_tokens"] > 0
        return  # answered locally (no channel counts tokens here): no usage record
    (rec,) = records_for(gw, rid)
    assert rec["status"] == status


# --------------------------------------------------------------------------- half-close


def test_half_close_after_the_request(gw: Gateway, rig: Rig) -> None:
    """shutdown(SHUT_WR) right after the request. A FIN is all the gateway sees,
    the same FIN as a client that closed its socket, and docs/contract.md section 3 says a
    client that leaves has its upstream request cancelled: so answers already
    written (a local answer is written as the request is read) reach the client
    before the close, while a request waiting on its upstream is cancelled (499,
    the upstream connection closed), never left running for nobody."""
    ops = [
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n\r\n"
        % rig.key.encode(),
    ]
    ans = converse(gw, [b"".join(ops)], shut_wr=True)
    assert ans.statuses == [200, 200] and ans.closed, ans

    rig.fake.set_behaviour(Hang())
    closed = rig.fake.connections_closed
    ans = converse(gw, [good_request(rig.key, "half-closed", model="gpt-4o")], shut_wr=True)
    assert ans.statuses == [] and ans.closed and ans.seconds < 1.0, ans
    assert rig.fake.wait_connections_closed(closed + 1, timeout=1.0) > closed
    (rec,) = records_for(gw, "half-closed")
    assert (rec["status"], rec["error_code"]) == (499, "client_closed")


# --------------------------------------------------------------------------- crowds


def test_slowloris_crowd_does_not_delay_others(gw: Gateway, rig: Rig) -> None:
    """200 connections trickle a head, one header line every 0.1 s: each is cut at
    header_timeout (408 and close, counted from the head's first byte), and a good
    request meanwhile is answered at once."""
    n = 200
    socks = [socket.create_connection((gw.host, gw.port), timeout=5) for _ in range(n)]
    try:
        for s in socks:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        served: list[float] = []
        cut: set[int] = set()
        while time.monotonic() - t0 < HEADER_TIMEOUT + 0.6:
            for i, s in enumerate(socks):
                if i not in cut:
                    try:
                        s.sendall(b"X-Trickle: %d\r\n" % i)
                    except OSError:
                        cut.add(i)
            served.append(assert_serves(rig))
            time.sleep(0.1)
        assert max(served) < HEADER_TIMEOUT, served  # never behind the trickling crowd
        for s in socks:
            s.settimeout(2.0)
            got = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(65536):
                    got += chunk
            assert got.startswith(b"HTTP/1.1 408 "), got[:100]
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 2.0
    finally:
        for s in socks:
            s.close()


def gateway_fd_limit(gw: Gateway) -> int:
    with open(f"/proc/{gw.pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 0


def test_5000_idle_connections_do_not_stop_a_new_request(gw: Gateway, rig: Rig) -> None:
    """5,000 connections that say nothing: the gateway holds them all (one fd each)
    and a new request is still answered at once, on a new connection and on one of
    the idle ones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(rig.fd_limit, gateway_fd_limit(gw)) < FDS_NEEDED:
        pytest.skip(
            f"RLIMIT_NOFILE too low for {IDLE_CONNECTIONS} idle connections: soft {soft}, "
            f"hard {hard} (need {FDS_NEEDED}; raise the hard limit, e.g. ulimit -Hn 65536)"
        )
    socks: list[socket.socket] = []
    try:
        fds0 = gw.open_fds()
        for _ in range(IDLE_CONNECTIONS):
            socks.append(socket.create_connection((gw.host, gw.port), timeout=5))
        # (give or take a few: pooled upstream connections come and go meanwhile)
        want = fds0 + IDLE_CONNECTIONS - 10
        deadline = time.monotonic() + 10
        while gw.open_fds() < want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.open_fds() >= want, "the gateway did not accept them all"
        assert assert_serves(rig) < 1.0
        assert assert_serves(rig, model="gpt-4o") < 1.0
        s = socks[0]
        s.sendall(good_request(rig.key))
        ans = Answer()
        read_responses(s, ans, until=1, timeout=5.0)
        assert ans.statuses == [200]
    finally:
        for s in socks:
            s.close()
