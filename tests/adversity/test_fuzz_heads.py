"""Fuzzing the request-head path: every input gets well-formed responses or a
clean close, never a hang, an exception or a dead worker.

In-process (hypothesis, a few hundred examples): a real `App` and
`ClientProtocol` on the fake transports of `tests/protocol/kit.py`, fed
generated heads (request lines, header names and values with CR, LF, NUL and
colons, contradicting framing headers, bodies, pipelined requests, raw bytes)
split at random points. Then the fake clock runs past every timeout, and the
bytes written to the client must parse as a sequence of complete HTTP/1.1
responses (each with exactly one x-request-id) and the connection must be
closed: an answer or a close for every input, whatever it was. An exception
out of a callback fails the example, as it would have reached the event loop.

Over a real socket (a couple of dozen examples, timeouts shortened): the same
kind of inputs against a real fastgate process, read with a deadline; after
them the gateway is alive and serves a good request.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, channel, gateway_config, make_key, token
from tests.protocol.cases import CONFIG, KEY
from tests.protocol.kit import Rig, connect_client, make_app, split_responses

# --------------------------------------------------------------------------- inputs

KEYB = KEY.encode()


def mostly(
    common: st.SearchStrategy[bytes], rare: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """`common` 15 times in 16, else `rare`: most requests get far into the
    gateway, some break at each step."""
    return st.integers(0, 15).flatmap(lambda i: rare if i == 0 else common)


EOL = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\r\n", b" \r\n", b""]))
METHOD = mostly(
    st.sampled_from([b"GET", b"POST", b"POST", b"HEAD"]),
    st.sampled_from([b"PUT", b"OPTIONS", b"CONNECT", b"PRI", b"get", b""]) | st.binary(max_size=8),
)
TARGET = mostly(
    st.sampled_from(
        [
            b"/v1/chat/completions",
            b"/v1/chat/completions",
            b"/v1/completions",
            b"/v1/messages",
            b"/v1/messages/count_tokens",
            b"/v1/models",
            b"/health",
            b"/ready",
            b"/v1beta/models/gpt-4o-mini:generateContent?key=" + KEYB,
            b"/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse",
        ]
    ),
    st.sampled_from([b"*", b"http://x/v1/chat/completions", b"/%00/../..", b"/" + b"a" * 5000])
    | st.binary(max_size=40),
)
VERSION = mostly(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10", b"http/1.1", b"HTTP/1.1 x", b""]),
)
NAME = mostly(
    st.sampled_from(
        [
            b"Authorization",
            b"X-Request-Id",
            b"Content-Type",
            b"Connection",
            b"x-fastgate-cache",
            b"x-fastgate-tag",
            b"x-api-key",
            b"X-Custom",
        ]
    ),
    st.sampled_from(
        [b"Content-Length", b"Transfer-Encoding", b"Expect", b"Upgrade", b"Host", b"Host "]
    )
    | st.sampled_from([b" Host", b"", b"X\x00Y"])
    | st.binary(max_size=12),
)
VALUE = mostly(
    st.sampled_from(
        [
            b"0",
            b"7",
            b"close",
            b"keep-alive",
            b"chunked",
            b"100-continue",
            b"on",
            b"refresh",
            b"application/json",
            b"Bearer " + KEYB,
            KEYB,
            b"req-1",
        ]
    ),
    st.sampled_from(
        [
            b"-1",
            b"1e3",
            b"99999999999999999999",
            b"gzip, chunked",
            b"chunked, gzip",
            b"Upgrade",
            b"websocket",
            b"Bearer ",
            b"\x00",
            b"a\rb",
            b"a\nb",
            b" \t ",
        ]
    )
    | st.binary(max_size=24),
)
SEP = mostly(st.just(b": "), st.sampled_from([b":", b" : ", b"", b":\t"]))
BODY = mostly(
    st.sampled_from(
        [
            b"",
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
            b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}',
            b'{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
            b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}',
            b'{"model":"nope","messages":[]}',
        ]
    ),
    st.sampled_from([b"[" * 2000, b"{", b"\xff\xfe", b"null"]) | st.binary(max_size=64),
)
FRAMING = mostly(
    st.sampled_from(["length", "length", "length", "chunked", "none"]),
    st.sampled_from(["wrong-length", "both"]),
)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    eol = draw(EOL)
    line = draw(METHOD) + b" " + draw(TARGET) + b" " + draw(VERSION)
    headers = [(b"Host", b": ", b"fastgate.test")]
    if draw(st.booleans()):
        headers.append((b"Authorization", b": ", b"Bearer " + KEYB))
    headers += draw(st.lists(st.tuples(NAME, SEP, VALUE), max_size=4))
    headers = draw(st.permutations(headers))
    body = draw(BODY)
    framing = draw(FRAMING)
    if framing in ("length", "both"):
        headers.append((b"Content-Length", b": ", b"%d" % len(body)))
    if framing == "wrong-length":
        headers.append((b"Content-Length", b": ", b"%d" % draw(st.integers(0, 2 * len(body) + 2))))
    if framing in ("chunked", "both"):
        headers.append((b"Transfer-Encoding", b": ", b"chunked"))
        cut = draw(st.integers(0, len(body)))
        body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in (body[:cut], body[cut:]) if c)
        body += b"0\r\n\r\n"
    head = eol.join([line, *(n + sep + v for n, sep, v in headers)]) + eol + eol
    return head + body


INPUT = st.one_of(
    request(),
    request(),
    st.lists(request(), min_size=2, max_size=3).map(b"".join),  # pipelined
    st.binary(min_size=1, max_size=200),
)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """`data` split at `points` (each taken modulo its length)."""
    at = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(at) if b > a]


class _Methods:
    """The methods of the requests httptools completes in a byte stream, as the
    gateway's parser sees them (an answer to HEAD has no body)."""

    def __init__(self) -> None:
        self.methods: list[bytes] = []
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

    def on_message_complete(self) -> None:
        self.methods.append(self.parser.get_method())


