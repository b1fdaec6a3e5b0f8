"""Every timeout and failure path of an upstream, through a fault-injecting proxy.

fastgate -> `FaultProxy` -> FakeOpenAI. The proxy scripts one fault per
upstream connection (delays, a stall, a RST or a FIN at a byte offset, a
corrupted byte); the fake speaks correct HTTP. For each fault the test asserts
what the client got (read with h11, so a cut or a malformed framing shows) and
the usage record: exactly one per request, with the status and error code the
gateway's contract gives.

Two models: "gpt-4o" is served by the proxied channel only (a failure reaches
the client: 502/504, or an error event / a cut once bytes went out);
"gpt-4o-mini" by the proxied channel first and the fake directly second (a
failure before the first byte fails over).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from tests.adversity.faultproxy import BODY, At, Blackhole, Fault, FaultProxy
from tests.adversity.test_upstreams import (
    RawConn,
    RawUpstream,
    completion_body,
    sse_event,
)
from tests.fakes.openai_fake import FakeOpenAI, Ok
from tests.harness import Gateway, channel, gateway_config, make_key, parse_sse, token

CONNECT_TIMEOUT = 0.5
FIRST_BYTE_TIMEOUT = 1.0
IDLE_TIMEOUT = 0.5
ONLY = "gpt-4o"  # the proxied channel only
FO = "gpt-4o-mini"  # the proxied channel, then the fake directly

EVENT = b"data: "  # the start of every SSE event the fake writes (one per chunk)


# --------------------------------------------------------------------------- the rig


class Rig:
    """One gateway for the module, in front of: the proxy (-> the fake), the fake
    directly, a blackhole, the same proxy spoken to over https, and a second proxy
    in front of a raw upstream whose behaviour a test sets. Tests script faults
    per connection; `reset()` (run before each test) closes every connection the
    gateway may have pooled, so a test's first upstream connection is a new one."""

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeOpenAI("fake")
        self.fake.start()
        self.proxy = FaultProxy(self.fake.port)
        self.hole = Blackhole()
        self.behaviour: Callable[[RawConn], None] = lambda conn: None
        self.raw = RawUpstream(lambda conn: self.behaviour(conn))
        self.raw_proxy = FaultProxy(self.raw.port)
        self.key = make_key()
        tls = f"https://127.0.0.1:{self.proxy.port}"
        text = gateway_config(
            channels=[
                channel("px", self.proxy.url, [ONLY, FO], priority=10),
                channel("direct", self.fake.url, [FO], priority=0),
                channel("bh", self.hole.url, ["bh-only", "bh-fo"], priority=10),
                channel("bh-next", self.fake.url, ["bh-fo"], priority=0),
                channel("tls", tls, ["tls-only"]),
                channel("raw", self.raw_proxy.url, ["raw-only"]),
            ],
            tokens=[token("t1", self.key)],
            server={
                "connect_timeout": CONNECT_TIMEOUT,
                "first_byte_timeout": FIRST_BYTE_TIMEOUT,
                "idle_timeout": IDLE_TIMEOUT,
            },
            routing={"breaker_failures": 1000},  # every failure here is scripted
        )
        self.gw = Gateway(tmp, text).start()

    def reset(self) -> None:
        self.proxy.drop_all()
        self.raw_proxy.drop_all()
        time.sleep(0.05)  # the gateway sees its pooled connections close
        self.fake.set_behaviour(Ok())
        self.fake.clear()

    def close(self) -> None:
        self.gw.close()
        for stop in (self.proxy.stop, self.raw_proxy.stop, self.raw.stop, self.hole.close):
            stop()
        self.fake.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("faults"))
    yield r
    r.close()


@pytest.fixture
def gw(rig: Rig) -> Gateway:
    rig.reset()
    return rig.gw


@pytest.fixture
def key(rig: Rig) -> str:
    return rig.key


@pytest.fixture
def fake(rig: Rig) -> FakeOpenAI:
    return rig.fake


@pytest.fixture
def proxy(rig: Rig) -> FaultProxy:
    return rig.proxy


# --------------------------------------------------------------------------- the client


