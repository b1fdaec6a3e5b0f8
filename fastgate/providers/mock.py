"""The built-in `mock` provider: an upstream served in-process.

It speaks the OpenAI protocol (chat, completions, embeddings, responses; stream
and not) or, with the channel's `protocol = "anthropic"`, Anthropic's Messages
protocol (messages, count_tokens), so the gateway's real conversions run between
it and the other ingresses. What it says is `mock_answer`'s (tools and tool
choice, JSON output, `n`, stop sequences, token limits, deterministic prose);
`mock_openai` and `mock_anthropic` write it in each wire format, with usage equal
to the tokens sent, optionally one chunk every `delay_ms`. It drives the
exchange through the same callbacks a real upstream connection does, so the mock
exercises the real data path (usage scanning, include_usage stripping, framing,
backpressure).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from fastgate import errors
from fastgate.convert import ConversionError
from fastgate.http.upstream import BAD_RESPONSE
from fastgate.providers import anthropic as anthropic_type
from fastgate.providers import mock_anthropic, mock_openai
from fastgate.providers.base import ChannelType
from fastgate.providers.mock_answer import MockRefusal
from fastgate.vocab.protocols import ANTHROPIC, OPENAI

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("fastgate.mock")


class MockConn:
    """Stands where an UpstreamProtocol would: pause/resume/abort, no pool slot."""

    __slots__ = (
        "chunks",
        "closed",
        "content_length",
        "delay",
        "exchange",
        "forward",
        "got_bytes",
        "handle",
        "loop",
        "paused",
        "pos",
        "request_id",
        "retry_after",
        "sse",
        "used",
    )
    key = None
    limits = None  # no upstream rate-limit headers
    exhausted = False

    def __init__(self, loop: asyncio.AbstractEventLoop, exchange: Any, delay: float) -> None:
        self.loop = loop
        self.exchange = exchange
        self.delay = delay
        self.chunks: list[bytes] = []
        self.pos = 0
        self.paused = False
        self.closed = False
        self.handle: Any = None
        self.got_bytes = False
        self.used = 0
        self.forward: list[bytes] = []
        self.request_id = b""
        self.retry_after = b""
        self.content_length = b""
        self.sse = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed and self.handle is None:
                self.handle = self.loop.call_soon(self.pump)

    def abort(self) -> None:
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def pump(self) -> None:
        """Emit chunks until paused, done, or it is time to wait for the next token."""
        self.handle = None
        ex = self.exchange
        while not self.closed and not self.paused and self.pos < len(self.chunks):
            ex.up_body(self.chunks[self.pos])
            self.pos += 1
            self.got_bytes = True
            if self.closed:
                return
            if self.delay and self.pos < len(self.chunks):
                ex.up_flush()
                self.handle = self.loop.call_later(self.delay, self.pump)
                return
        if self.closed:
            return
        if self.pos >= len(self.chunks):
            self.closed = True
            ex.up_complete(self)
        else:
            ex.up_flush()  # paused by the client: send what is ready


class MockProvider:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def serve(self, exchange: Any, channel: Any) -> None:
        """Answer the exchange's request from `channel` (soon, like a connection).

        A request converted for a non-OpenAI mock is converted here by the real
        channel type's code; raises errors.InvalidRequest when it cannot be."""
        request = None
        if exchange.attempts.convert and channel.protocol == ANTHROPIC:
            hub = exchange.hub  # the request in OpenAI shape (protocols.hub_request)
            try:
                target, body, _ = anthropic_type.TYPE.converted_request(
                    channel, hub, exchange.model, exchange.upstream_model, exchange.stream
                )
            except ConversionError as exc:
                raise errors.InvalidRequest(str(exc)) from exc
            request = (target, orjson.loads(body), False)
        conn = MockConn(self.loop, exchange, channel.delay_ms / 1000.0)
        exchange.conn = conn
        self.loop.call_soon(self._respond, exchange, conn, channel.protocol, request)

    def _respond(self, ex: Any, conn: MockConn, protocol: str, request: Any) -> None:
        if conn.closed:
            return
        if request is not None:
            path, obj, inject = request
        elif ex.attempts.convert:  # an OpenAI mock receives the OpenAI-shaped request
            path, obj, inject = b"/v1/chat/completions", ex.hub, ex.stream
        else:
            path, obj, inject = ex.head.path, ex.obj, ex.inject
        try:
            status, headers, chunks = build_response(path, obj, ex.upstream_model, inject, protocol)
        except Exception as exc:  # e.g. a body nested deeper than orjson writes
            conn.closed = True
            ex.up_error(conn, BAD_RESPONSE, exc)  # as an upstream that cannot answer
            return
        conn.chunks = chunks
        conn.got_bytes = True
        conn.request_id = b"mock-" + ex.request_id
        conn.forward = [b"%b: %b\r\n" % h for h in headers if h[0] != b"content-length"]
        conn.sse = any(v.startswith(b"text/event-stream") for _, v in headers)
        conn.content_length = next((v for n, v in headers if n == b"content-length"), b"")
        ex.up_headers(conn, status)
        if conn.closed:
            return
        conn.pump()


