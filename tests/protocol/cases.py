"""The exchange table: what a client sends, what each upstream answers, what must come out.

Every expectation is derived from the case definition and docs/contract.md section 3, not
recorded from the gateway:

- upstream request = `POST <channel prefix><ingress path> HTTP/1.1`, the
  channel's static headers (host, its own credential, configured extra
  headers, `accept-encoding: identity`), `content-type`, the client's
  end-to-end headers in their order (hop-by-hop headers, the client's
  credential and the headers the gateway reads itself, such as
  `x-request-id`, stay behind), `content-length`, then the client's body
  bytes with only the two allowed edits (the model renamed by `model_map`;
  `{"stream_options":{"include_usage":true},` put at the front of the object
  of a stream the client did not ask usage for);
- client response = the upstream's status line, its end-to-end headers in
  order (hop-by-hop, `server`, `openai-organization`/`-project` and framing
  headers dropped), exactly one `x-request-id` (the client's), the
  upstream's id as `x-upstream-request-id`, then the framing: the upstream's
  content-length when the body is forwarded unchanged, else chunked (HTTP/1.1
  client) or close-delimited (HTTP/1.0 client), and `connection: close` when
  the connection ends after the response. Each upstream read of body bytes is
  forwarded as it arrives (one client chunk per upstream chunk when the whole
  answer arrives in one read), minus the usage-only chunk the gateway asked
  for on the client's behalf;
- after bytes have reached the client an upstream failure ends the stream
  with an OpenAI error event (`data: {"error":{...}}`) and the terminal chunk;
- 429 / 5xx before any byte reached the client fail over to the next channel
  (priority order), every attempt counted in the usage record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.protocol.kit import chunked

KEY = "fg-protocolTESTkey0123456789abcdefghijklmnopqr"
assert len(KEY) == 46

CONFIG = f"""
[routing]
max_attempts = 3

[[channels]]
name = "primary"
type = "openai"
base_url = "http://primary.upstream.test:8001"
api_key = "sk-primary"
models = ["gpt-4o-mini", "gpt-4o"]
model_map = {{ "gpt-4o" = "gpt-4o-2024-08-06" }}
headers = {{ "x-team" = "eval" }}
priority = 10

[[channels]]
name = "backup"
type = "openai"
base_url = "http://backup.upstream.test/proxy/v1"
api_key = "sk-backup"
models = ["gpt-4o-mini"]
priority = 0

[[tokens]]
name = "tester"
key = "{KEY}"
group = "default"

[[prices]]
model = "gpt-4o-mini"
input = 2.0
output = 8.0

[[prices]]
model = "gpt-4o"
input = 5.0
output = 20.0
"""

# Upstream origins as the fake loop sees them (host, port), and what each channel
# puts in front of every request.
PRIMARY = ("primary.upstream.test", 8001)
BACKUP = ("backup.upstream.test", 80)
_STATIC = {
    PRIMARY: (
        b"",
        b"host: primary.upstream.test:8001\r\n"
        b"authorization: Bearer sk-primary\r\n"
        b"x-team: eval\r\n"
        b"accept-encoding: identity\r\n",
    ),
    BACKUP: (
        b"/proxy",
        b"host: backup.upstream.test\r\nauthorization: Bearer sk-backup\r\naccept-encoding: identity\r\n",
    ),
}
CHAT = b"/v1/chat/completions"
PROMPT, COMPLETION = 12, 5
USAGE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": 17}
PRICE = {"gpt-4o-mini": (2, 8), "gpt-4o": (5, 20)}  # micro-dollars per token


# --------------------------------------------------------------------------- the client side


def request_body(model: str, *, stream: bool = False, asked_usage: bool = False) -> bytes:
    """A chat request body, in the compact form clients send."""
    body = b'{"model":"%b","messages":[{"role":"user","content":"Say hello"}]' % model.encode()
    if stream:
        body += b',"stream":true'
    if asked_usage:
        body += b',"stream_options":{"include_usage":true}'
    return body + b',"max_tokens":16}'


def client_request(
    rid: str, body: bytes, *, http: bytes = b"1.1", extra: tuple[bytes, ...] = ()
) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/%b\r\n"
        b"host: gateway.test\r\n"
        b"authorization: Bearer %b\r\n"
        b"user-agent: prototest/1.0\r\n"
        b"x-request-id: %b\r\n"
        b"content-type: application/json\r\n"
        b"%bcontent-length: %d\r\n\r\n%b"
    ) % (http, KEY.encode(), rid.encode(), b"".join(h + b"\r\n" for h in extra), len(body), body)


# What of the client's head travels upstream: its end-to-end headers, in order.
FORWARDED = b"user-agent: prototest/1.0\r\n"


def upstream_request(origin: tuple[str, int], body: bytes, forwarded: bytes = FORWARDED) -> bytes:
    prefix, static = _STATIC[origin]
    return (
        b"POST %b%b HTTP/1.1\r\n%bcontent-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b"
        % (prefix, CHAT, static, forwarded, len(body), body)
    )


def injected(body: bytes) -> bytes:
    """The gateway's include_usage edit: the option first in the object."""
    assert body.startswith(b"{")
    return b'{"stream_options":{"include_usage":true},' + body[1:]


