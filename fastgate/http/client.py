"""ClientProtocol: one per downstream connection.

httptools parses the request; callbacks only record (they never raise into the
loop: a protocol violation becomes a 4xx and a close). Complete requests queue
in order (pipelining) and are handed, one at a time, to the app's dispatcher,
which answers through `write` / `finish`. Backpressure: when this transport's
write buffer passes its high-water mark the active exchange is told to stop
reading its upstream, and told again when it drains.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from fastgate import errors
from fastgate.http.cork import LIMIT as CORK_LIMIT
from fastgate.http.cork import WriteQueue
from fastgate.http.flow import PIPELINE, WRITE_HIGH, WRITE_LOW, ReadGate
from fastgate.http.head import RequestHead
from fastgate.http.responses import CONTINUE_100, simple_response
from fastgate.http.upload import Upload
from fastgate.vocab.headers import REQUEST_DROP, REQUEST_ROLES, request_role

if TYPE_CHECKING:
    from fastgate.app import App
    from fastgate.http.interfaces import ClientExchange

MAX_PIPELINE = 16

# Connection states, for the timeout sweeper.
IDLE, READING, ACTIVE, CLOSED = 0, 1, 2, 3


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing after a local error."""


class ClientProtocol(asyncio.Protocol):
    __slots__ = (
        "app",
        "body_parts",
        "body_size",
        "body_timeout",
        "client_ip",
        "deadline",
        "exchange",
        "fed_complete",
        "gate",
        "hdr_bytes",
        "head",
        "head_size",
        "header_timeout",
        "headers_done",
        "keepalive_timeout",
        "lingering",
        "max_body_bytes",
        "max_header_bytes",
        "owed",
        "parser",
        "queue",
        "state",
        "transport",
        "upload",
        "url",
        "write_paused",
        "writes",
    )

    def __init__(self, app: App) -> None:
        self.app = app
        # Config values this connection uses, copied once (a reload applies to
        # connections made after it), so that callbacks read one attribute.
        srv = app.cfg.server
        self.max_header_bytes: int = srv.max_header_bytes
        self.max_body_bytes: int = srv.max_body_bytes
        self.header_timeout: float = srv.header_timeout
        self.body_timeout: float = srv.body_timeout
        self.keepalive_timeout: float = srv.keepalive_timeout
        self.transport: asyncio.Transport | None = None
        # The loop's write queue (http/cork.py): answers leave at the end of the
        # loop's iteration, together with the other writes of that iteration.
        self.writes: WriteQueue = app.pool.writes
        self.parser = httptools.HttpRequestParser(self)
        # Bytes after a request that closes the connection are ignored, not an
        # error: that request is still served (RFC 9112 section 9.6).
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.queue: deque[RequestHead] = deque()
        self.exchange: ClientExchange | None = None
        self.head: RequestHead | None = None
        self.url = b""
        self.head_size = 0
        self.hdr_bytes = 0
        self.headers_done = False
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.write_paused = False
        self.fed_complete = False
        self.lingering = False
        self.owed: bytes | None = None  # an error answer due after the queued requests
        self.state = IDLE
        self.deadline = 0.0
        self.client_ip = ""
        self.gate: ReadGate | None = None
        self.upload: Upload | None = None  # the body being streamed now (http/upload.py)

    # -- connection lifecycle ------------------------------------------------

    def connection_made(
        self, transport: Any
    ) -> None:  # uvloop transports are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.gate = ReadGate(transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.app.clients.add(self)
        self.deadline = self.app.loop.time() + self.keepalive_timeout
        if self.app.stopping:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.deadline = 0.0
        self.app.clients.discard(self)
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()
        self.queue.clear()

    def eof_received(self) -> bool | None:
        # The client closed its side. With a request in flight that means it is
        # gone (as nginx reads it): cancel the upstream instead of computing an
        # answer nobody will read. Either way our side closes too (uvloop closes
        # the transport when this returns: what is queued for it leaves first).
        self.writes.flush()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()
        self.queue.clear()
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client_resumed()

    # -- incoming bytes --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.state == CLOSED:
            return
        self.fed_complete = False
        try:
            self.parser.feed_data(data)
        except _Abort:
            pass
        except httptools.HttpParserUpgrade:
            if self.queue:
                self.queue.pop()  # the upgrade request itself: it is the one refused
            self._reject(errors.InvalidRequest("protocol upgrade is not supported"))
        except httptools.HttpParserError as exc:
            self._reject(errors.InvalidRequest(f"malformed HTTP request: {exc}"))
        else:
            if self.head is not None and not self.headers_done and not self.fed_complete:
                # Still inside a head: bound what the parser is holding for us. (When
                # a request completed in this read, its bytes are not the new head's:
                # counting starts with the next read.)
                self.head_size += len(data)
                if self.head_size > self.max_header_bytes:
                    self._reject(
                        errors.HeadersTooLarge("request headers too large"), status_only=True
                    )
        # Complete requests are answered, also those before bytes that went bad.
        if self.queue and self.exchange is None:
            self._next()

    # httptools callbacks: record only.

    def on_message_begin(self) -> None:
        self.head = RequestHead()
        self.url = b""
        self.head_size = 0
        self.hdr_bytes = 0
        self.headers_done = False
        self.body_parts = []
        self.body_size = 0
        if self.state == IDLE:
            self.state = READING
            self.deadline = self.app.loop.time() + self.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        role = REQUEST_ROLES.get(name)
        if role is None:
            role = request_role(name)  # a spelling not seen before
        if not role:
            self.head.forward.extend((name, b": ", value, b"\r\n"))
        elif role is not REQUEST_DROP:
            setattr(self.head, role, value)  # a slot of RequestHead
        self.hdr_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        head = self.head
        if len(self.url) + self.hdr_bytes > self.max_header_bytes:
            self._reject(errors.HeadersTooLarge("request headers too large"), status_only=True)
            raise _Abort
        self.headers_done = True
        parser = self.parser
        head.method = parser.get_method()
        head.keep_alive = parser.should_keep_alive()
        head.http11 = parser.get_http_version() == "1.1"
        path, _, query = self.url.partition(b"?")
        head.path = path
        head.query = query
        if head.content_type[:10].lower() == b"multipart/" and head.content_length != b"0":
            # Not collected: forwarded as it arrives, however large (http/upload.py),
            # so the request is dispatched now.
            head.upload = self.upload = Upload(self.gate, not head.content_length)
            head.t0 = time.time()
            self.queue.append(head)
        elif head.content_length:
            try:
                n = int(head.content_length)
            except ValueError:
                self._reject(errors.InvalidRequest("bad content-length"))
                raise _Abort from None
            if n > self.max_body_bytes:
                self._reject(
                    errors.RequestTooLarge(f"request body over {self.max_body_bytes} bytes"),
                    status_only=True,
                )
                raise _Abort
        if head.expect:
            if head.expect.lower() != b"100-continue":
                self._reject(errors.FastgateError("unsupported expectation"), status=417)
                raise _Abort
            self.writes.write(self.transport, CONTINUE_100)
        # The body may take a while: from here body_timeout bounds each silence.
        self.deadline = self.app.loop.time() + self.body_timeout

    def on_body(self, body: bytes) -> None:
        up = self.upload
        if up is not None:  # streamed: straight on (or held until its upstream is there)
            up.feed(body)
            self.deadline = self.app.loop.time() + self.body_timeout
            return
        self.body_size += len(body)
        limit = self.max_body_bytes
        if self.body_size > limit:
            self._reject(
                errors.RequestTooLarge(f"request body over {limit} bytes"), status_only=True
            )
            raise _Abort
        self.body_parts.append(body)
        self.deadline = self.app.loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        head = self.head
        up = head.upload
        if up is not None:  # dispatched at its head already
            self.upload = None
            self.head = None
            self.headers_done = False
            self.head_size = 0
            self.fed_complete = True
            if self.state == ACTIVE:
                self.deadline = 0.0  # the exchange's timeouts from here
            up.end()
            return
        parts = self.body_parts
        head.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.body_parts = []
        head.t0 = time.time()
        self.head = None
        self.headers_done = False
        self.head_size = 0
        self.queue.append(head)
        self.fed_complete = True
        if len(self.queue) > MAX_PIPELINE:
            self.gate.pause(PIPELINE)

    # -- dispatch --------------------------------------------------------------

    def _next(self) -> None:
        while self.queue and self.exchange is None and self.state != CLOSED:
            head = self.queue.popleft()
            if self.gate.reasons and len(self.queue) <= MAX_PIPELINE // 2:
                self.gate.resume(PIPELINE)
            self.state = ACTIVE
            self.deadline = 0.0
            if head.upload is not None:
                head.upload.dispatched = True
                if not head.upload.ended:  # its body's silences are still timed
                    self.deadline = self.app.loop.time() + self.body_timeout
            self.app.dispatch(self, head)

    def write(self, data: bytes) -> None:
        if self.state != CLOSED:
            writes = self.writes  # queued: sent at the end of the loop's iteration
            pending = writes.pending
            if not pending:
                self.app.loop.call_soon(writes.flush)
            pending.append(self.transport)
            pending.append(data)
            writes.size += len(data)
            if writes.size > CORK_LIMIT:  # bulk: out now (backpressure as before)
                writes.flush()

    def finish(self, keep_alive: bool) -> None:
        """The active exchange has written its whole response (on a connection the
        client closed meanwhile, as an answer held for a budget's count can find
        it, there is nothing left to do)."""
        self.exchange = None
        if self.state == CLOSED:
            return
        up = self.upload
        if up is not None and up.dispatched:
            # Answered before its streamed body ended (an error, say): read the rest
            # for a moment, dropping it, so that the client can read the answer.
            up.discard()
            self._linger()
            return
        if not keep_alive or self.app.stopping:
            self.close()
            return
        if self.owed is not None and not self.queue:
            self._answer_and_linger(self.owed)  # the bad bytes' turn has come
            return
        if self.head is not None:
            # The next request's bytes have started arriving.
            self.state = READING
            self.deadline = self.app.loop.time() + self.header_timeout
        else:
            self.state = IDLE
            self.deadline = self.app.loop.time() + self.keepalive_timeout
        if self.queue:
            self._next()

    def close(self) -> None:
        if self.state != CLOSED and self.transport is not None:
            self.state = CLOSED
            self.deadline = 0.0
            self.writes.flush()  # queued answers leave before the close
            self.transport.close()

    # -- errors and timeouts -----------------------------------------------------

    def _reject(
        self, err: errors.FastgateError, *, status: int = 0, status_only: bool = False
    ) -> None:
        """Answer a protocol-level error and stop reading this connection.

        The response is written, our side is half-closed, and what the client is
        still sending is discarded for a moment (lingering close) so that it can
        read the answer instead of a reset.
        """
        if self.state == CLOSED or self.lingering:
            return
        self.app.metrics.count_status(status or err.status)
        rid = self.app.new_request_id()
        body = err.body("openai")
        answer = simple_response(status or err.status, body, request_id=rid, keep_alive=False)
        self.lingering = True  # read nothing more
        if self.exchange is not None or self.queue:
            # The bad bytes follow complete requests (pipelined, maybe in the same
            # read): those are answered first, in order; this answer comes after
            # them (`finish`), so no answer lands on the wrong request.
            self.owed = answer
            return
        self._answer_and_linger(answer)

    def _answer_and_linger(self, answer: bytes) -> None:
        """Write a closing error answer, half-close, and discard what the client
        still sends for a moment (lingering close)."""
        self.owed = None
        self.lingering = True
        self.queue.clear()
        self.writes.write(self.transport, answer)
        self.writes.flush()  # before the half-close
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            pass
        self.state = READING
        self.deadline = self.app.loop.time() + 1.0  # linger at most one second

    def _linger(self) -> None:
        """Half-close after the answer and discard what the client still sends, at
        most one second (the lingering close of `_reject`), then close."""
        self.lingering = True
        self.upload = None
        self.queue.clear()
        self.writes.flush()  # the answer leaves before the half-close
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            pass
        self.gate.resume(self.gate.reasons)
        self.state = READING
        self.deadline = self.app.loop.time() + 1.0

    def on_timeout(self, now: float) -> None:
        """Called by the sweeper when `deadline` has passed."""
        if self.state == CLOSED:
            return
        if self.state == ACTIVE and self.upload is not None:
            # A streamed body went silent: unless the gateway itself paused it
            # (backpressure), the client is gone; the exchange hears it as a 499.
            if self.gate.reasons:
                self.deadline = now + self.body_timeout
            else:
                self.close()
            return
        if self.lingering or self.state == IDLE:
            self.close()
        elif self.state == READING:
            self._reject(errors.RequestTimeout("timed out reading the request"))
            self.close()
