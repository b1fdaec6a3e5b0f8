"""UpstreamProtocol and the process-wide pool of kept-alive upstream connections.

One UpstreamProtocol per upstream TCP (or TLS) connection. httptools' response
parser does the framing (content-length, chunked, or until close); each parsed
event goes straight to the connection's current consumer (the gateway's
Exchange) which forwards body bytes to its client as they arrive. A connection
goes back to the pool only after a clean end of a keep-alive response.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from fastgate.http.cork import LIMIT as CORK_LIMIT
from fastgate.http.cork import WriteQueue
from fastgate.http.flow import PEER_SLOW, WRITE_HIGH, WRITE_LOW, ReadGate
from fastgate.vocab.headers import RESPONSE_KIND_OF, response_kind

if TYPE_CHECKING:
    from fastgate.http.interfaces import UpstreamConsumer

# Failure kinds an exchange is told about.
CONNECT_FAILED = "connect_failed"
CONNECT_TIMEOUT = "connect_timeout"
FIRST_BYTE_TIMEOUT = "first_byte_timeout"
IDLE_TIMEOUT = "idle_timeout"
RESET = "reset"  # the connection ended before the response did
BAD_RESPONSE = "bad_response"

log = logging.getLogger("fastgate.upstream")

TIMEOUT_KINDS = frozenset({CONNECT_TIMEOUT, FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT})

# Response headers handled specially on their way to the client, by kind (the
# vocabulary's table, read through its memo of spellings): 0 = forwarded, 1 =
# dropped (hop-by-hop, or redone by the gateway), 2 = content-length, 3 = the
# upstream's request id, 4 = content-type (forwarded, and tells an SSE stream), 5
# = retry-after (forwarded, and remembered on a 429), 6 = transfer-encoding
# (dropped; the response is framed), 7 = a rate-limit header (forwarded, and kept).
_KIND_OF = RESPONSE_KIND_OF
_SSE = b"text/event-stream"

# What the sweeper is timing on a connection.
T_NONE, T_FIRST_BYTE, T_IDLE, T_POOLED = 0, 1, 2, 3


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "body_open",
        "closed",
        "consumer",
        "content_length",
        "deadline",
        "eof_framed",
        "exhausted",
        "first_byte_timeout",
        "forward",
        "framed",
        "gate",
        "got_bytes",
        "idle_timeout",
        "key",
        "limits",
        "parser",
        "pool",
        "request_id",
        "retry_after",
        "reusable",
        "sse",
        "status",
        "timing",
        "transport",
        "used",
    )

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.consumer: UpstreamConsumer | None = None
        self.forward: list[bytes] = []  # name, ": ", value, CRLF pieces for the client
        self.content_length = b""
        self.request_id = b""
        self.retry_after = b""
        self.limits: list[tuple[bytes, bytes]] | None = None  # rate-limit headers, if any
        self.exhausted = False  # one of them says a budget's remaining is 0
        self.sse = False
        self.framed = False
        self.status = 0
        self.deadline = 0.0
        self.timing = T_NONE
        self.idle_timeout = 120.0
        self.got_bytes = False
        self.reusable = False
        self.eof_framed = False
        self.used = 0  # responses completed on this connection
        self.closed = False
        self.gate: ReadGate | None = None
        self.body_open = False  # a streamed request body is still being written
        self.first_byte_timeout = 0.0

    # -- lifecycle -------------------------------------------------------------

    def connection_made(
        self, transport: Any
    ) -> None:  # uvloop transports are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.gate = ReadGate(transport)
        self.parser = httptools.HttpResponseParser(self)
        self.pool.all.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        consumer = self.consumer
        if consumer is None:
            return
        self.consumer = None
        self.timing = T_NONE
        if self.status and self.eof_framed and exc is None:
            # Response framed by connection close: EOF is its end (a reset is not).
            consumer.up_complete(self)
        else:
            consumer.up_error(self, RESET, exc)

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def pause_writing(self) -> None:
        if self.consumer is not None:
            self.consumer.upstream_paused()

    def resume_writing(self) -> None:
        if self.consumer is not None:
            self.consumer.upstream_resumed()

    # -- one request/response -----------------------------------------------------

    def send(
        self,
        consumer: UpstreamConsumer,
        data: bytes,
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> None:
        """Write a whole request (head and body coalesced) and await its response.

        The response parser is the connection's own (made once in
        `connection_made`): httptools starts the next message after a complete one."""
        self.consumer = consumer
        self.forward = []
        self.content_length = b""
        self.request_id = b""
        self.retry_after = b""
        self.limits = None
        self.exhausted = False
        self.sse = False
        self.framed = False
        self.status = 0
        self.got_bytes = False
        self.reusable = False
        self.eof_framed = False
        self.idle_timeout = idle_timeout
        self.first_byte_timeout = first_byte_timeout
        self.timing = T_FIRST_BYTE
        pool = self.pool
        self.deadline = pool.loop.time() + first_byte_timeout
        writes = pool.writes  # queued, sent at the end of the loop's iteration (http/cork.py)
        pending = writes.pending
        if not pending:
            pool.loop.call_soon(writes.flush)
        pending.append(self.transport)
        pending.append(data)
        writes.size += len(data)
        if writes.size > CORK_LIMIT:  # a large request body: out now
            writes.flush()

    def write_body(self, data: bytes) -> None:
        """More of the request body after its head (`http.upload`): the wait for
        the first response byte counts from the last byte sent."""
        if self.closed:
            return
        if data:
            self.pool.writes.write(self.transport, data)
        if self.timing == T_FIRST_BYTE:
            self.deadline = self.pool.loop.time() + self.first_byte_timeout

    def end_body(self, tail: bytes) -> None:
        """The streamed request body is complete (`tail`: its last framing, if any)."""
        self.body_open = False
        self.write_body(tail)

    def data_received(self, data: bytes) -> None:
        consumer = self.consumer
        if consumer is None:
            # Bytes nobody asked for on an idle connection: it is not clean.
            self.abort()
            return
        self.got_bytes = True
        self.timing = T_IDLE
        self.deadline = self.pool.loop.time() + self.idle_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.consumer is not None:
                self.consumer = None
                self.abort()
                consumer.up_error(self, BAD_RESPONSE, exc)
            return
        if self.consumer is not None:
            consumer.up_flush()

    # httptools callbacks

    def _reset_head(self) -> None:
        self.forward = []
        self.content_length = b""
        self.request_id = b""
        self.retry_after = b""
        self.limits = None
        self.exhausted = False
        self.sse = False
        self.framed = False
        self.status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _KIND_OF.get(name)
        if kind is None:
            kind = response_kind(name)  # a spelling not seen before
        if not kind:
            self.forward.extend((name, b": ", value, b"\r\n"))
        elif kind == 2:
            self.content_length = value
            self.framed = True
        elif kind == 6:
            self.framed = True
        elif kind == 3:
            self.request_id = value
        elif kind == 4:
            self.sse = value.startswith(_SSE)
            self.forward.extend((name, b": ", value, b"\r\n"))
        elif kind == 5:
            self.retry_after = value
            self.forward.extend((name, b": ", value, b"\r\n"))
        elif kind == 7:
            self.forward.extend((name, b": ", value, b"\r\n"))
            lname = name.lower()
            if self.limits is None:
                self.limits = [(lname, value)]
            else:
                self.limits.append((lname, value))
            if value == b"0" and b"remaining" in lname:
                self.exhausted = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = status = parser.get_status_code()
        if status < 200:
            # 1xx interim response: httptools will parse the real one next.
            self._reset_head()
            return
        self.reusable = parser.should_keep_alive()
        self.eof_framed = not self.framed and status not in (204, 304)
        if self.eof_framed:
            self.reusable = False
        self.consumer.up_headers(self, status)

    def on_body(self, body: bytes) -> None:
        if self.consumer is not None:
            self.consumer.up_body(body)

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # end of a 1xx
        consumer = self.consumer
        if consumer is None:
            return
        self.consumer = None
        self.timing = T_NONE
        self.used += 1
        consumer.up_complete(self)

    # -- control -----------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.gate is not None:
            self.gate.pause(PEER_SLOW)

    def resume_reading(self) -> None:
        if self.gate is not None:
            self.gate.resume(PEER_SLOW)

    def abort(self) -> None:
        """Close now, dropping buffers: the response is not wanted any more."""
        self.consumer = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.pool.forget(self)
            self.transport.abort()
        self.timing = T_NONE

    def on_timeout(self, now: float) -> None:
        timing = self.timing
        if timing == T_POOLED:
            self.abort()
            return
        consumer = self.consumer
        self.abort()
        if consumer is not None:
            consumer.up_error(
                self, FIRST_BYTE_TIMEOUT if timing == T_FIRST_BYTE else IDLE_TIMEOUT, None
            )


class _Origin:
    __slots__ = ("busy", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: deque[UpstreamProtocol] = deque()
        self.busy = 0  # connections handed out or being opened
        self.waiters: deque[Callable[[], None]] = deque()


class Pool:
    """Kept-alive upstream connections per origin (scheme, host, port), bounded."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_per_origin: int = 512,
        keepalive: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.loop = loop
        # The loop's one write queue (http/cork.py): upstream requests here, client
        # answers too (App hands it to every ClientProtocol).
        self.writes = WriteQueue(loop)
        self.max_per_origin = max_per_origin
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.origins: dict[tuple[str, str, int], _Origin] = {}
        self.all: set[UpstreamProtocol] = set()
        self._ssl: ssl.SSLContext | None = None
        self.opened = 0

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()  # verification and hostname check on
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def take_idle(self, key: tuple[str, str, int]) -> UpstreamProtocol | None:
        """A kept-alive connection to `key` if one is idle (now counted busy), else None."""
        origin = self.origins.get(key)
        if origin is not None:
            idle = origin.idle
            while idle:
                conn = idle.pop()  # most recently used: least likely to be stale
                if not conn.closed:
                    conn.timing = T_NONE
                    origin.busy += 1
                    return conn
        return None

    def acquire(
        self,
        key: tuple[str, str, int],
        on_ready: Callable[[UpstreamProtocol], None],
        on_error: Callable[[str, BaseException | None], None],
        fresh: bool = False,
    ) -> Callable[[], None] | None:
        """Hand a connection to `on_ready` — now if one is idle, else when opened
        (`fresh`: always a new one; a streamed body cannot be sent twice, so it
        must not meet a kept-alive connection the upstream has closed meanwhile).

        Returns a cancel function while the hand-over is pending (None if it
        happened synchronously)."""
        origin = self.origins.get(key)
        if origin is None:
            origin = self.origins[key] = _Origin()
        idle = origin.idle
        while idle and not fresh:
            conn = idle.pop()  # most recently used: least likely to be stale
            if not conn.closed:
                conn.timing = T_NONE
                origin.busy += 1
                on_ready(conn)
                return None
        if origin.busy >= self.max_per_origin:
            cancelled = False

            def retry() -> None:
                if not cancelled:
                    self.acquire(key, on_ready, on_error, fresh)

            def cancel() -> None:
                nonlocal cancelled
                cancelled = True

            origin.waiters.append(retry)
            return cancel
        origin.busy += 1
        started = [False]
        task = self.loop.create_task(self._open(key, origin, on_ready, on_error, started))

        def cancel() -> None:
            task.cancel()
            if not started[0]:
                # Cancelled before its first step: `_open` will never run its own
                # release, so the slot is given back here.
                started[0] = True
                self._release_slot(origin)

        return cancel

    async def _open(
        self,
        key: tuple[str, str, int],
        origin: _Origin,
        on_ready: Callable[[UpstreamProtocol], None],
        on_error: Callable[[str, BaseException | None], None],
        started: list[bool],
    ) -> None:
        if started[0]:
            return  # cancelled (and its slot released) before this first step
        started[0] = True
        scheme, host, port = key
        try:
            async with asyncio.timeout(self.connect_timeout):
                if scheme == "https":
                    _, conn = await self.loop.create_connection(
                        lambda: UpstreamProtocol(self, key),
                        host,
                        port,
                        ssl=self.ssl_context(),
                        server_hostname=host,
                    )
                else:
                    _, conn = await self.loop.create_connection(
                        lambda: UpstreamProtocol(self, key), host, port
                    )
        except asyncio.CancelledError:
            self._release_slot(origin)
            raise
        except TimeoutError as exc:
            self._release_slot(origin)
            on_error(CONNECT_TIMEOUT, exc)
            return
        except OSError as exc:
            self._release_slot(origin)
            on_error(CONNECT_FAILED, exc)
            return
        except Exception as exc:  # a bug must fail the attempt, never hang it
            log.exception("opening a connection to %s://%s:%d failed", scheme, host, port)
            self._release_slot(origin)
            on_error(CONNECT_FAILED, exc)
            return
        self.opened += 1
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        on_ready(conn)

    def _release_slot(self, origin: _Origin) -> None:
        origin.busy -= 1
        if origin.waiters:
            self.loop.call_soon(origin.waiters.popleft())

    def release(self, conn: UpstreamProtocol) -> None:
        """A response ended cleanly: keep the connection for the next request."""
        origin = self.origins.get(conn.key)
        if origin is None:
            conn.abort()
            return
        if conn.closed or not conn.reusable or conn.gate.reasons or conn.body_open:
            self.discard(conn)  # (body_open: a response came before the upload ended)
            return
        origin.busy -= 1
        conn.timing = T_POOLED
        conn.deadline = self.loop.time() + self.keepalive
        origin.idle.append(conn)
        if origin.waiters:
            self.loop.call_soon(origin.waiters.popleft())

    def discard(self, conn: UpstreamProtocol) -> None:
        """The exchange is done with a connection that is not reusable."""
        origin = self.origins.get(conn.key)
        conn.abort()
        if origin is not None:
            self._release_slot(origin)

    def forget(self, conn: UpstreamProtocol) -> None:
        """Drop a closed connection from the idle list (slot accounting is separate)."""
        self.all.discard(conn)
        origin = self.origins.get(conn.key)
        if origin is not None and conn.timing == T_POOLED:
            try:
                origin.idle.remove(conn)
            except ValueError:
                pass

    def close_all(self) -> None:
        for conn in list(self.all):
            conn.abort()
