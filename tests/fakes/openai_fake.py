"""A fake OpenAI upstream that speaks OpenAI's wire format over a real socket.

Functional and adversity tests point fastgate channels at it. It runs an aiohttp
low-level server on 127.0.0.1 (port 0 by default) in its own thread with its own
event loop, so synchronous SDK clients and async tests can share it.

What it answers is decided per request by a *behaviour*: the next one queued with
`script(...)` (FIFO, one per request), else the default (`fake.behaviour`).
Everything it reports is deterministic so tests can derive their expectations from
the fake, never from the gateway: text comes from the behaviour (default
"Hello from <name>"), token counts from `prompt_tokens_for()` and the number of
content pieces, and every request is recorded with the usage the fake reported.
"""

from __future__ import annotations

import asyncio
import base64
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
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

__all__ = [
    "BigStream",
    "CloseImmediately",
    "DieMidStream",
    "Fail",
    "FakeOpenAI",
    "Hang",
    "Ok",
    "Recorded",
    "Slow",
    "content_pieces",
    "prompt_tokens_for",
]

CREATED = 1_700_000_000
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


def _dumps(obj: Any) -> str:
    """Compact JSON like OpenAI's servers emit."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- behaviours


@dataclass
class Ok:
    """Answer normally. Token counts default to the fake's deterministic computation."""

    content: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    chunk_delay: float = 0.0
    first_byte_delay: float = 0.0
    headers: dict[str, str] | None = None


class Slow(Ok):
    """Like Ok, with a pause between stream chunks (and optionally before the first byte)."""

    def __init__(self, chunk_delay: float = 0.1, **kwargs: Any) -> None:
        super().__init__(chunk_delay=chunk_delay, **kwargs)


@dataclass
class Fail:
    """Answer with an error status. Body defaults to OpenAI's error JSON for the status."""

    status: int = 500
    body: bytes | str | dict | None = None
    headers: dict[str, str] | None = None
    retry_after: str | None = "1"  # only sent with 429
    delay: float = 0.0


@dataclass
class Hang:
    """Accept and never answer (or answer headers + `after_chunks` SSE chunks, then stall)
    until the client goes away or the fake stops."""

    after_chunks: int | None = None


@dataclass
class CloseImmediately:
    """Drop the TCP connection without any response (`rst=True`: send a RST)."""

    rst: bool = False


@dataclass
class DieMidStream:
    """Send `after_chunks` SSE events (non-stream: half the body), wait `delay` seconds
    (so the bytes surely reached the far side), then drop the connection."""

    after_chunks: int = 2
    rst: bool = False
    delay: float = 0.0


@dataclass
class BigStream:
    """Stream `chunks` content chunks of about `chunk_bytes` bytes each.

    The counters are updated live from the fake's thread so a backpressure test can
    watch the producer stall behind a slow reader.
    """

    chunks: int = 1000
    chunk_bytes: int = 16384
    bytes_written: int = 0
    chunks_written: int = 0
    client_disconnected: bool = False
    finished: bool = False


Behaviour = Ok | Fail | Hang | CloseImmediately | DieMidStream | BigStream


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
    response_request_id: str = ""  # the x-request-id the fake answered with
    usage: dict[str, int] | None = None  # prompt/completion/cached/total the fake reported
    content: str = ""  # the text the fake answered with
    client_disconnected: bool = False
    completed: bool = False
    response_body: bytes = b""  # the body bytes the fake wrote (not kept for BigStream)

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


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """Text of an OpenAI/Responses content value: a string or a list of parts."""
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


def prompt_tokens_for(path: str, body: Any) -> int:
    """The prompt token count the fake reports for a request body (deterministic).

    chat: 3 + sum(4 + words(content)) over messages; completions: words(prompt) + 1;
    embeddings: words over all inputs (token arrays count their length);
    responses: 3 + words of the input (string or items).
    """
    if not isinstance(body, dict):
        return 0
    if path.endswith("/chat/completions"):
        msgs = body.get("messages") or []
        return 3 + sum(4 + _words(_text_of(m.get("content"))) for m in msgs if isinstance(m, dict))
    if path.endswith("/completions"):
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            return sum(_words(p) if isinstance(p, str) else 1 for p in prompt) + 1
        return _words(str(prompt)) + 1
    if path.endswith("/embeddings"):
        inp = body.get("input", "")
        items = inp if isinstance(inp, list) else [inp]
        total = 0
        for item in items:
            if isinstance(item, str):
                total += _words(item)
            elif isinstance(item, list):  # token array
                total += len(item)
            else:
                total += 1
        return total
    if path.endswith("/responses"):
        inp = body.get("input", "")
        if isinstance(inp, str):
            return 3 + _words(inp)
        total = 3
        for item in inp if isinstance(inp, list) else []:
            if isinstance(item, dict):
                total += 4 + _words(_text_of(item.get("content")))
        return total
    return 0


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