def renamed(body: bytes, old: str, new: str) -> bytes:
    old_b, new_b = b'"model":"%b"' % old.encode(), b'"model":"%b"' % new.encode()
    assert body.count(old_b) == 1
    return body.replace(old_b, new_b)


# --------------------------------------------------------------------------- the upstream side

# Upstream headers: (name, value, forwarded to the client?)
UP_HEADERS = (
    (b"Date", b"Tue, 01 Jul 2025 12:00:00 GMT", True),
    (b"Server", b"fake-openai", False),
    (b"openai-organization", b"org-secret", False),
    (b"openai-processing-ms", b"42", True),
    (b"x-request-id", b"up-req-1", False),  # becomes x-upstream-request-id
)
JSON_CT = (b"Content-Type", b"application/json", True)
SSE_CT = (b"Content-Type", b"text/event-stream; charset=utf-8", True)


def completion(model: str = "gpt-4o-mini-2024-07-18") -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello there!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


def _chunk(choices: list[Any], usage: Any = None, with_usage_key: bool = True) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": choices,
    }
    if with_usage_key:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_events() -> tuple[list[bytes], bytes]:
    """The events of a stream with include_usage on (as OpenAI sends them: `"usage":null`
    on every content chunk), and the usage-only chunk among them."""
    usage_chunk = _chunk([], USAGE)
    events = [
        _chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        ),
        _chunk([{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]),
        _chunk([{"index": 0, "delta": {"content": " there!"}, "finish_reason": None}]),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        usage_chunk,
        b"data: [DONE]\n\n",
    ]
    return events, usage_chunk


def upstream_response(
    status: int,
    headers: tuple[tuple[bytes, bytes, bool], ...],
    body: list[bytes],
    framing: str,
) -> bytes:
    """framing: "length" (one body), "chunked" (one chunk per item) or "close"."""
    reason = {200: b"OK", 400: b"Bad Request", 429: b"Too Many Requests"}.get(status, b"Error")
    head = b"HTTP/1.1 %d %b\r\n" % (status, reason)
    head += b"".join(b"%b: %b\r\n" % (n, v) for n, v, _ in headers)
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(b"".join(body)) + b"".join(body)
    if framing == "chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*body)
    return head + b"Connection: close\r\n\r\n" + b"".join(body)


def client_head(
    status: int,
    headers: tuple[tuple[bytes, bytes, bool], ...],
    rid: str,
    framing: bytes,
    close: bool,
) -> bytes:
    """The response head the client must get for an upstream head (see module doc)."""
    reason = {200: b"OK", 400: b"Bad Request"}[status]
    head = b"HTTP/1.1 %d %b\r\n" % (status, reason)
    head += b"".join(b"%b: %b\r\n" % (n, v) for n, v, keep in headers if keep)
    head += b"x-request-id: %b\r\nx-upstream-request-id: up-req-1\r\n" % rid.encode()
    head += framing
    return head + (b"connection: close\r\n\r\n" if close else b"\r\n")


def error_json(message: str, type_: str, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


def openai_error_event(message: str) -> bytes:
    """docs/contract.md section 3: an upstream failure after bytes reached the client."""
    err = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + orjson.dumps(err) + b"\n\n"


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Step:
    """One upstream request the gateway must write, and the fake upstream's answer."""

    origin: tuple[str, int]
    request: bytes
    response: bytes
    then_close: bool = False  # the upstream closes after answering (cut, or close-delimited)


@dataclass(frozen=True)
class Exchange:
    """One client request, the upstream steps it causes, the client's expected bytes."""

    request: bytes
    steps: list[Step]
    response: bytes  # exact, for the whole upstream answer arriving in one read
    record: dict[str, Any]  # fields the usage record must have
    closes: bool = False  # the gateway closes the client connection afterwards
    eof_framed: bool = False  # the client response is close-delimited


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[str], Exchange]  # request id -> the exchange
    pipeline: bool = True  # meaningful to pipeline (keep-alive, no breaker build-up)
    notes: list[str] = field(default_factory=list)


