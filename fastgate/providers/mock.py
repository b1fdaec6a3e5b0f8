"""The built-in `mock` provider: an upstream served in-process.

It answers the OpenAI protocol (chat, completions, embeddings, responses;
stream and not) with deterministic text and realistic usage, optionally one
token every `delay_ms`. It drives the exchange through the same callbacks a
real upstream connection does, so the mock exercises the real data path
(usage scanning, include_usage stripping, framing, backpressure).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from fastgate.http.upstream import BAD_RESPONSE
from fastgate.providers.base import ChannelType
from fastgate.vocab.usage import Usage, estimate_tokens, openai_usage_dict, responses_usage_dict

if TYPE_CHECKING:
    import asyncio

WORDS = [
    "This",
    "is",
    "a",
    "mock",
    "response",
    "from",
    "fastgate",
    ".",
    "It",
    "is",
    "deterministic",
    ",",
    "costs",
    "nothing",
    ",",
    "and",
    "needs",
    "no",
    "network",
    "or",
    "API",
    "key",
    ".",
    "Point",
    "a",
    "channel",
    "at",
    "a",
    "real",
    "provider",
    "to",
    "get",
    "real",
    "answers",
    ".",
]

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


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
        conn = MockConn(self.loop, exchange, channel.delay_ms / 1000.0)
        exchange.conn = conn
        self.loop.call_soon(self._respond, exchange, conn)

    def _respond(self, ex: Any, conn: MockConn) -> None:
        if conn.closed:
            return
        if ex.hub is not None:  # converting: the mock receives the OpenAI-shaped request
            obj, path, inject = ex.hub, b"/v1/chat/completions", ex.stream
        else:
            obj, path, inject = ex.obj, ex.head.path, ex.inject
        model = ex.upstream_model
        try:
            status, headers, chunks = build_response(path, obj, model, inject)
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


def _completion_words(obj: dict[str, Any]) -> list[str]:
    limit = (
        obj.get("max_completion_tokens") or obj.get("max_tokens") or obj.get("max_output_tokens")
    )
    n = len(WORDS)
    if isinstance(limit, int) and 0 < limit < n:
        n = limit
    return WORDS[:n]


def build_response(
    path: bytes, obj: dict[str, Any], model: str, inject_usage: bool = False
) -> tuple[int, list, list[bytes]]:
    """(status, headers, body chunks) the mock answers a request with.

    `inject_usage`: the gateway asked for include_usage on the client's behalf
    (a real upstream would see it in the edited body)."""
    status, headers, chunks = _build(path, obj, model, inject_usage)
    if len(chunks) == 1:
        headers = [*headers, (b"content-length", b"%d" % len(chunks[0]))]
    return status, headers, chunks


def _build(
    path: bytes, obj: dict[str, Any], model: str, inject_usage: bool
) -> tuple[int, list, list[bytes]]:
    stream = obj.get("stream") is True
    created = int(time.time())
    rid = hashlib.sha1(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    if path == b"/v1/chat/completions":
        prompt = estimate_tokens(obj.get("messages", []))
        words = _completion_words(obj)
        usage = openai_usage_dict(Usage(prompt, len(words)))
        if not stream:
            body = {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": "stop" if len(words) == len(WORDS) else "length",
                    }
                ],
                "usage": usage,
            }
            return 200, _JSON_HEADERS, [orjson.dumps(body)]
        so = obj.get("stream_options")
        include = inject_usage or (isinstance(so, dict) and so.get("include_usage") is True)
        base = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        extra = {"usage": None} if include else {}
        chunks = [
            _sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                    **extra,
                }
            )
        ]
        for i, w in enumerate(words):
            text = w if i == 0 else " " + w
            chunks.append(
                _sse(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": text}, "finish_reason": None}
                        ],
                        **extra,
                    }
                )
            )
        finish = "stop" if len(words) == len(WORDS) else "length"
        chunks.append(
            _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], **extra})
        )
        if include:
            chunks.append(_sse({**base, "choices": [], "usage": usage}))
        chunks.append(b"data: [DONE]\n\n")
        return 200, _SSE_HEADERS, chunks
    if path == b"/v1/completions":
        prompt = estimate_tokens(obj.get("prompt", ""))
        words = _completion_words(obj)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
        }
        base = {
            "id": f"cmpl-{rid}",
            "object": "text_completion",
            "created": created,
            "model": model,
        }
        if not stream:
            body = {
                **base,
                "choices": [
                    {"index": 0, "text": " ".join(words), "finish_reason": "stop", "logprobs": None}
                ],
                "usage": usage,
            }
            return 200, _JSON_HEADERS, [orjson.dumps(body)]
        so = obj.get("stream_options")
        include = inject_usage or (isinstance(so, dict) and so.get("include_usage") is True)
        chunks = [
            _sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "text": (w if i == 0 else " " + w),
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    ],
                }
            )
            for i, w in enumerate(words)
        ]
        if include:
            chunks.append(_sse({**base, "choices": [], "usage": usage}))
        chunks.append(b"data: [DONE]\n\n")
        return 200, _SSE_HEADERS, chunks
    if path == b"/v1/embeddings":
        inp = obj.get("input", "")
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        dims = obj.get("dimensions") if isinstance(obj.get("dimensions"), int) else 8
        data = []
        for i, item in enumerate(items):
            h = hashlib.sha256(orjson.dumps(item)).digest()
            vec = [round((h[j % 32] - 128) / 128.0, 6) for j in range(dims)]
            data.append({"object": "embedding", "index": i, "embedding": vec})
        prompt = estimate_tokens(items)
        body = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        return 200, _JSON_HEADERS, [orjson.dumps(body)]
    if path == b"/v1/responses":
        prompt = estimate_tokens(obj.get("input", "")) + estimate_tokens(
            obj.get("instructions") or ""
        )
        words = _completion_words(obj)
        text = " ".join(words)
        usage = responses_usage_dict(Usage(prompt, len(words)))
        item = {
            "id": f"msg_{rid}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        resp = {
            "id": f"resp_{rid}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "model": model,
            "output": [item],
            "usage": usage,
        }
        if not stream:
            return 200, _JSON_HEADERS, [orjson.dumps(resp)]
        pending = {**resp, "status": "in_progress", "output": [], "usage": None}
        chunks = [
            _sse_event(
                "response.created",
                {"type": "response.created", "sequence_number": 0, "response": pending},
            )
        ]
        seq = 1
        for i, w in enumerate(words):
            delta = w if i == 0 else " " + w
            chunks.append(
                _sse_event(
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": seq,
                        "item_id": item["id"],
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                    },
                )
            )
            seq += 1
        chunks.append(
            _sse_event(
                "response.completed",
                {"type": "response.completed", "sequence_number": seq, "response": resp},
            )
        )
        return 200, _SSE_HEADERS, chunks
    err = {
        "error": {
            "message": f"the mock provider does not serve {path.decode('latin-1')}",
            "type": "invalid_request_error",
            "code": "unknown_url",
        }
    }
    return 404, _JSON_HEADERS, [orjson.dumps(err)]


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class MockType(ChannelType):
    """Served in-process by `MockProvider`: no origin, no key, no network."""

    __slots__ = ()

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        return []


TYPE = MockType("mock", in_process=True, needs_base_url=False, default_models=("mock-1",))