def embedding_for(text: str, dims: int) -> list[float]:
    """A deterministic vector for `text` (values exactly representable in float32)."""
    seed = zlib.crc32(text.encode())
    return [((seed >> (j % 24)) % 1024 + j) / 1024.0 for j in range(dims)]


# --------------------------------------------------------------------------- the server


class _CountingServer(web.Server):
    """aiohttp low-level server that counts connections and keeps their transports."""

    def __init__(self, fake: FakeOpenAI, handler: Any, **kwargs: Any) -> None:
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


class FakeOpenAI:
    """Fake OpenAI upstream; see the module docstring."""

    def __init__(
        self,
        name: str = "fake",
        *,
        models: list[str] | None = None,
        port: int = 0,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.name = name
        self.models = list(models or ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"])
        self.behaviour: Behaviour = behaviour or Ok()
        self._port = port
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._conn_opened = 0
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
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"FakeOpenAI-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("FakeOpenAI did not start within 15 s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"FakeOpenAI failed to start: {self._start_error!r}")
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

    def __enter__(self) -> FakeOpenAI:
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

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        body = await request.read()
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
            t=time.monotonic(),
            response_request_id="req_" + uuid.uuid4().hex,
        )
        behaviour = self._next_behaviour()
        rec.behaviour = type(behaviour).__name__
        with self._lock:
            self._requests.append(rec)
        try:
            return await self._dispatch(request, rec, behaviour)
        except _ClientGone:
            rec.client_disconnected = True
            if isinstance(behaviour, BigStream):
                behaviour.client_disconnected = True
            raise asyncio.CancelledError from None

    async def _dispatch(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
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

        path, method = request.path, request.method
        if method == "GET" and path in ("/v1/models", "/models"):
            return self._json(rec, self._models_body())
        if method != "POST" or not path.startswith("/v1/"):
            return self._fail_response(rec, Fail(404, body=_error_body(404, f"Unknown url {path}")))
        if not isinstance(rec.json, dict):
            return self._fail_response(
                rec,
                Fail(
                    400, body=_error_body(400, "We could not parse the JSON body of your request.")
                ),
            )
        problem = _validate(path, rec.json)
        if problem:
            return self._fail_response(rec, Fail(400, body=_error_body(400, problem)))

        body = rec.json
        stream = bool(body.get("stream"))
        if path == "/v1/chat/completions":
            kind = "chat"
        elif path == "/v1/completions":
            kind = "completion"
        elif path == "/v1/responses":
            kind = "responses"
        elif path == "/v1/embeddings":
            return await self._embeddings(request, rec, behaviour)
        else:
            return self._json(rec, {"path": path, "model": body.get("model")})

        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        content = self._content_for(behaviour, ok)
        pieces = content_pieces(content)
        if isinstance(behaviour, BigStream):
            pieces = ["x" * max(1, behaviour.chunk_bytes)] * behaviour.chunks
            content = "".join(pieces)
        usage = {
            "prompt_tokens": ok.prompt_tokens
            if ok.prompt_tokens is not None
            else prompt_tokens_for(path, body),
            "completion_tokens": ok.completion_tokens
            if ok.completion_tokens is not None
            else len(pieces),
            "cached_tokens": ok.cached_tokens,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        rec.usage = usage
        rec.content = content
        model = str(body.get("model", ""))

        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if not stream:
            if kind == "chat":
                doc = _chat_response(model, content, usage)
            elif kind == "completion":
                doc = _completion_response(model, content, usage)
            else:
                doc = _responses_response(model, content, usage)
            if isinstance(behaviour, DieMidStream):
                return await self._die_mid_body(request, rec, doc, behaviour.delay)
            return self._json(rec, doc, extra=ok.headers)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if kind == "chat":
            events = _chat_stream(model, pieces, usage, include_usage)
        elif kind == "completion":
            events = _completion_stream(model, pieces, usage, include_usage)
        else:
            events = _responses_stream(model, pieces, usage)
        return await self._stream(request, rec, behaviour, ok, events)

    def _content_for(self, behaviour: Behaviour, ok: Ok) -> str:
        if ok.content is not None:
            return ok.content
        base = f"Hello from {self.name}"
        if isinstance(behaviour, DieMidStream | Hang):
            extra = (behaviour.after_chunks or 0) + 6
            base += "".join(f" w{i}" for i in range(extra))
        return base

    async def _embeddings(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = rec.json
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        inp = body.get("input", "")
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        dims = int(body.get("dimensions") or 8)
        fmt = body.get("encoding_format") or "float"
        data = []
        for i, item in enumerate(items):
            vec = embedding_for(item if isinstance(item, str) else _dumps(item), dims)
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        prompt = (
            ok.prompt_tokens if ok.prompt_tokens is not None else prompt_tokens_for(rec.path, body)
        )
        rec.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "total_tokens": prompt,
        }
        doc = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        if isinstance(behaviour, DieMidStream):
            return await self._die_mid_body(request, rec, doc, behaviour.delay)
        return self._json(rec, doc, extra=ok.headers)

    def _models_body(self) -> dict:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "openai"}
                for m in self.models
            ],
        }

    # ------------------------------------------------------------------ response writers

    def _headers(self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None):
        headers = {
            "content-type": content_type,
            "x-request-id": rec.response_request_id,
            "openai-processing-ms": "7",
            "openai-version": "2020-10-01",
            "openai-organization": "fake-org",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-tokens": "2ms",
        }
        if extra:
            headers.update(extra)
        return headers

    def _json(self, rec: Recorded, doc: Any, *, status: int = 200, extra: dict | None = None):
        rec.status = status
        rec.completed = True
        rec.response_body = _dumps(doc).encode()
        return web.Response(
            status=status,
            body=rec.response_body,
            headers=self._headers(rec, JSON_CONTENT_TYPE, extra),
        )

    def _fail_response(self, rec: Recorded, fail: Fail) -> web.Response:
        body = fail.body
        if body is None:
            body = _error_body(fail.status)
        if isinstance(body, dict):
            raw = _dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body
        headers = self._headers(rec, JSON_CONTENT_TYPE)
        if fail.status == 429:
            headers["x-ratelimit-remaining-requests"] = "0"
            if fail.retry_after is not None:
                headers["retry-after"] = fail.retry_after
        if fail.headers:
            headers.update(fail.headers)
        rec.status = fail.status
        rec.completed = True
        rec.response_body = raw
        return web.Response(status=fail.status, body=raw, headers=headers)

    async def _stream(
        self,
        request: BaseRequest,
        rec: Recorded,
        behaviour: Behaviour,
        ok: Ok,
        events: list[bytes],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200, headers=self._headers(rec, SSE_CONTENT_TYPE, ok.headers)
        )
        rec.status = 200
        try:
            await resp.prepare(request)
            limit = None
            if isinstance(behaviour, DieMidStream | Hang):
                limit = behaviour.after_chunks
            for i, ev in enumerate(events):
                if limit is not None and i >= limit:
                    break
                if i and ok.chunk_delay:
                    await asyncio.sleep(ok.chunk_delay)
                await resp.write(ev)
                if not isinstance(behaviour, BigStream):
                    rec.response_body += ev
                if isinstance(behaviour, BigStream):
                    behaviour.bytes_written += len(ev)
                    behaviour.chunks_written += 1
            if isinstance(behaviour, DieMidStream):
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                self._kill_transport(request, rst=behaviour.rst)
                raise _ClientGone
            if isinstance(behaviour, Hang):
                await self._wait_client_gone(request)
                raise _ClientGone
            await resp.write_eof()
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone from exc
        if isinstance(behaviour, BigStream):
            behaviour.finished = True
        rec.completed = True
        return resp

    async def _die_mid_body(self, request: BaseRequest, rec: Recorded, doc: Any, delay: float):
        raw = _dumps(doc).encode()
        resp = web.StreamResponse(status=200, headers=self._headers(rec, JSON_CONTENT_TYPE))
        resp.content_length = len(raw)
        rec.status = 200
        try:
            await resp.prepare(request)
            await resp.write(raw[: len(raw) // 2])
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


# --------------------------------------------------------------------------- wire format


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None) -> dict:
    """OpenAI's error JSON for a status."""
    etype, code = _ERROR_TYPES.get(status, ("server_error", None))
    if message is None:
        message = {
            429: "Rate limit reached for requests. Please try again in 1s.",
            500: "The server had an error while processing your request. Sorry about that!",
            502: "Bad gateway.",
            503: "The engine is currently overloaded, please try again later",
        }.get(status, f"fake upstream error {status}")
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _validate(path: str, body: dict) -> str | None:
    """The few request checks the real API makes that a gateway could trip over."""
    needs_model = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
    if path in needs_model and (not isinstance(body.get("model"), str) or not body.get("model")):
        return "you must provide a model parameter"
    so = body.get("stream_options")
    if so is not None:
        if path == "/v1/responses" and isinstance(so, dict) and "include_usage" in so:
            return "Unknown parameter: 'stream_options.include_usage'."
        if path in ("/v1/chat/completions", "/v1/completions") and not body.get("stream"):
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    if path == "/v1/embeddings" and body.get("stream"):
        return "Unknown parameter: 'stream'."
    return None


def _usage_obj(usage: dict[str, int]) -> dict:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_response(model: str, content: str, usage: dict[str, int]) -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage_obj(usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake0001",
    }


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def _chat_stream(
    model: str, pieces: list[str], usage: dict[str, int], include_usage: bool
) -> list[bytes]:
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]

    def chunk(delta: dict, finish: str | None) -> dict:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None
        return obj

    events = [_sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += [_sse(chunk({"content": p}, None)) for p in pieces]
    events.append(_sse(chunk({}, "stop")))
    if include_usage:
        events.append(
            _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake0001",
                    "choices": [],
                    "usage": _usage_obj(usage),
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _completion_response(model: str, content: str, usage: dict[str, int]) -> dict:
    return {
        "id": "cmpl-" + uuid.uuid4().hex[:24],
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "choices": [{"text": content, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }


def _completion_stream(
    model: str, pieces: list[str], usage: dict[str, int], include_usage: bool
) -> list[bytes]:
    cid = "cmpl-" + uuid.uuid4().hex[:24]

    def chunk(text: str, finish: str | None) -> dict:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": CREATED,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            obj["usage"] = None
        return obj

    events = [_sse(chunk(p, None)) for p in pieces]
    events.append(_sse(chunk("", "stop")))
    if include_usage:
        events.append(
            _sse(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "choices": [],
                    "model": model,
                    "system_fingerprint": None,
                    "usage": {
                        "prompt_tokens": usage["prompt_tokens"],
                        "completion_tokens": usage["completion_tokens"],
                        "total_tokens": usage["total_tokens"],
                    },
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _responses_usage(usage: dict[str, int]) -> dict:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def _response_obj(rid: str, model: str, status: str, output: list, usage: dict | None) -> dict:
    return {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message_item(mid: str, text: str, status: str) -> dict:
    return {
        "id": mid,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
    }


def _responses_response(model: str, content: str, usage: dict[str, int]) -> dict:
    rid = "resp_" + uuid.uuid4().hex
    mid = "msg_" + uuid.uuid4().hex
    return _response_obj(
        rid, model, "completed", [_message_item(mid, content, "completed")], _responses_usage(usage)
    )


def _responses_stream(model: str, pieces: list[str], usage: dict[str, int]) -> list[bytes]:
    rid = "resp_" + uuid.uuid4().hex
    mid = "msg_" + uuid.uuid4().hex
    text = "".join(pieces)
    seq = 0
    events: list[bytes] = []

    def ev(etype: str, payload: dict) -> None:
        nonlocal seq
        obj = {"type": etype, "sequence_number": seq, **payload}
        seq += 1
        events.append(f"event: {etype}\ndata: {_dumps(obj)}\n\n".encode())

    ev("response.created", {"response": _response_obj(rid, model, "in_progress", [], None)})
    ev("response.in_progress", {"response": _response_obj(rid, model, "in_progress", [], None)})
    item = {
        "id": mid,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    ev("response.output_item.added", {"output_index": 0, "item": item})
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    ev(
        "response.content_part.added",
        {"item_id": mid, "output_index": 0, "content_index": 0, "part": part},
    )
    for p in pieces:
        ev(
            "response.output_text.delta",
            {"item_id": mid, "output_index": 0, "content_index": 0, "delta": p, "logprobs": []},
        )
    ev(
        "response.output_text.done",
        {"item_id": mid, "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
    )
    ev(
        "response.content_part.done",
        {
            "item_id": mid,
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": text},
        },
    )
    done_item = _message_item(mid, text, "completed")
    ev("response.output_item.done", {"output_index": 0, "item": done_item})
    ev(
        "response.completed",
        {"response": _response_obj(rid, model, "completed", [done_item], _responses_usage(usage))},
    )
    return events


def closed_port() -> int:
    """A local TCP port with nothing listening (bind, read the port, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