def _record(
    *,
    status: int = 200,
    error_code: str = "",
    attempts: int = 1,
    channel: str = "primary",
    model: str = "gpt-4o-mini",
    upstream_model: str | None = None,
    stream: bool = False,
    usage: bool = True,
    estimated: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """`estimated`: (prompt, completion) tokens the gateway estimates (no usage came)."""
    p, c = (PROMPT, COMPLETION) if usage else (0, 0)
    if estimated is not None:
        p, c = estimated
    pin, pout = PRICE[model]
    return {
        "key_name": "tester",
        "group": "default",
        "ingress": "openai",
        "channel": channel,
        "provider": "openai",
        "model": model,
        "upstream_model": upstream_model or model,
        "stream": stream,
        "status": status,
        "error_code": error_code,
        "prompt_tokens": p,
        "completion_tokens": c,
        "cost_micros": p * pin + c * pout,
        "estimated": estimated is not None,
        "attempts": attempts,
        "client_ip": "203.0.113.7",
    }


def nonstream(
    rid: str,
    *,
    up_framing: str = "length",
    http: bytes = b"1.1",
    extra: tuple[bytes, ...] = (),
    model: str = "gpt-4o-mini",
) -> Exchange:
    body = request_body(model)
    up_model = {"gpt-4o": "gpt-4o-2024-08-06"}.get(model, model)
    up_body = renamed(body, model, up_model) if up_model != model else body
    headers = (JSON_CT, *UP_HEADERS)
    reply = completion()
    pieces = [reply] if up_framing == "length" else [reply[:100], reply[100:]]
    close = http == b"1.0" or b"connection: close" in extra
    if up_framing == "length":
        framing = b"content-length: %d\r\n" % len(reply)
        out_body = reply
    elif http == b"1.1":
        framing, out_body = b"transfer-encoding: chunked\r\n", chunked(*pieces)
    else:
        framing, out_body, close = b"", reply, True
    return Exchange(
        request=client_request(rid, body, http=http, extra=extra),
        steps=[
            Step(
                PRIMARY,
                upstream_request(PRIMARY, up_body),
                upstream_response(200, headers, pieces, up_framing),
            )
        ],
        response=client_head(200, headers, rid, framing, close) + out_body,
        record=_record(model=model, upstream_model=up_model),
        closes=close,
        eof_framed=not framing,
    )


def stream(
    rid: str,
    *,
    up_framing: str = "chunked",
    asked: bool = False,
    http: bytes = b"1.1",
    cut_after: int = 0,
) -> Exchange:
    """A stream; `asked`: the client asked include_usage itself; `cut_after`: the
    upstream connection drops after that many events (mid-stream failure)."""
    body = request_body("gpt-4o-mini", stream=True, asked_usage=asked)
    up_body = body if asked else injected(body)
    headers = (SSE_CT, *UP_HEADERS)
    events, usage_chunk = stream_events()
    if cut_after:
        events = events[:cut_after]
    seen = events if asked else [e for e in events if e is not usage_chunk]
    response = upstream_response(200, headers, events, up_framing)
    if cut_after:
        response = response[: -len(b"0\r\n\r\n")]  # the terminal chunk never comes
    if up_framing == "length" and asked:
        # Forwarded unchanged: the upstream's own length still holds.
        framing = b"content-length: %d\r\n" % len(b"".join(events))
        out_body, close = b"".join(events), False
    elif http == b"1.1":
        # One client chunk per upstream read of body bytes: per upstream chunk, or the
        # whole content-length body.
        pieces = seen if up_framing == "chunked" else [b"".join(seen)]
        if cut_after:
            pieces = [*pieces, openai_error_event("upstream failed mid-response: reset")]
        framing, out_body, close = b"transfer-encoding: chunked\r\n", chunked(*pieces), False
    else:
        framing, out_body, close = b"", b"".join(seen), True
    failed = bool(cut_after)
    return Exchange(
        request=client_request(rid, body, http=http, extra=(b"accept: text/event-stream",)),
        steps=[
            Step(
                PRIMARY,
                upstream_request(PRIMARY, up_body, FORWARDED + b"accept: text/event-stream\r\n"),
                response,
                then_close=failed,
            )
        ],
        response=client_head(200, headers, rid, framing, close) + out_body,
        record=_record(
            stream=True,
            status=502 if failed else 200,
            error_code="upstream_error" if failed else "",
            # cut before its usage chunk: estimated at ceil(characters / 4) from the
            # prompt ("Say hello") and the text the client got ("" "Hello" " there!")
            estimated=(-(-len("Say hello") // 4), -(-len("Hello there!") // 4)) if failed else None,
        ),
        closes=close,
        eof_framed=not framing,
    )


def upstream_400(rid: str) -> Exchange:
    body = request_body("gpt-4o-mini")
    err = error_json("max_tokens is too large", "invalid_request_error", "invalid_value")
    headers = (JSON_CT, *UP_HEADERS)
    return Exchange(
        request=client_request(rid, body),
        steps=[
            Step(
                PRIMARY,
                upstream_request(PRIMARY, body),
                upstream_response(400, headers, [err], "length"),
            )
        ],
        response=client_head(400, headers, rid, b"content-length: %d\r\n" % len(err), False) + err,
        record=_record(status=400, error_code="upstream_400", usage=False),
    )


def failover(rid: str, first_status: int, first_framing: str = "length") -> Exchange:
    body = request_body("gpt-4o-mini")
    err = error_json("overloaded", "server_error", None)
    failed = upstream_response(first_status, (JSON_CT,), [err], first_framing)
    ok = nonstream(rid)
    good = Step(BACKUP, upstream_request(BACKUP, body), ok.steps[0].response)
    return Exchange(
        request=ok.request,
        steps=[Step(PRIMARY, upstream_request(PRIMARY, body), failed), good],
        response=ok.response,
        record=_record(attempts=2, channel="backup"),
    )


def all_failed(rid: str) -> Exchange:
    body = request_body("gpt-4o-mini")
    err = error_json("overloaded", "server_error", None)
    steps = [
        Step(o, upstream_request(o, body), upstream_response(s, (JSON_CT,), [err], "length"))
        for o, s in ((PRIMARY, 500), (BACKUP, 503), (PRIMARY, 500))
    ]
    out = error_json(
        "all 3 attempt(s) failed: primary: HTTP 500; backup: HTTP 503; primary: HTTP 500",
        "server_error",
        "upstream_error",
    )
    response = (
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nx-request-id: %b\r\n\r\n%b" % (len(out), rid.encode(), out)
    )
    return Exchange(
        request=client_request(rid, body),
        steps=steps,
        response=response,
        record=_record(status=502, error_code="upstream_error", attempts=3, usage=False),
    )


CASES = [
    Case("nonstream", nonstream),
    Case("nonstream-upstream-chunked", lambda rid: nonstream(rid, up_framing="chunked")),
    Case("stream-injected-usage", stream),
    Case("stream-injected-usage-upstream-length", lambda rid: stream(rid, up_framing="length")),
    Case("stream-client-asked-usage", lambda rid: stream(rid, asked=True)),
    Case(
        "stream-client-asked-usage-upstream-length",
        lambda rid: stream(rid, asked=True, up_framing="length"),
    ),
    Case("model-map-rename", lambda rid: nonstream(rid, model="gpt-4o")),
    Case("upstream-400-passed-through", upstream_400),
    Case("failover-after-429", lambda rid: failover(rid, 429)),
    Case("failover-after-500-chunked", lambda rid: failover(rid, 500, "chunked")),
    Case("all-attempts-fail-502", all_failed, pipeline=False),  # the breaker would open
    Case("stream-cut-mid-response", lambda rid: stream(rid, cut_after=3), pipeline=False),
    Case(
        "connection-close",
        lambda rid: nonstream(rid, extra=(b"connection: close",)),
        pipeline=False,
    ),
    Case("http10-nonstream", lambda rid: nonstream(rid, http=b"1.0"), pipeline=False),
    Case(
        "http10-nonstream-upstream-chunked",
        lambda rid: nonstream(rid, http=b"1.0", up_framing="chunked"),
        pipeline=False,
    ),
    Case("http10-stream", lambda rid: stream(rid, http=b"1.0"), pipeline=False),
]


def split_at_event(response: bytes, n: int) -> tuple[bytes, bytes]:
    """A chunked upstream answer cut after its head and first `n` chunks."""
    pos = response.index(b"\r\n\r\n") + 4
    for _ in range(n):
        eol = response.index(b"\r\n", pos)
        pos = eol + 2 + int(response[pos:eol], 16) + 2
    return response[:pos], response[pos:]