def build_response(
    path: bytes,
    obj: dict[str, Any],
    model: str,
    inject_usage: bool = False,
    protocol: str = OPENAI,
) -> tuple[int, list, list[bytes]]:
    """(status, headers, body chunks) the mock answers a request with.

    `inject_usage`: the gateway asked for include_usage on the client's behalf
    (a real upstream would see it in the edited body). `protocol`: the wire
    protocol the channel speaks."""
    try:
        status, headers, chunks = _build(path, obj, model, inject_usage, protocol)
    except MockRefusal as exc:
        status, headers, chunks = _error(protocol, 400, str(exc))
    except Exception as exc:  # a request shape the mock did not foresee: a 400, not a hang
        log.exception("the mock could not answer %s", path.decode("latin-1"))
        status, headers, chunks = _error(protocol, 400, f"the mock could not read it: {exc}")
    if len(chunks) == 1:
        headers = [*headers, (b"content-length", b"%d" % len(chunks[0]))]
    return status, headers, chunks


def _error(protocol: str, status: int, message: str) -> tuple[int, list, list[bytes]]:
    if protocol == ANTHROPIC:
        return mock_anthropic.error(status, message)
    return mock_openai.error(status, message)


def _build(
    path: bytes, obj: dict[str, Any], model: str, inject: bool, protocol: str
) -> tuple[int, list, list[bytes]]:
    if not isinstance(obj, dict):
        raise MockRefusal("the request body must be a JSON object")
    rid = hashlib.sha1(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    where = path.decode("latin-1")
    if protocol == ANTHROPIC:
        if path == b"/v1/messages":
            return mock_anthropic.messages(obj, model, rid)
        if path == b"/v1/messages/count_tokens":
            return mock_anthropic.count_tokens(obj)
        return mock_anthropic.error(404, f"the mock (anthropic) does not serve {where}")
    created = int(time.time())
    if path == b"/v1/chat/completions":
        return mock_openai.chat(obj, model, rid, created, inject)
    if path == b"/v1/completions":
        return mock_openai.completions(obj, model, rid, created, inject)
    if path == b"/v1/embeddings":
        return mock_openai.embeddings(obj, model)
    if path == b"/v1/responses":
        return mock_openai.responses(obj, model, rid, created)
    return mock_openai.error(404, f"the mock provider does not serve {where}", "unknown_url")


class MockType(ChannelType):
    """Served in-process by `MockProvider`: no origin, no key, no network."""

    __slots__ = ()

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        return []


TYPE = MockType(
    "mock",
    in_process=True,
    needs_base_url=False,
    default_models=("mock-1",),
    protocols=(OPENAI, ANTHROPIC),
    own_keys=frozenset({"delay_ms", "default_max_tokens"}),  # the latter: protocol anthropic
)