@dataclass
class Answer:
    """What a client read: `complete` is h11's EndOfMessage, `cut` a close before it."""

    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    cut: bool = False
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        return [e["data"] for e in parse_sse(self.body) if "data" in e]


def chat(model: str, *, stream: bool = False) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi there"}]}
    if stream:
        obj["stream"] = True
    return json.dumps(obj).encode()


def ask(gw: Gateway, key: str, body: bytes, rid: str, timeout: float = 8.0) -> Answer:
    """One request on a fresh connection; read until the response ends or the
    connection closes (a hang fails the test)."""
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", "fastgate.test"),
        ("Authorization", f"Bearer {key}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Request-Id", rid),
    ]
    data = conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    ans = Answer()
    t0 = time.monotonic()
    with socket.create_connection((gw.host, gw.port), timeout=timeout) as s:
        s.sendall(data)
        while not ans.complete and not ans.cut:
            try:
                got = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"{rid}: no end of the response within {timeout} s") from None
            except ConnectionResetError:
                got = b""
            conn.receive_data(got)
            while True:
                try:
                    ev = conn.next_event()
                except h11.RemoteProtocolError:
                    ans.cut = True  # closed before the body's end
                    break
                if ev is h11.NEED_DATA or isinstance(ev, h11.ConnectionClosed):
                    if not got:
                        ans.cut = True
                    break
                if isinstance(ev, h11.Response):
                    ans.status = ev.status_code
                    ans.headers = {k: v for k, v in ev.headers}
                elif isinstance(ev, h11.Data):
                    ans.body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    ans.complete = True
                    break
    ans.seconds = time.monotonic() - t0
    return ans


_markers = iter(range(10**9))


def the_record(gw: Gateway, rid: str) -> dict[str, Any]:
    """The one usage record of `rid`: a later request's record is waited for
    first, so a duplicate written after the first would be seen."""
    marker = f"marker-{next(_markers)}"
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
            b"X-Request-Id: %b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
            % marker.encode()
        )
        while s.recv(65536):
            pass
    gw.record_for(marker)
    recs = [r for r in gw.access_log_records() if r["request_id"] == rid]
    assert len(recs) == 1, f"{rid}: expected one usage record, got {recs}"
    return recs[0]


def upstream_events(fake: FakeOpenAI) -> list[str]:
    return [e["data"] for e in parse_sse(fake.last.response_body) if "data" in e]


def assert_no_usage(rec: dict[str, Any]) -> None:
    """The upstream's usage never arrived: tokens are estimated (when the gateway
    estimates) or zero, and the record says which."""
    if rec["estimated"]:
        assert rec["prompt_tokens"] > 0, rec
    else:
        assert rec["prompt_tokens"] == 0 and rec["completion_tokens"] == 0, rec


def assert_error_answer(ans: Answer, status: int, code: str, rid: str) -> None:
    assert ans.complete and ans.status == status, ans
    assert ans.json()["error"]["code"] == code
    assert ans.headers[b"x-request-id"] == rid.encode()


# --------------------------------------------------------------------------- before the head


@pytest.mark.parametrize("route", ["only", "failover"])
def test_connect_timeout(gw: Gateway, key: str, fake: FakeOpenAI, route: str) -> None:
    """A TCP connect that never completes (a full accept queue drops the SYNs)."""
    rid = f"connect-timeout-{route}"
    ans = ask(gw, key, chat("bh-only" if route == "only" else "bh-fo"), rid)
    assert CONNECT_TIMEOUT * 0.8 <= ans.seconds < CONNECT_TIMEOUT + 1.0, ans.seconds
    rec = the_record(gw, rid)
    if route == "only":
        assert_error_answer(ans, 504, "upstream_timeout", rid)
        assert (rec["status"], rec["error_code"], rec["attempts"]) == (504, "upstream_timeout", 1)
        assert fake.request_count == 0
    else:
        assert ans.complete and ans.status == 200
        assert ans.json()["choices"][0]["message"]["content"] == "Hello from fake"
        assert (rec["status"], rec["channel"], rec["attempts"]) == (200, "bh-next", 2)
        assert rec["prompt_tokens"] == fake.last_usage["prompt_tokens"]


