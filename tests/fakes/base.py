"""What every fake upstream shares: behaviours, request records, the server thread.

A fake is an aiohttp low-level server on 127.0.0.1 (port 0 by default) running in
its own thread with its own event loop, so synchronous SDK clients and async tests
can share it. What it answers is decided per request by a *behaviour*: the next one
queued with `script(...)` (FIFO, one per request, whatever the request is), else the
default (`fake.behaviour`). Subclasses (one per wire protocol) implement `_route`
and a few hooks (`_headers`, `_error_doc`, `_stream_error_event`); everything else
— lifecycle, recording, connection counting, streaming with backpressure, the
generic failure modes — lives here so every provider fake fails the same way.

Token counts are deterministic so tests derive expectations from the fake, never
from the gateway: `chat_prompt_tokens` (3 + 4 + words per message, system counted as
one message — the same rule for every provider, so a converted request counts the
same as its original), one completion token per `content_pieces` piece, and for a
tool call 1 + one per `json_pieces` piece of its arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

__all__ = [
    "CREATED",
    "JSON_CONTENT_TYPE",
    "SSE_CONTENT_TYPE",
    "Answer",
    "Behaviour",
    "BigStream",
    "CloseImmediately",
    "DieMidStream",
    "Fail",
    "FakeUpstream",
    "Hang",
    "Ok",
    "Recorded",
    "Slow",
    "StreamError",
    "ToolCall",
    "chat_prompt_tokens",
    "closed_port",
    "content_pieces",
    "dumps",
    "embedding_for",
    "json_pieces",
    "pick_tool",
    "text_of",
    "tool_args_for",
    "words",
]

CREATED = 1_700_000_000
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


def dumps(obj: Any) -> str:
    """Compact JSON like most providers' servers emit."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- behaviours


@dataclass
class Ok:
    """Answer normally. Token counts default to the fake's deterministic computation.

    `prompt_tokens` is the *total* input (cached and cache-write included, as the
    gateway's Usage counts it); left None, the computed count is the uncached part
    and cached/cache-write tokens come on top. Providers without a cache-write field
    (OpenAI, Gemini, Ollama) simply do not report it separately.
    """

    content: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    chunk_delay: float = 0.0
    first_byte_delay: float = 0.0
    headers: dict[str, str] | None = None
    cache_write_tokens: int = 0
    # The service tier reported (OpenAI top-level `service_tier`, Anthropic
    # `usage.service_tier`); None: the provider's usual ("default" / "standard").
    service_tier: str | None = None
    # False: the response carries no usage object at all (OpenAI: no `usage` in
    # the body, no usage chunk in a stream even when include_usage asks for it).
    report_usage: bool = True
    # True: the whole stream in one write (one chunk of the chunked body), as a
    # server that buffers its answer sends it; the gateway reads it in one piece.
    one_write: bool = False


class Slow(Ok):
    """Like Ok, with a pause between stream chunks (and optionally before the first byte)."""

    def __init__(self, chunk_delay: float = 0.1, **kwargs: Any) -> None:
        super().__init__(chunk_delay=chunk_delay, **kwargs)


