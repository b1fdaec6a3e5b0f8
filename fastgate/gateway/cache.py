"""The response cache's policy: which requests, under which key, what is stored,
and how a hit is answered (docs/contract.md section 7).

A request is cacheable when it opts in (`x-fastgate-cache: on`, or its key has
`cache = true`) and the process has a cache (`App.cache`, None when `[cache]
enabled` is false). `off` opts a request out; `refresh` skips the lookup and
overwrites the entry; any other value is a 400. The key is `canonical_key`: the
JSON body re-serialized with sorted keys, the ingress path (Gemini: and
`alt=sse`), the resolved model and the key's group.

The exchange asks `begin` after admission. A hit is answered here, whole, with
no upstream, channel, breaker or channel limit involved. A miss goes on to the
attempts with a `Capture` that keeps the bytes the client receives (after any
conversion, before the HTTP framing), bounded by `max_entry_bytes`; `store`
keeps them only for a complete 200 without an error event in it.

The backends (memory, Redis) live in `fastgate.respcache`, composition level;
this module only calls the methods of `App.cache`: `get(key, done)` returns an
`Entry`, None (miss), `BYPASS` (the cache is unreachable) or `PENDING` (the
answer comes later through `done(result)`), and `put(key, entry)`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from fastgate import errors
from fastgate.gateway.states import DONE
from fastgate.gateway.transform import Transform
from fastgate.http.responses import STATUS_LINE
from fastgate.metrics import declare, declare_gauge
from fastgate.vocab.usage import Usage

if TYPE_CHECKING:
    from fastgate.gateway.handler import Exchange

log = logging.getLogger("fastgate.cache")

HITS = declare("fastgate_cache_hits_total", "Responses served from the response cache.")
MISSES = declare(
    "fastgate_cache_misses_total", "Cacheable requests not served from the cache (refresh too)."
)
BYTES = declare("fastgate_cache_bytes_total", "Body bytes served from the response cache.")
EVICTIONS = declare(
    "fastgate_cache_evictions_total",
    "Entries the memory cache dropped to make room (TTL expiry not counted).",
)
ERRORS = declare(
    "fastgate_cache_errors_total",
    "Requests served without the cache because it was unreachable (Redis down).",
)
STORED = declare("fastgate_cache_stored_total", "Responses stored in the response cache.")
TOO_LARGE = declare(
    "fastgate_cache_too_large_total", "Complete responses not stored: over max_entry_bytes."
)
ENTRIES = declare_gauge("fastgate_cache_entries", "Entries the memory cache holds (this worker).")
HELD = declare_gauge(
    "fastgate_cache_held_bytes", "Body bytes the memory cache holds (this worker)."
)


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PENDING = _Sentinel("PENDING")  # the backend answers later, through its `done` callback
BYPASS = _Sentinel("BYPASS")  # the backend is unreachable: serve uncached, store nothing

ON, REFRESH = "on", "refresh"
_MODES = {b"on": ON, b"off": None, b"refresh": REFRESH}
HEADER = b"x-fastgate-cache"


# --------------------------------------------------------------------------- decisions


def mode_of(header: bytes, key_opts_in: bool) -> str | None:
    """ON, REFRESH or None (not cacheable) for a request's header and its key."""
    if header:
        mode = _MODES.get(header.strip().lower(), BYPASS)
        if mode is BYPASS:
            raise errors.InvalidRequest(
                'bad header x-fastgate-cache: expected "on", "off" or "refresh"'
            )
        return mode  # type: ignore[return-value]
    return ON if key_opts_in else None


def canonical_key(path: bytes, alt_sse: bool, model: str, group: str, body: Any) -> str:
    """sha256 (hex) of what makes two requests the same request: the ingress path
    (Gemini: its method is in the path; `alt=sse` from the query), the resolved
    model, the key's group, and the JSON body with its keys sorted at every level."""
    h = hashlib.sha256(path)
    h.update(b"\x00sse\x00" if alt_sse else b"\x00\x00")
    h.update(model.encode())
    h.update(b"\x00")
    h.update(group.encode())
    h.update(b"\x00")
    h.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