def methods_of(data: bytes) -> list[bytes]:
    m = _Methods()
    try:
        m.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        m.methods.pop()  # refused: its answer is the 400
    except httptools.HttpParserError:
        pass
    return m.methods


def assert_well_formed(raw: bytes, methods: list[bytes]) -> int:
    """`raw` is zero or more complete HTTP/1.1 responses, the n-th final one
    answering the n-th request of `methods`; returns how many."""
    pos, n, final = 0, 0, 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        assert end >= 0, f"incomplete response head: {raw[pos : pos + 300]!r}"
        head = raw[pos : end + 4]
        pos = end + 4
        lines = head.split(b"\r\n")
        assert lines[0][:9] == b"HTTP/1.1 " and lines[0][9:12].isdigit(), head
        status = int(lines[0][9:12])
        fields = {}
        for ln in lines[1:]:
            if ln:
                name, sep, value = ln.partition(b":")
                assert sep and name == name.strip(), f"bad header line {ln!r}"
                fields.setdefault(name.lower(), []).append(value.strip())
        assert len(fields.get(b"x-request-id", [])) == 1, head
        n += 1
        if status < 200:
            continue
        head_req = final < len(methods) and methods[final] == b"HEAD"
        final += 1
        framing = fields.get(b"content-length", []) + fields.get(b"transfer-encoding", [])
        assert len(framing) <= 1, head
        length = int(fields.get(b"content-length", [b"0"])[0])
        if head_req and fields.get(b"connection") == [b"close"] and len(raw) - pos == length:
            pos += length  # an error that closes (431, 413...) may still carry its body
            continue
        if head_req or status in (204, 304):
            continue
        if b"content-length" in fields:
            assert pos + length <= len(raw), f"body shorter than content-length: {head!r}"
            pos += length
        elif fields.get(b"transfer-encoding") == [b"chunked"]:
            while True:
                eol = raw.find(b"\r\n", pos)
                assert eol >= 0, "incomplete chunk size line"
                size = int(raw[pos:eol], 16)
                pos = eol + 2
                if size == 0:
                    assert raw[pos : pos + 2] == b"\r\n", "no CRLF after the last chunk"
                    pos += 2
                    break
                assert raw[pos + size : pos + size + 2] == b"\r\n", "chunk not ended by CRLF"
                pos += size + 2
        else:
            pos = len(raw)  # close-delimited
    return n


# --------------------------------------------------------------------------- in-process