@dataclass(init=False)
class ToolCall(Ok):
    """Answer with one tool/function call (after a text part when `content` is given).

    Providers that have no tool calls (OpenAI chat here) answer it as plain Ok.
    """

    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None

    def __init__(
        self,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.input = dict(input or {})
        self.call_id = call_id


@dataclass
class Fail:
    """Answer with an error status. Body defaults to the provider's error JSON for it."""

    status: int = 500
    body: bytes | str | dict | None = None
    headers: dict[str, str] | None = None
    retry_after: str | None = "1"  # only sent with 429
    delay: float = 0.0


@dataclass
class Hang:
    """Accept and never answer (or answer headers + `after_chunks` stream chunks, then
    stall) until the client goes away or the fake stops."""

    after_chunks: int | None = None


@dataclass
class CloseImmediately:
    """Drop the TCP connection without any response (`rst=True`: send a RST)."""

    rst: bool = False


@dataclass
class DieMidStream:
    """Send `after_chunks` stream events (non-stream: half the body), wait `delay`
    seconds (so the bytes surely reached the far side), then drop the connection."""

    after_chunks: int = 2
    rst: bool = False
    delay: float = 0.0


@dataclass
class StreamError:
    """Send `after_chunks` stream events, then the provider's in-band error event
    (Anthropic `event: error`, a Bedrock exception frame, an Ollama `{"error"}` line,
    OpenAI/Gemini `data: {"error"}`) and end the response cleanly.
    A non-stream request gets `Fail(status)` instead."""

    after_chunks: int = 2
    status: int = 529
    message: str | None = None


@dataclass
class BigStream:
    """Stream `chunks` content chunks of about `chunk_bytes` bytes each.

    The counters are updated live from the fake's thread so a backpressure test can
    watch the producer stall behind a slow reader; `finished` turns true once every
    event is written (before the response's end reaches the reader).
    """

    chunks: int = 1000
    chunk_bytes: int = 16384
    bytes_written: int = 0
    chunks_written: int = 0
    client_disconnected: bool = False
    finished: bool = False


Behaviour = Ok | Fail | Hang | CloseImmediately | DieMidStream | StreamError | BigStream


# --------------------------------------------------------------------------- records


@dataclass
class Recorded:
    """One request as the fake saw it, plus what the fake did about it."""

    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    header_pairs: list[tuple[str, str]]
    body: bytes
    json: Any
    t: float  # time.monotonic() at arrival
    behaviour: str = ""
    status: int = 0
    response_request_id: str = ""  # the request id the fake answered with
    usage: dict[str, int] | None = None  # prompt/completion/cached/(cache_write)/total
    content: str = ""  # the text the fake answered with
    client_disconnected: bool = False
    completed: bool = False
    response_body: bytes = b""  # the body bytes the fake wrote (not kept for BigStream)
    notes: dict[str, Any] = field(default_factory=dict)  # provider facts (tool call, sigv4)

    @property
    def query_params(self) -> dict[str, str]:
        """Parsed query string (last value wins)."""
        out: dict[str, str] = {}
        for part in self.query.split("&"):
            if part:
                k, _, v = part.partition("=")
                out[k] = v
        return out


# --------------------------------------------------------------------------- deterministic model


def words(text: str) -> int:
    """Whitespace-separated words: the fake's unit of prompt tokens."""
    return len(text.split())


def text_of(content: Any) -> str:
    """Text of a content value: a string, or a list of parts/blocks with a "text" key
    (OpenAI parts, Anthropic blocks, Gemini parts, Bedrock blocks); other parts count 0."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return " ".join(texts)
    return ""


def chat_prompt_tokens(texts: list[str]) -> int:
    """3 + sum(4 + words(text)) over the messages' texts (a system prompt is one of them)."""
    return 3 + sum(4 + words(t) for t in texts)


def content_pieces(content: str) -> list[str]:
    """Split text into the pieces the fake streams, one per completion token."""
    pieces = re.findall(r"\s*\S+", content)
    tail = content[len("".join(pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces or [""]


def json_pieces(text: str, size: int = 8) -> list[str]:
    """Split serialized tool arguments into the fragments the fake streams."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


_SCHEMA_DEFAULTS: dict[str, Any] = {
    "string": "test",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
}


def tool_args_for(schema: Any) -> dict[str, Any]:
    """Deterministic arguments for a JSON schema: each required property (all of them
    when none is marked required) gets its enum's first value or a per-type default
    ("test", 1, True, [], {}). Type names are matched case-insensitively (Gemini's
    OpenAPI schemas say "STRING")."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    required = schema.get("required")
    names = [n for n in props if n in required] if isinstance(required, list) else list(props)
    out: dict[str, Any] = {}
    for name in names:
        prop = props.get(name)
        prop = prop if isinstance(prop, dict) else {}
        enum = prop.get("enum")
        if isinstance(enum, list) and enum:
            out[name] = enum[0]
            continue
        ptype = prop.get("type")
        if isinstance(ptype, list):
            ptype = next((t for t in ptype if t != "null"), None)
        out[name] = _SCHEMA_DEFAULTS.get(str(ptype).lower()) if ptype else None
        if isinstance(out[name], list | dict):
            out[name] = type(out[name])()  # a fresh container per call
    return out


def pick_tool(tools: list[tuple[str, Any]], last_user_text: str) -> tuple[str, Any] | None:
    """The first (name, schema) whose name the last user message mentions as a whole
    word ("use get_weather"), if any."""
    for name, schema in tools:
        if name and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", last_user_text):
            return name, schema
    return None


@dataclass
class Answer:
    """What a fake answers for one request, computed once and rendered per protocol."""

    text: str
    pieces: list[str]
    tool_name: str | None
    tool_input: dict[str, Any]
    tool_id: str
    tool_pieces: list[str]
    prompt_tokens: int  # all input, cached and cache-write included
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    stop: str  # "stop" | "length" | "tool"
    service_tier: str | None = None  # as scripted (Ok.service_tier)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_tokens(self) -> int:
        """Input tokens neither read from nor written to a cache."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    @property
    def tool_json(self) -> str:
        return dumps(self.tool_input)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "total_tokens": self.total_tokens,
        }


def embedding_for(text: str, dims: int) -> list[float]:
    """A deterministic vector for `text` (values exactly representable in float32):
    every fake's embeddings, so a test can compute what any provider answers."""
    seed = zlib.crc32(text.encode())
    return [((seed >> (j % 24)) % 1024 + j) / 1024.0 for j in range(dims)]


def closed_port() -> int:
    """A local TCP port with nothing listening (bind, read the port, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- the server


class _CountingServer(web.Server):
    """aiohttp low-level server that counts connections and keeps their transports."""

    def __init__(self, fake: FakeUpstream, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._fake = fake

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._fake._on_conn_made(transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._fake._on_conn_lost(handler)

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any):
        return BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=256 * 2**20
        )


class _ClientGone(Exception):
    pass


class FakeUpstream:
    """Base of the provider fakes; see the module docstring."""

    default_models: list[str] = []
    json_content_type = JSON_CONTENT_TYPE
    error_content_type = JSON_CONTENT_TYPE
    sse_content_type = SSE_CONTENT_TYPE

    def __init__(
        self,
        name: str = "fake",
        *,
        models: list[str] | None = None,
        port: int = 0,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.name = name
        self.models = list(models or self.default_models)
        self.behaviour: Behaviour = behaviour or Ok()
        self._port = port
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._conn_opened = 0
        self.in_flight = 0  # requests being answered now (and the most seen at once)
        self.max_in_flight = 0
        self._conn_closed = 0
        self._transports: set[asyncio.Transport] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._runner: web.ServerRunner | None = None
        self._handlers: set[asyncio.Task] = set()
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start serving; return the base url `http://127.0.0.1:PORT`."""
        if self._thread is not None:
            return self.url
        kind = type(self).__name__
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"{kind}-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f"{kind} did not start within 15 s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"{kind} failed to start: {self._start_error!r}")
        return self.url

    def stop(self) -> None:
        """Stop serving: hanging handlers end, open connections are closed."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._astop(), loop)
        with contextlib.suppress(Exception):
            fut.result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:  # report to start() instead of dying silently
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> None:
        self._stop_event = asyncio.Event()
        server = _CountingServer(
            self,
            self._handle,
            access_log=None,
            max_line_size=1 << 20,
            max_field_size=1 << 20,
            max_headers=1024,
            keepalive_timeout=75,
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, backlog=512)
        await site.start()
        self.url = f"http://127.0.0.1:{self._port}"

    async def _astop(self) -> None:
        assert self._stop_event is not None
        self._stop_event.set()
        for tr in list(self._transports):
            tr.abort()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 5)
        for tr in list(self._transports):
            tr.abort()

    # ------------------------------------------------------------------ control & inspection

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours, consumed one per request before falling back to the default."""
        with self._lock:
            self._script.extend(behaviours)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Set the default behaviour and drop any queued script."""
        with self._lock:
            self._script.clear()
            self.behaviour = behaviour

    @property
    def pending_script(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def last(self) -> Recorded:
        with self._lock:
            return self._requests[-1]

    @property
    def last_usage(self) -> dict[str, int] | None:
        """The usage the fake reported for the latest request."""
        with self._lock:
            return self._requests[-1].usage if self._requests else None

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least n requests arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request_count >= n:
                return self.requests
            time.sleep(0.01)
        raise AssertionError(f"{self.name}: expected {n} requests, got {self.request_count}")

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._conn_opened

    @property
    def connections_closed(self) -> int:
        with self._lock:
            return self._conn_closed

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._conn_opened - self._conn_closed

    def wait_connections_closed(self, n: int, timeout: float = 5.0) -> int:
        """Wait until at least n connections have been closed; return the count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections_closed >= n:
                return self.connections_closed
            time.sleep(0.01)
        return self.connections_closed

    def drop_connections(self) -> None:
        """Abort every open connection (e.g. to kill the gateway's kept-alive ones)."""
        loop = self._loop
        if loop is None:
            return

        def _drop() -> None:
            for tr in list(self._transports):
                tr.abort()

        loop.call_soon_threadsafe(_drop)

    def _on_conn_made(self, transport: asyncio.Transport) -> None:
        with self._lock:
            self._conn_opened += 1
        self._transports.add(transport)

    def _on_conn_lost(self, handler: Any) -> None:
        with self._lock:
            self._conn_closed += 1
        self._transports = {t for t in self._transports if not t.is_closing()}

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.behaviour

    # ------------------------------------------------------------------ request handling

    def _streams_body(self, request: BaseRequest) -> bool:
        """True when the provider's route reads the body itself, as it arrives (an
        upload); `Recorded.body` is then what the route stores there."""
        return False

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        t = time.monotonic()
        body = b"" if self._streams_body(request) else await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=CIMultiDict(request.headers),
            header_pairs=[
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers
            ],
            body=body,
            json=parsed,
            t=t,
            response_request_id=self._new_request_id(),
        )
        behaviour = self._next_behaviour()
        rec.behaviour = type(behaviour).__name__
        with self._lock:
            self._requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._dispatch(request, rec, behaviour)
        except _ClientGone:
            rec.client_disconnected = True
            if isinstance(behaviour, BigStream):
                behaviour.client_disconnected = True
            raise asyncio.CancelledError from None
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _dispatch(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        """The failure modes every fake shares, then the provider's own routing."""
        if isinstance(behaviour, CloseImmediately):
            self._kill_transport(request, rst=behaviour.rst)
            raise _ClientGone
        if isinstance(behaviour, Hang) and behaviour.after_chunks is None:
            await self._wait_client_gone(request)
            raise _ClientGone
        if isinstance(behaviour, Fail):
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            return self._fail_response(rec, behaviour)
        return await self._route(request, rec, behaviour)

    # ------------------------------------------------------------------ provider hooks

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        raise NotImplementedError

    def _new_request_id(self) -> str:
        return "req_" + uuid.uuid4().hex

    def _headers(
        self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {"content-type": content_type}
        if extra:
            headers.update(extra)
        return headers

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> Any:
        """The provider's error body for a status (a dict, str or bytes)."""
        raise NotImplementedError

    def _fail_headers(self, fail: Fail, rec: Recorded) -> dict[str, str]:
        """Provider headers added to an error response (before `fail.headers`)."""
        return {}

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        """The provider's in-band stream error, as bytes on the wire."""
        raise NotImplementedError

    def _dump(self, doc: Any) -> bytes:
        """Serialize a JSON response body."""
        return dumps(doc).encode()

    def _dump_error(self, doc: Any) -> bytes:
        return self._dump(doc)

    def _content_for(self, behaviour: Behaviour, ok: Ok) -> str:
        if ok.content is not None:
            return ok.content
        base = f"Hello from {self.name}"
        if isinstance(behaviour, DieMidStream | Hang | StreamError):
            extra = (behaviour.after_chunks or 0) + 6
            base += "".join(f" w{i}" for i in range(extra))
        return base

    def _answer(
        self,
        behaviour: Behaviour,
        rec: Recorded,
        *,
        computed_prompt: int,
        max_tokens: int | None = None,
        tool: tuple[str, Any] | None = None,
        tool_id: str = "",
    ) -> Answer:
        """Decide text/tool call/usage for a request and record them on `rec`.

        `tool` is the (name, schema) the request itself asks for (see `pick_tool`); it
        is used only when the behaviour is a plain Ok without scripted content.
        """
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        name: str | None = None
        args: dict[str, Any] = {}
        if isinstance(behaviour, ToolCall):
            name, args = behaviour.name, dict(behaviour.input)
            tool_id = behaviour.call_id or tool_id
        elif tool is not None and isinstance(behaviour, Ok) and ok.content is None:
            name, args = tool[0], tool_args_for(tool[1])
        stop = "stop"
        if name is not None:
            text = ok.content or ""
            pieces = content_pieces(text) if text else []
            tool_pieces = json_pieces(dumps(args))
            stop = "tool"
        else:
            text = self._content_for(behaviour, ok)
            pieces = content_pieces(text)
            if isinstance(behaviour, BigStream):
                pieces = ["x" * max(1, behaviour.chunk_bytes)] * behaviour.chunks
                text = "".join(pieces)
            elif max_tokens is not None and 0 < max_tokens < len(pieces):
                pieces = pieces[:max_tokens]
                text = "".join(pieces)
                stop = "length"
            tool_pieces = []
        if ok.completion_tokens is not None:
            completion = ok.completion_tokens
        else:
            completion = len(pieces) + (1 + len(tool_pieces) if name is not None else 0)
        cached, write = ok.cached_tokens, ok.cache_write_tokens
        if ok.prompt_tokens is not None:
            prompt = ok.prompt_tokens
            if prompt < cached + write:
                raise ValueError(
                    f"Ok.prompt_tokens={prompt} is the total input; it cannot be less than "
                    f"cached_tokens + cache_write_tokens = {cached + write}"
                )
        else:
            prompt = computed_prompt + cached + write
        ans = Answer(
            text=text,
            pieces=pieces,
            tool_name=name,
            tool_input=args,
            tool_id=tool_id,
            tool_pieces=tool_pieces,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=write,
            stop=stop,
            service_tier=ok.service_tier,
        )
        rec.usage = ans.usage()
        rec.content = text
        if name is not None:
            rec.notes["tool_call"] = {"name": name, "input": args, "id": tool_id}
        return ans

    # ------------------------------------------------------------------ response writers

    def _json(
        self,
        rec: Recorded,
        doc: Any,
        *,
        status: int = 200,
        extra: dict | None = None,
        content_type: str | None = None,
    ) -> web.Response:
        rec.status = status
        rec.completed = True
        rec.response_body = doc if isinstance(doc, bytes) else self._dump(doc)
        return web.Response(
            status=status,
            body=rec.response_body,
            headers=self._headers(rec, content_type or self.json_content_type, extra),
        )

    def _error(self, rec: Recorded, status: int, message: str) -> web.Response:
        """An error the fake itself decided on (validation, auth), in the provider's shape."""
        return self._fail_response(rec, Fail(status, body=self._error_doc(status, message, rec)))

    def _fail_response(self, rec: Recorded, fail: Fail) -> web.Response:
        body = fail.body
        if body is None:
            body = self._error_doc(fail.status, None, rec)
        if isinstance(body, dict | list):
            raw = self._dump_error(body)
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body
        headers = self._headers(rec, self.error_content_type)
        if fail.status == 429 and fail.retry_after is not None:
            headers["retry-after"] = fail.retry_after
        headers.update(self._fail_headers(fail, rec))
        if fail.headers:
            headers.update(fail.headers)
        rec.status = fail.status
        rec.completed = True
        rec.response_body = raw
        return web.Response(status=fail.status, body=raw, headers=headers)

    async def _answer_once(
        self,
        request: BaseRequest,
        rec: Recorded,
        behaviour: Behaviour,
        ok: Ok,
        doc: Any,
        *,
        content_type: str | None = None,
    ) -> web.StreamResponse:
        """A non-stream answer under any behaviour: DieMidStream sends half the body and
        drops, Hang(after_chunks) stalls, StreamError becomes Fail(status)."""
        if isinstance(behaviour, StreamError):
            message = behaviour.message
            return self._fail_response(
                rec, Fail(behaviour.status, body=self._error_doc(behaviour.status, message, rec))
            )
        if isinstance(behaviour, Hang):
            await self._wait_client_gone(request)
            raise _ClientGone
        if isinstance(behaviour, DieMidStream):
            return await self._die_mid_body(
                request, rec, doc, behaviour.delay, content_type=content_type
            )
        return self._json(rec, doc, extra=ok.headers, content_type=content_type)

    async def _stream(
        self,
        request: BaseRequest,
        rec: Recorded,
        behaviour: Behaviour,
        ok: Ok,
        events: list[bytes],
        content_type: str | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers=self._headers(rec, content_type or self.sse_content_type, ok.headers),
        )
        rec.status = 200
        try:
            await resp.prepare(request)
            limit = None
            if isinstance(behaviour, DieMidStream | Hang | StreamError):
                limit = behaviour.after_chunks
            if ok.one_write:  # only an Ok carries it (the failing behaviours are not Oks)
                events = [b"".join(events)]
            for i, ev in enumerate(events):
                if limit is not None and i >= limit:
                    break
                if i and ok.chunk_delay:
                    await asyncio.sleep(ok.chunk_delay)
                await resp.write(ev)
                if isinstance(behaviour, BigStream):
                    behaviour.bytes_written += len(ev)
                    behaviour.chunks_written += 1
                else:
                    rec.response_body += ev
            if isinstance(behaviour, DieMidStream):
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                self._kill_transport(request, rst=behaviour.rst)
                raise _ClientGone
            if isinstance(behaviour, Hang):
                await self._wait_client_gone(request)
                raise _ClientGone
            if isinstance(behaviour, StreamError):
                ev = self._stream_error_event(behaviour, rec)
                await resp.write(ev)
                rec.response_body += ev
                rec.notes["stream_error"] = True
            if isinstance(behaviour, BigStream):
                # before write_eof: a reader that saw the end must see finished
                behaviour.finished = True
            await resp.write_eof()
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone from exc
        rec.completed = True
        return resp

    async def _die_mid_body(
        self,
        request: BaseRequest,
        rec: Recorded,
        doc: Any,
        delay: float,
        *,
        content_type: str | None = None,
    ) -> web.StreamResponse:
        raw = doc if isinstance(doc, bytes) else self._dump(doc)
        resp = web.StreamResponse(
            status=200, headers=self._headers(rec, content_type or self.json_content_type)
        )
        resp.content_length = len(raw)
        rec.status = 200
        try:
            await resp.prepare(request)
            await resp.write(raw[: len(raw) // 2])
            rec.response_body = raw[: len(raw) // 2]
            if delay:
                await asyncio.sleep(delay)
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone from exc
        self._kill_transport(request, rst=False)
        raise _ClientGone

    async def _wait_client_gone(self, request: BaseRequest) -> None:
        assert self._stop_event is not None
        while not self._stop_event.is_set():
            tr = request.transport
            if tr is None or tr.is_closing():
                return
            await asyncio.sleep(0.02)

    @staticmethod
    def _kill_transport(request: BaseRequest, *, rst: bool) -> None:
        tr = request.transport
        if tr is None:
            return
        if rst:
            sock = tr.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tr.abort()
        else:
            tr.close()