# --------------------------------------------------------------------------- entries


class Entry:
    """A stored response: the body bytes the client received, their content type,
    whether it was a stream, its usage and the upstream model that answered."""

    __slots__ = ("body", "content_type", "stream", "upstream_model", "usage")

    def __init__(
        self,
        body: bytes,
        content_type: bytes,
        stream: bool,
        usage: tuple[int, int, int, int, bool],
        upstream_model: str = "",
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.stream = stream
        self.usage = usage  # prompt, completion, cached, cache-write tokens, found
        self.upstream_model = upstream_model

    def encode(self) -> bytes:
        """One value for a shared store: a JSON header line, then the body."""
        head = orjson.dumps(
            {
                "v": 1,
                "ct": self.content_type.decode("latin-1"),
                "s": self.stream,
                "u": self.usage,
                "m": self.upstream_model,
            }
        )
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry `encode` wrote, or None for anything else."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            return None
        try:
            h = orjson.loads(head)
            u = h["u"]
            return cls(
                body,
                h["ct"].encode("latin-1"),
                h["s"] is True,
                (int(u[0]), int(u[1]), int(u[2]), int(u[3]), bool(u[4])),
                str(h.get("m", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            return None

    def usage_object(self) -> Usage:
        p, c, cr, cw, found = self.usage
        return Usage(p, c, cr, cw, found)


class Capture:
    """A cacheable request's state: its key, whether it refreshes, and the client's
    body bytes of the current attempt (None once over the bound: nothing stored)."""

    __slots__ = ("content_type", "hit", "key", "limit", "parts", "refresh", "size", "usable")

    def __init__(self, key: str, refresh: bool, limit: int) -> None:
        self.key = key
        self.refresh = refresh
        self.limit = limit
        self.parts: list[bytes] | None = []
        self.size = 0
        self.content_type = b"application/json"
        self.hit = False
        self.usable = True  # False: the cache was unreachable at lookup, store nothing

    def reset(self, content_type: bytes = b"application/json") -> None:
        """A new response head was accepted: capture its body from the start."""
        self.parts = []
        self.size = 0
        self.content_type = content_type

    def add(self, data: bytes) -> None:
        parts = self.parts
        if parts is not None:
            self.size += len(data)
            if self.size > self.limit:
                self.parts = None
            else:
                parts.append(data)


_NO_CONN_PAUSE = type("_NoConn", (), {"pause_reading": lambda self: None})()
_CTYPE = re.compile(rb"(?:^|\n)content-type:[ \t]*([^\r\n]*)", re.IGNORECASE)
# An error event in a stream the client received: SSE `event: error` (Anthropic)
# or `data: {"error": ...}` (OpenAI, Gemini); in a JSON array (Gemini without
# alt=sse) an element `{"error": ...}`; a non-stream body that is an error object.
_SSE_ERROR = re.compile(rb'(?:^|\n)(?:event:[ \t]*error[ \t]*\r?\n|data:[ \t]*\{\s*"error"\s*:)')
_ARRAY_ERROR = re.compile(rb'(?:^\s*\[|,)\s*\{\s*"error"\s*:')
_BODY_ERROR = re.compile(rb'\s*\[?\s*\{\s*"error"\s*:')


def content_type_of(forward: list[bytes]) -> bytes:
    """The content type among an upstream response's forwarded header pieces."""
    m = _CTYPE.search(b"".join(forward))
    return m.group(1).strip() if m else b"application/json"


def has_error(body: bytes, stream: bool, content_type: bytes) -> bool:
    """Does the body the client received carry an error (then it is not stored)?"""
    if not stream:
        return _BODY_ERROR.match(body) is not None
    if content_type.startswith(b"text/event-stream"):
        return _SSE_ERROR.search(body) is not None
    return _ARRAY_ERROR.search(body) is not None


# --------------------------------------------------------------------------- the exchange's steps


def begin(ex: Exchange) -> bool:
    """After admission: decide, and look up. True when the exchange goes on from
    here (answered from the cache, or waiting for the lookup); False: attempt now."""
    ctx = ex.ctx
    token = ctx.token
    mode = mode_of(ctx.head.cache, token.cache)
    app = ex.app
    backend = app.cache
    if mode is None or backend is None:
        return False  # not cacheable here: no x-fastgate-cache on the response
    key = canonical_key(ctx.head.path, ctx.ingress.alt_sse, ctx.model, token.group, ctx.obj)
    cap = ex.cache = Capture(key, mode is REFRESH, app.cfg.cache.max_entry_bytes)
    ex.writer.cache_state = b"miss"
    if cap.refresh:
        app.metrics.inc(MISSES)
        return False
    result = backend.get(key, partial(looked_up, ex))
    if result is PENDING:
        return True
    return _answer(ex, result)


def looked_up(ex: Exchange, result: Any) -> None:
    """An asynchronous lookup's answer: serve the hit, or go on with the attempts.
    The client may have left meanwhile (the exchange is then DONE, recorded as 499)."""
    if ex.state is DONE:
        return
    try:
        if not _answer(ex, result):
            ex.attempt()
    except errors.FastgateError as err:
        ex.local_error(err)
    except Exception:
        ex._crash()


def _answer(ex: Exchange, result: Any) -> bool:
    metrics = ex.app.metrics
    if result is None or result is BYPASS:
        if result is BYPASS:
            ex.cache.usable = False
        metrics.inc(MISSES)
        return False
    serve_hit(ex, result)
    return True


def serve_hit(ex: Exchange, entry: Entry) -> None:
    """Answer from the cache: the stored bytes under a fresh head (a stream as a
    chunked stream), then the usual end: a record with cost 0 and cache_hit."""
    app = ex.app
    body = entry.body
    metrics = app.metrics
    metrics.inc(HITS)
    metrics.inc(BYTES, (), len(body))
    cap = ex.cache
    cap.hit = True
    cap.parts = None
    w = ex.writer
    w.cache_state = b"hit"
    w.status = 200
    w.t_first = time.time()
    parts = [
        STATUS_LINE[200],
        b"content-type: %b\r\n" % entry.content_type,
        b"x-request-id: %b\r\n" % ex.ctx.request_id,
    ]
    if entry.stream:
        parts.append(b"cache-control: no-cache\r\n")
    w.begin(parts, _NO_CONN_PAUSE, b"" if entry.stream else b"%d" % len(body))
    if body:
        w.frame(body)
    tr = ex.transform = Transform.adopt(None)
    tr.conv_usage = entry.usage_object()
    ex.attempts.upstream_model = entry.upstream_model
    ex.complete(200, "")


def store(ex: Exchange, body: bytes | None = None) -> None:
    """A complete 200 ended: keep what the client received, if it may be kept.
    `body`: a response written whole (after conversion) instead of the capture."""
    cap = ex.cache
    if cap.hit or not cap.usable:
        return
    if body is None:
        if cap.parts is None:
            ex.app.metrics.inc(TOO_LARGE)
            return
        body = b"".join(cap.parts)
    elif len(body) > cap.limit:
        ex.app.metrics.inc(TOO_LARGE)
        return
    stream = ex.ctx.stream
    if has_error(body, stream, cap.content_type):
        return
    tr = ex.transform
    u = tr.usage() if tr is not None else Usage()
    entry = Entry(
        body,
        cap.content_type,
        stream,
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens, u.found),
        ex.attempts.upstream_model,
    )
    ex.app.cache.put(cap.key, entry)
    ex.app.metrics.inc(STORED)