def test_tls_handshake_that_stalls_is_a_connect_timeout(
    gw: Gateway, key: str, proxy: FaultProxy
) -> None:
    """An https upstream whose TCP connect succeeds but whose TLS handshake never
    answers: the handshake is part of the connect, bounded by connect_timeout."""
    n = proxy.accepted
    proxy.script(Fault(stall_at=0))
    ans = ask(gw, key, chat("tls-only"), "tls-stall")
    assert_error_answer(ans, 504, "upstream_timeout", "tls-stall")
    assert CONNECT_TIMEOUT * 0.8 <= ans.seconds < CONNECT_TIMEOUT + 1.0, ans.seconds
    rec = the_record(gw, "tls-stall")
    assert (rec["status"], rec["error_code"], rec["channel"]) == (504, "upstream_timeout", "tls")
    assert proxy.wait_done(n).gateway_left, "the gateway must hang up on the stalled handshake"


@pytest.mark.parametrize(
    ("delay", "route"),
    [("connect_delay", "only"), ("first_byte_delay", "only"), ("first_byte_delay", "failover")],
)
def test_first_byte_timeout(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy, delay: str, route: str
) -> None:
    """No response byte within first_byte_timeout (the proxy holds the request
    before dialing the upstream, or holds the upstream's answer)."""
    n = proxy.accepted
    proxy.script(Fault(**{delay: FIRST_BYTE_TIMEOUT * 4}))
    rid = f"fbt-{delay}-{route}"
    ans = ask(gw, key, chat(ONLY if route == "only" else FO), rid)
    assert FIRST_BYTE_TIMEOUT * 0.8 <= ans.seconds < FIRST_BYTE_TIMEOUT + 1.0, ans.seconds
    left = proxy.wait_done(n)
    assert left.gateway_left - left.accepted < FIRST_BYTE_TIMEOUT + 0.5, "not cancelled"
    rec = the_record(gw, rid)
    if route == "only":
        assert_error_answer(ans, 504, "upstream_timeout", rid)
        assert (rec["status"], rec["error_code"], rec["channel"]) == (504, "upstream_timeout", "px")
    else:
        assert ans.complete and ans.status == 200
        assert (rec["status"], rec["channel"], rec["attempts"]) == (200, "direct", 2)


RESETS_BEFORE_HEAD = {
    "reset-before-any-byte": Fault(reset_at=0),
    "reset-mid-head": Fault(reset_at=12),
    "fin-mid-head": Fault(close_at=12),
    "fin-after-head": Fault(close_at=At(BODY, 4)),
    "corrupt-status-line": Fault(corrupt_at=0, corrupt_with=b"XTTP"),
    "corrupt-first-chunk-size": Fault(corrupt_at=At(BODY, 4), corrupt_with=b"Z"),
}


@pytest.mark.parametrize(
    ("fault", "route", "stream"),
    [
        (fault, route, stream)
        for fault in RESETS_BEFORE_HEAD
        for route in ("only", "failover")
        for stream in (False, True)
        # the fake frames a JSON body with content-length: no chunk size to corrupt
        if stream or fault != "corrupt-first-chunk-size"
    ],
)
def test_failure_before_the_first_body_byte(
    gw: Gateway,
    key: str,
    fake: FakeOpenAI,
    proxy: FaultProxy,
    fault: str,
    route: str,
    stream: bool,
) -> None:
    """Nothing reached the client yet: fail over, or 502 if nothing else serves."""
    proxy.script(RESETS_BEFORE_HEAD[fault])
    rid = f"{fault}-{route}-{stream}"
    ans = ask(gw, key, chat(ONLY if route == "only" else FO, stream=stream), rid)
    assert ans.seconds < FIRST_BYTE_TIMEOUT, "a dead upstream must not look like a slow one"
    rec = the_record(gw, rid)
    if route == "only":
        assert_error_answer(ans, 502, "upstream_error", rid)
        assert (rec["status"], rec["error_code"], rec["attempts"]) == (502, "upstream_error", 1)
        assert_no_usage(rec)
    else:
        assert ans.complete and ans.status == 200
        if stream:
            assert ans.events()[-1] == "[DONE]"
        else:
            assert ans.json()["choices"][0]["message"]["content"] == "Hello from fake"
        assert (rec["status"], rec["channel"], rec["attempts"]) == (200, "direct", 2)
        assert rec["completion_tokens"] == fake.last_usage["completion_tokens"]
    assert rec["stream"] is stream