SHORT = CONFIG.replace(
    "[routing]",
    "[server]\nheader_timeout = 2.0\nbody_timeout = 2.0\nkeepalive_timeout = 5.0\n"
    "first_byte_timeout = 1.0\nidle_timeout = 1.0\n\n[routing]\nbreaker_failures = 1000000",
    1,
)
assert SHORT != CONFIG


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    rig = make_app(SHORT, tmp_path_factory.mktemp("fuzz"))
    rig.app.start_sweeper()
    return rig


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=INPUT, points=st.lists(st.integers(min_value=0), max_size=6), eof=st.booleans())
def test_fuzzed_heads_in_process(inproc: Rig, data: bytes, points: list[int], eof: bool) -> None:
    rig = inproc
    client = connect_client(rig)
    for piece in cuts(data, points):
        if not client.feed(piece):  # we closed: the peer's writes go nowhere
            break
    if eof:
        client.peer_close()
    # Upstream requests the input produced are never answered; run the clock past
    # every attempt's first_byte_timeout, then past keepalive_timeout: every
    # connection ends.
    for _ in range(40):
        rig.loop.advance(0.5)
    assert client.closing, f"the connection is still open: {client.data[:300]!r}"
    assert_well_formed(client.data, methods_of(data))
    rig.loop.requests.clear()


def test_in_process_rig_still_serves(inproc: Rig) -> None:
    """After the fuzzing (module order), the same App serves a good request."""
    rig = inproc
    client = connect_client(rig)
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    client.feed(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (KEYB, len(body), body)
    )
    up, _ = rig.loop.next_request()
    reply = b'{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1}}'
    up.feed(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(reply), reply))
    ((head, got),) = split_responses(client.data, eof=False)
    assert head.startswith(b"HTTP/1.1 200 ") and got == reply


# --------------------------------------------------------------------------- over a real socket


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    fake = FakeOpenAI("fake")
    fake.start()
    key = make_key()
    text = gateway_config(
        channels=[
            channel("fake", fake.url, ["gpt-4o-mini"]),
            {"name": "mock", "type": "mock", "models": ["mock-1"]},
        ],
        tokens=[token("t1", key)],
        server={"header_timeout": 0.3, "body_timeout": 0.3, "keepalive_timeout": 0.3},
    )
    gw = Gateway(tmp_path_factory.mktemp("fuzz-real"), text).start()
    try:
        yield gw, key
    finally:
        gw.close()
        fake.stop()


def exchange(gw: Gateway, data: bytes, shut_wr: bool) -> bytes:
    """Send `data`, read until the gateway closes; a hang fails."""
    got = b""
    with socket.create_connection((gw.host, gw.port), timeout=3.0) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 3.0
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"no close within 3 s after {data[:200]!r}") from None
            if not chunk:
                break
            got += chunk
            assert time.monotonic() < deadline, f"no close within 3 s after {data[:200]!r}"
    return got


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=INPUT, shut_wr=st.booleans())
def test_fuzzed_heads_over_a_socket(real: tuple[Gateway, str], data: bytes, shut_wr: bool) -> None:
    gw, key = real
    data = data.replace(KEYB, key.encode())
    assert_well_formed(exchange(gw, data, shut_wr), methods_of(data))
    assert gw.alive()


def test_gateway_serves_after_the_socket_fuzzing(real: tuple[Gateway, str]) -> None:
    gw, key = real
    conn = h11.Connection(h11.CLIENT)
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    data = conn.send(
        h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[
                ("Host", "x"),
                ("Authorization", f"Bearer {key}"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
    )
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    conn.receive_data(exchange(gw, data, shut_wr=False))
    conn.receive_data(b"")
    ev = conn.next_event()
    assert isinstance(ev, h11.Response) and ev.status_code == 200
    assert "Traceback" not in gw.stderr_text(), gw.stderr_text()[-3000:]


def test_head_request_answer_has_no_body(tmp_path: Path) -> None:
    """RFC 9110 section 9.3.2: the answer to HEAD has no content (its length is
    announced, not sent). A body there desynchronises a keep-alive client: the
    next answer would be read from the middle of this one."""
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(client.data)
    answers = []
    for method in (b"HEAD", b"GET"):
        conn.send(h11.Request(method=method, target="/health", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, body = 0, b""
        while not isinstance(ev := conn.next_event(), h11.EndOfMessage):
            assert ev is not h11.NEED_DATA, f"an incomplete answer to {method!r}"
            if isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                body += ev.data
        answers.append((status, body))
        conn.start_next_cycle()
    assert answers[0][1] == b""
    assert answers[1][0] == 200 and json.loads(answers[1][1])