# --------------------------------------------------------------------------- slow, within limits


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_slow_upstream_within_the_timeouts_is_served_whole(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy, stream: bool
) -> None:
    """Delays under every timeout: a first byte late, then small pieces with
    pauses (each under idle_timeout) — the answer arrives whole and is billed."""
    proxy.script(Fault(first_byte_delay=FIRST_BYTE_TIMEOUT * 0.5, chunk_size=97, chunk_delay=0.04))
    rid = f"slow-ok-{stream}"
    ans = ask(gw, key, chat(ONLY, stream=stream), rid)
    assert ans.complete and ans.status == 200
    up = fake.last
    if stream:
        assert ans.events()[-1] == "[DONE]"
        text = "".join(
            (json.loads(d)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for d in ans.events()[:-1]
        )
        assert text == up.content
    else:
        assert ans.body == up.response_body
    rec = the_record(gw, rid)
    assert (rec["status"], rec["error_code"]) == (200, "")
    assert rec["prompt_tokens"] == up.usage["prompt_tokens"]
    assert rec["completion_tokens"] == up.usage["completion_tokens"]
    assert proxy.conn(-1).relayed > 0


# --------------------------------------------------------------------------- once bytes went out


# Cut points in an SSE stream of the fake: right before the third event, or inside
# it, past its `"choices":[{` (so the gateway has forwarded its first part already).
CUTS = {"boundary": At(EVENT, 0, 3), "mid-event": At(b'"delta":', 3, 3)}
ENDS = {
    "stall": lambda at: Fault(stall_at=at),  # idle_timeout
    "fin": lambda at: Fault(close_at=at, hold=0.1),  # truncated
    "rst": lambda at: Fault(reset_at=at, hold=0.1),
}


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("end", list(ENDS))
def test_stream_failing_midway_ends_with_an_error_event(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy, end: str, cut: str
) -> None:
    """docs/contract.md section 3: after bytes reached the client there is no failover; the
    stream ends with an error event in the client's format and a proper end."""
    proxy.script(ENDS[end](CUTS[cut]))
    rid = f"midstream-{end}-{cut}"
    ans = ask(gw, key, chat(FO, stream=True), rid)  # FO: no failover once streaming
    assert ans.complete and ans.status == 200, ans
    assert ans.headers[b"transfer-encoding"] == b"chunked"
    events = ans.events()
    assert "[DONE]" not in events
    err = json.loads(events[-1]).get("error")  # the last event is a whole error event
    assert isinstance(err, dict) and err.get("message"), events[-1]
    sent = [d for d in upstream_events(fake) if d != "[DONE]"]
    got = events[:-1]
    if cut == "mid-event":
        # The part of the third event that went out before the cut is ended as
        # an event of its own (it is the upstream's, truncated), not glued to the error.
        partial = got.pop()
        assert sent[2].startswith(partial) and len(partial) < len(sent[2])
    assert got == sent[:2]
    # The error says what happened: silence (idle_timeout) or a connection that ended.
    assert err["message"].endswith("idle_timeout" if end == "stall" else "reset"), err
    if end == "stall":
        assert IDLE_TIMEOUT * 0.8 <= ans.seconds < IDLE_TIMEOUT + 1.0
    rec = the_record(gw, rid)
    assert (rec["status"], rec["error_code"]) == (502, "upstream_error")
    assert (rec["channel"], rec["attempts"], rec["stream"]) == ("px", 1, True)
    assert_no_usage(rec)  # the usage chunk comes last
    assert fake.request_count == 1, "no failover once bytes reached the client"


@pytest.mark.parametrize("end", list(ENDS))
def test_json_body_failing_midway_is_cut_not_passed_as_success(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy, end: str
) -> None:
    """A non-stream body cut after 20 bytes reached the client: the client sees
    its connection close before content-length is met (never a short body that
    looks whole), and the record is a 502."""
    proxy.script(ENDS[end](At(BODY, 4 + 20)))
    rid = f"midbody-{end}"
    ans = ask(gw, key, chat(FO), rid)
    assert ans.status == 200 and ans.cut and not ans.complete, ans
    assert len(ans.body) < int(ans.headers[b"content-length"])
    assert fake.last.response_body.startswith(ans.body)
    rec = the_record(gw, rid)
    assert (rec["status"], rec["error_code"], rec["attempts"]) == (502, "upstream_error", 1)
    assert rec["stream"] is False
    assert_no_usage(rec)
    assert fake.request_count == 1


def test_corrupted_chunk_size_mid_stream_ends_with_an_error_event(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy
) -> None:
    """The third chunk's size line is not hex: the framing is broken once bytes
    went out, so the stream ends with an error event."""
    proxy.script(Fault(corrupt_at=At(b"\n\n\r\n", 4, 2), corrupt_with=b"Z", hold=0.1))
    ans = ask(gw, key, chat(ONLY, stream=True), "bad-chunk-mid")
    assert ans.complete and ans.status == 200
    objs = [json.loads(d) for d in ans.events()]
    assert len(objs) == 3 and "error" in objs[-1], objs
    rec = the_record(gw, "bad-chunk-mid")
    assert (rec["status"], rec["error_code"]) == (502, "upstream_error")
    assert_no_usage(rec)


# --------------------------------------------------------------------------- corrupted usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_corrupted_usage_json_is_recorded_without_usage(
    gw: Gateway, key: str, fake: FakeOpenAI, proxy: FaultProxy, stream: bool
) -> None:
    """A byte of the usage object is garbage: the answer is what the upstream sent
    (the gateway does not judge a body it passes through; in a stream, the usage
    chunk it asked for can no longer be told from another event, so it is passed
    on too), and the request still leaves its one record, without the usage it
    could not read."""
    proxy.script(Fault(corrupt_at=At(b'"usage":{', 9), corrupt_with=b"#"))
    rid = f"bad-usage-{stream}"
    ans = ask(gw, key, chat(ONLY, stream=stream), rid)
    assert ans.complete and ans.status == 200
    raw = fake.last.response_body
    p = raw.find(b'"usage":{') + 9
    sent = raw[:p] + b"#" + raw[p + 1 :]
    if stream:
        assert ans.events() == [e["data"] for e in parse_sse(sent)]
        assert ans.events()[-1] == "[DONE]"
    else:
        assert ans.body == sent
    rec = the_record(gw, rid)
    assert (rec["status"], rec["error_code"]) == (200, "")
    assert_no_usage(rec)


# --------------------------------------------------------------------------- close-delimited bodies


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_reset_of_a_close_delimited_body_is_an_error_not_its_end(
    rig: Rig, gw: Gateway, key: str, stream: bool
) -> None:
    """A body framed by the connection's close (no content-length, no chunks) ends
    at a FIN; a RST is not an end but a failure, as with any other framing."""
    if stream:
        ctype = b"text/event-stream"
        body = b"".join(sse_event(w) for w in ("one", " two", " three")) + sse_event("", "stop")
        body += b"data: [DONE]\n\n"
    else:
        ctype, body = b"application/json", completion_body("cut short " * 30)

    def close_delimited(conn: RawConn) -> None:
        if conn.read_request() is not None:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nConnection: close\r\n\r\n" % ctype)
            conn.send(body)
            conn.wait_peer_close(5)

    rig.behaviour = close_delimited
    rig.raw_proxy.script(Fault(reset_at=At(BODY, 4 + 2 * len(sse_event("one"))), hold=0.1))
    rid = f"close-delimited-rst-{stream}"
    ans = ask(gw, key, chat("raw-only", stream=stream), rid)
    assert ans.status == 200
    if stream:
        assert ans.complete
        events = ans.events()
        assert "[DONE]" not in events
        assert "error" in json.loads(events[-1]), events
    else:
        assert ans.cut and not ans.complete, "a reset body must not end like a whole one"
        assert body.startswith(ans.body) and len(ans.body) < len(body)
    rec = the_record(gw, rid)
    assert (rec["status"], rec["error_code"]) == (502, "upstream_error")


# --------------------------------------------------------------------------- other protocols


@pytest.mark.parametrize("ingress", ["anthropic", "openai"])
def test_anthropic_stream_cut_inside_an_event(
    make_gateway: Callable[..., Gateway], fake_anthropic: Any, ingress: str
) -> None:
    """The same cut inside an event from an Anthropic upstream: passed through to
    an Anthropic client (whose error is `event: error`), or converted for an
    OpenAI client (the converter only ever emits whole events)."""
    px = FaultProxy(fake_anthropic.port)
    try:
        key = make_key()
        gw = make_gateway(
            channels=[
                channel("ant", px.url, ["claude-x"], type="anthropic"),
            ],
            tokens=[token("t1", key)],
            server={"idle_timeout": IDLE_TIMEOUT},
        )
        px.script(Fault(reset_at=At(b"event: content_block_delta", 30, 2), hold=0.1))
        msgs = [{"role": "user", "content": "hi there"}]
        if ingress == "anthropic":
            path, obj = "/v1/messages", {"model": "claude-x", "max_tokens": 50, "messages": msgs}
        else:
            path, obj = "/v1/chat/completions", {"model": "claude-x", "messages": msgs}
        obj["stream"] = True
        body = json.dumps(obj).encode()
        raw = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"X-Request-Id: ant-{ingress}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target=path, headers=[("Host", "x")]))
        out = b""
        with socket.create_connection((gw.host, gw.port), timeout=5) as s:
            s.sendall(raw)
            while not isinstance(ev := conn.next_event(), h11.EndOfMessage):
                if ev is h11.NEED_DATA:
                    conn.receive_data(s.recv(65536))
                elif isinstance(ev, h11.Data):
                    out += ev.data
        events = parse_sse(out)
        last = events[-1]
        if ingress == "anthropic":
            assert last.get("event") == "error", events[-3:]
            partial = events[-2]  # the cut event, ended on its own
            assert partial.get("event") == "content_block_delta"
        assert "error" in json.loads(last["data"]), last
        rec = the_record(gw, f"ant-{ingress}")
        assert (rec["status"], rec["error_code"]) == (502, "upstream_error")
    finally:
        px.stop()


def test_gemini_json_array_stream_cut_midway_is_cut_for_the_client(
    make_gateway: Callable[..., Gateway], fake_gemini: Any
) -> None:
    """Gemini's streamGenerateContent without alt=sse is a JSON array, not SSE: an
    upstream failure inside it cannot be told with an SSE error event (that would
    be a `data:` line inside the array), so the client's body is cut, as a
    non-stream body is: its connection closes before the chunked end."""
    px = FaultProxy(fake_gemini.port)
    try:
        key = make_key()
        gw = make_gateway(
            channels=[channel("gem", px.url, ["gemini-x"], type="gemini")],
            tokens=[token("t1", key)],
        )
        px.script(Fault(reset_at=At(b'"responseId"', 0, 2), hold=0.1))
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode()
        target = f"/v1beta/models/gemini-x:streamGenerateContent?key={key}"
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(
            h11.Request(
                method="POST",
                target=target,
                headers=[
                    ("Host", "x"),
                    ("X-Request-Id", "gem-array"),
                    ("Content-Length", str(len(body))),
                ],
            )
        )
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        out, status = b"", 0
        with socket.create_connection((gw.host, gw.port), timeout=5) as s:
            s.sendall(data)
            with pytest.raises(h11.RemoteProtocolError):  # closed inside the chunked body
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(s.recv(65536))
                    elif isinstance(ev, h11.Response):
                        status = ev.status_code
                    elif isinstance(ev, h11.Data):
                        out += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
        assert status == 200 and out.startswith(b"[")
        assert b"data:" not in out
        rec = the_record(gw, "gem-array")
        assert (rec["status"], rec["error_code"]) == (502, "upstream_error")
    finally:
        px.stop()
