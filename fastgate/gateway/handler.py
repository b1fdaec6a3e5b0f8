"""A request's life on the general path: auth -> route -> attempts -> respond -> account.

`Exchange` is driven by callbacks, not a task. The client protocol hands it a
complete request; it authenticates and routes from the snapshot (no I/O),
asks the pool for an upstream connection, writes the request in one write,
then receives the upstream's parsed response events and forwards bytes to the
client as they arrive, writing once per upstream read. Failover happens while
no byte has reached the client; after that an upstream failure ends the
response with an error event (or a cut connection).

The exchange is a state machine (`states.py`: the states and the one table of
legal moves) over four small parts, each owning its own fields:
- `context.RequestContext`: what was asked (key, ingress, body, model, stream);
- `attempts.Attempts`: the candidates, failures, current channel and connection;
- `writer.ResponseWriter`: the client's response and the one ending sequence;
- `transform.Transform`: passthrough with a usage scanner, stream conversion,
  or collect-and-convert.
Every callback from the transport catches what it did not expect (a bug, an
illegal move), logs it and answers 500 or cuts the response: never the loop.
The fast path (`fast.py`) hands unusual events over with `Exchange.adopt`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fastgate import errors
from fastgate.convert import UpstreamProtocolError
from fastgate.gateway import cache as response_cache
from fastgate.gateway import protocols
from fastgate.gateway.admission import admit, ops_response
from fastgate.gateway.attempts import WAIT, Attempts
from fastgate.gateway.context import OPENAI_INGRESS, RequestContext
from fastgate.gateway.converting import collect_complete, conv_failed, convert_head
from fastgate.gateway.outbound import other_request
from fastgate.gateway.parts import ExchangeParts
from fastgate.gateway.passthrough import FILE_CONTENT, PASSTHROUGH
from fastgate.gateway.passthrough import PLAIN_INGRESS as UNREAD  # answers not read for usage
from fastgate.gateway.routing import attempt_plan
from fastgate.gateway.states import (
    CONNECTING,
    DONE,
    FAILED_OVER,
    RECEIVING,
    ROUTING,
    SENT,
    STREAMING,
)
from fastgate.gateway.transform import COLLECT, SCAN, Transform
from fastgate.gateway.writer import ResponseWriter, without_rate_headers
from fastgate.http import upstream as up
from fastgate.http.flow import PEER_SLOW
from fastgate.http.head import RequestHead
from fastgate.http.responses import STATUS_LINE, status_line
from fastgate.providers import openai as openai_proto
from fastgate.vocab.protocols import stream_ended
from fastgate.vocab.usage import Usage

if TYPE_CHECKING:
    from fastgate.app import App
    from fastgate.http.interfaces import ClientSink

log = logging.getLogger("fastgate.gateway")

__all__ = ["OPENAI_INGRESS", "Exchange"]


class Exchange(ExchangeParts):
    """Implements `http.interfaces.UpstreamConsumer` and `ClientExchange`."""

    __slots__ = ()

    def __init__(
        self, app: App, client: ClientSink, head: RequestHead, request_id: bytes = b""
    ) -> None:
        self.state = ROUTING  # Machine.__init__, inline
        self.app = app
        self.client = client
        rid = request_id or head.request_id or app.new_request_id()
        self.ctx = RequestContext(head, rid)
        self.attempts = Attempts()
        self.writer = ResponseWriter(app, client, head, rid)
        self.transform: Transform | None = None
        self.cache: response_cache.Capture | None = None

    @classmethod
    def adopt(
        cls,
        app: App,
        client: ClientSink,
        ctx: RequestContext,
        attempts: Attempts,
        writer: ResponseWriter,
        scanner: Any,
        sent: bool,
        previous: Any,
    ) -> Exchange:
        """Take over a request another exchange (the fast path's) started: its
        context, attempt and response so far. Becomes the client's exchange
        and, where `previous` was, the connection's consumer."""
        self = cls.__new__(cls)
        self.app = app
        self.client = client
        self.ctx = ctx
        self.attempts = attempts
        self.writer = writer
        self.cache = None
        conn = attempts.conn
        if sent:
            self.state = STREAMING
        elif writer.status:
            self.state = RECEIVING
        else:
            self.state = SENT if conn is not None else CONNECTING
        self.transform = Transform.adopt(scanner) if writer.status else None
        client.exchange = self
        if conn is not None and getattr(conn, "consumer", None) is previous:
            conn.consumer = self
        return self

    # -- start ----------------------------------------------------------------

    def start(self) -> None:
        """Authenticate, route and send the first attempt (or answer locally)."""
        self.client.exchange = self
        app = self.app
        app.inflight += 1
        try:
            ctx = self.ctx
            if ctx.head.method == b"GET":
                if ctx.head.path == b"/metrics" and app.siblings is not None:
                    app.siblings.metrics(self.respond_later)  # every worker's numbers
                    return
                local = ops_response(app, ctx)
                if local is not None:
                    self.respond(*local)
                    return
            order = admit(app, ctx, self.attempts.order)
            if ctx.pending is not None:
                app.spawn(self._admitted_later(order))
                return
            self._routed(order)
        except errors.FastgateError as err:
            self.local_error(err)
        except Exception:
            self._crash()

    def _routed(self, order: list[Any] | None) -> None:
        """Admitted: answer a local token count, or send the first attempt."""
        ctx = self.ctx
        self.writer.extra_head = ctx.rate_headers
        if order is None:  # a token count no channel of its kind can do: estimate here
            self.respond(200, protocols.count_tokens_locally(self))
            return
        att = self.attempts
        att.plan = attempt_plan(order, self.app.cfg.routing.max_attempts)
        if (ctx.head.cache or ctx.token.cache) and ctx.model and response_cache.begin(self):
            return  # answered from the cache, or waiting for its lookup
        self.attempt()

    async def _admitted_later(self, order: list[Any] | None) -> None:
        """The admission's round trip (shared limits), then on as `start` would."""
        ctx = self.ctx
        pending, ctx.pending = ctx.pending, None
        try:
            headers, ticket = await pending
        except errors.FastgateError as err:
            self.local_error(err)  # does nothing if the client left meanwhile
            return
        except Exception:
            self._crash()
            return
        if self.state is DONE:  # the client left while we waited: give the slot back
            self.app.limits.done(ctx.token, 0, ticket)
            return
        ctx.rate_headers = headers
        ctx.limited = ticket
        try:
            self._routed(order)
        except errors.FastgateError as err:
            self.local_error(err)
        except Exception:
            self._crash()

    # -- attempts ---------------------------------------------------------------

    def attempt(self) -> None:
        """Send the request to the next candidate, or give up with the right error."""
        att = self.attempts
        ctx = self.ctx
        ch = att.pick(self.app, ctx.model)
        if ch is None:
            self.local_error(att.give_up_error(ctx.model, ctx.request_id))
            return
        if ch is WAIT:
            self.app.spawn(self._channel_later())
            return
        self._send(ch)

    async def _channel_later(self) -> None:
        """A channel's shared rpm window answered: use the channel, or the next one."""
        att = self.attempts
        ch, allowed = att.waiting
        att.waiting = None
        try:
            ok = await allowed
        except Exception:
            log.exception("channel rate limit check failed")
            ok = False
        if self.state is DONE:  # the client left meanwhile
            return
        try:
            if ok and att.use(self.app, ch, self.ctx.model, time.monotonic()) is not None:
                self._send(ch)
            else:
                if not ok:
                    att.skipped_open += 1
                self.attempt()
        except errors.FastgateError as err:
            self.local_error(err)
        except Exception:
            self._crash()

    def _send(self, ch: Any) -> None:
        """Send the request to `ch`, made current by `Attempts.pick`."""
        att = self.attempts
        ctx = self.ctx
        self._to(CONNECTING)
        if ctx.measure:  # the latency strategy: time this attempt to its response head
            att.sent = time.time()
        if att.count > 1:
            att.log_failover(ctx.request_id)
        self.writer.t_up = time.time()  # this attempt's upstream window (writer.py)
        convert = att.convert = ch.protocol != ctx.ingress.protocol
        if ch.is_mock:
            try:
                if convert:
                    protocols.hub_request(self)
                self.app.mock.serve(self, ch)  # refuses what its protocol cannot carry
            except errors.FastgateError as err:
                self.local_error(err)
                return
            self._to(SENT)
        else:
            att.cancel_acquire = self.app.pool.acquire(
                ch.origin, self.on_conn, self.on_conn_error, ctx.head.upload is not None
            )

    def on_conn(self, conn: Any) -> None:
        att = self.attempts
        att.cancel_acquire = None
        if self.state is DONE:
            self.app.pool.release(conn)
            return
        try:
            att.conn = conn
            ch = att.channel
            ctx = self.ctx
            head = ctx.head
            if not att.convert and ctx.ingress is OPENAI_INGRESS:
                # the channel type decides the URL (Azure: its deployment path)
                path, query = ch.kind.openai_target(
                    ch, att.model, att.upstream_model, head.path, head.query
                )
                body = openai_proto.edit_body(
                    head.body, ctx.obj, ctx.requested, att.upstream_model, ctx.inject
                )
                data = openai_proto.request_bytes(
                    ch, path, query, head.forward, body, head.content_type
                )
            else:
                try:
                    data = other_request(self, ch)
                except errors.FastgateError as err:
                    att.drop_conn(self.app, conn)
                    self.local_error(err)
                    return
            self._to(SENT)
            srv = self.app.cfg.server
            conn.send(self, data, ch.first_byte_timeout or srv.first_byte_timeout, srv.idle_timeout)
            if head.upload is not None:  # a streamed body follows its head
                head.upload.attach(conn)
        except Exception:
            self._crash()

    def on_conn_error(self, kind: str, exc: BaseException | None) -> None:
        self.attempts.cancel_acquire = None
        if self.state is DONE:
            return
        try:
            self.attempt_failed(kind)
        except Exception:
            self._crash()

    def attempt_failed(self, kind: str) -> None:
        """The attempt failed before any byte reached the client: the next one."""
        self._to(FAILED_OVER)
        self.attempts.failed(self.app, kind, self.ctx.request_id)
        self.writer.reset()
        self.transform = None
        self.attempt()

    # -- upstream events (http.interfaces.UpstreamConsumer) ------------------------

    def up_headers(self, conn: Any, status: int) -> None:
        try:
            att = self.attempts
            if status == 429 or status >= 500 or status == 401 or status == 403:
                # 401/403: the channel's own credential is at fault, not the client's
                if status == 429:
                    self.app.note_limits(att.channel.name, status, conn)
                att.drop_conn(self.app, conn)
                self.attempt_failed(f"HTTP {status}")
                return
            self._to(RECEIVING)
            if conn.exhausted:  # served, but the channel's budget is spent: skip it a while
                self.app.note_limits(att.channel.name, status, conn)
            cap = self.cache
            if cap is not None:  # a new response: capture it from its start
                cap.reset()
            w = self.writer
            w.status = status
            w.t_first = time.time()
            if self.ctx.measure:  # the latency strategy's moving average
                self.app.latency.sample(att.channel.name, att.model, w.t_first - att.sent)
            att.breaker.success()
            attempts = self.app.metrics.attempts
            key = (att.channel.name, "ok")
            attempts[key] = attempts.get(key, 0) + 1
            w.upstream_request_id = rid = conn.request_id
            if att.convert:
                convert_head(self, conn, status)
                return
            ctx = self.ctx
            sse = conn.sse
            if cap is not None:
                cap.content_type = response_cache.content_type_of(conn.forward)
            parts = [
                STATUS_LINE.get(status) or status_line(status),
                *(
                    conn.forward
                    if conn.limits is None or not w.extra_head
                    else without_rate_headers(conn.forward)
                ),
                b"x-request-id: %b\r\n" % ctx.request_id,
            ]
            if rid:
                parts.append(b"x-upstream-request-id: %b\r\n" % rid)
            if status >= 400:  # held whole: key material is taken out (collect_complete)
                self.transform = tr = Transform.collecting()
                tr.head = parts
                return
            inject, ing = ctx.inject, ctx.ingress  # (a file's content: batch_billing.py)
            self.transform = (
                Transform.passthrough(
                    ing.protocol, 200 <= status < 300 and ing is not UNREAD, sse, inject
                )
                if ing is not FILE_CONTENT
                else Transform.file_content(self, status)
            )
            length = conn.content_length
            w.begin(parts, conn, length if length and not (sse and inject) else b"")
        except Exception:
            self._crash()

    def up_body(self, data: bytes) -> None:
        try:
            try:
                data = self.transform.feed(data)
            except UpstreamProtocolError as exc:
                conv_failed(self, exc)
                return
            if data:
                cap = self.cache
                if cap is not None:
                    cap.add(data)
                self.writer.frame(data)
        except Exception:
            self._crash()

    def up_flush(self) -> None:
        w = self.writer
        if w.out:
            try:
                if self.state is not STREAMING:
                    self._to(STREAMING)
                w.flush()
            except Exception:
                self._crash()

    def up_complete(self, conn: Any) -> None:
        try:
            self.attempts.conn = None
            w = self.writer
            if w.t_up:  # the upstream's part ends here (a collected body is converted after)
                w.up_s += time.time() - w.t_up
                w.t_up = 0.0
            tr = self.transform
            if tr.kind == COLLECT:
                collect_complete(self, conn)
                return
            if tr.kind >= SCAN:  # a stream scanner or converter may hold a last event
                try:
                    rest = tr.end()
                except UpstreamProtocolError as exc:
                    conv_failed(self, exc, conn)
                    return
                if rest:
                    if self.cache is not None:
                        self.cache.add(rest)
                    w.frame(rest)
            status = w.status
            self.complete(status, "" if status < 400 else f"upstream_{status}", conn)
        except Exception:
            self._crash()

    def up_error(self, conn: Any, kind: str, exc: BaseException | None) -> None:
        try:
            att = self.attempts
            app = self.app
            att.drop_conn(app, conn)
            state = self.state
            if state is DONE:
                return
            if state is not STREAMING:
                if kind == up.RESET and conn.used and not conn.got_bytes and not att.stale_retry:
                    # A kept-alive connection the upstream had closed: not the
                    # channel's fault; try once more on a fresh connection.
                    att.stale_retry = True
                    self._to(CONNECTING)
                    self.writer.reset()
                    self.writer.t_up = time.time()  # still this attempt's window
                    self.transform = None
                    att.cancel_acquire = app.pool.acquire(
                        att.channel.origin, self.on_conn, self.on_conn_error
                    )
                    return
                self.attempt_failed(kind)
                return
            # Bytes already reached the client: no failover. End the stream with an
            # error event in its format, or cut the connection if it is not a stream.
            att.failed_mid_response(app, kind, self.ctx.request_id)
            tr = self.transform
            tr.abort()
            w = self.writer
            msg = f"upstream failed mid-response: {kind}"
            ctx = self.ctx
            event = None
            if w.chunked and (tr.conv is not None or conn.sse):
                # (a passthrough JSON array, Gemini's stream without alt=sse, cut
                # mid-element cannot be mended with an SSE event: it is cut instead)
                event = tr.error_event(ctx.ingress.protocol, ctx.stream, msg)
            if event is not None:
                if tr.conv is None and w.mid_event():
                    # The upstream broke off inside an event whose first bytes went
                    # out: end that one, or the error would be glued into it.
                    event = b"\n\n" + event
                w.frame(event)
                self.complete(502, "upstream_error")
            else:
                w.force_close = True
                self.finish(502, "upstream_error")
        except Exception:
            self._crash()

    def upstream_paused(self) -> None:
        self.client.gate.pause(PEER_SLOW)

    def upstream_resumed(self) -> None:
        self.client.gate.resume(PEER_SLOW)

    # -- client events (http.interfaces.ClientExchange) ------------------------------

    def client_paused(self) -> None:
        self.writer.paused = True
        conn = self.attempts.conn
        if conn is not None:
            conn.pause_reading()

    def client_resumed(self) -> None:
        self.writer.paused = False
        conn = self.attempts.conn
        if conn is not None:
            conn.resume_reading()

    def client_lost(self) -> None:
        """The client went away: cancel the upstream request, bill what was used."""
        if self.state is DONE:
            return
        try:
            if self.ctx.head.method == b"GET" and self.ctx.ingress.kind != PASSTHROUGH:
                # an ops answer still being gathered
                self._to(DONE)
                self.app.inflight -= 1
                return
            att = self.attempts
            att.cancel(self.app)
            if att.breaker is not None and not self.writer.status:
                att.breaker.release_probe()
            if self.transform is not None:
                self.transform.abort()
            w = self.writer
            if w.status and stream_ended(self.ctx.ingress.protocol, w.last):
                # It left after its stream's end event: it had the whole answer (an
                # SDK may close as soon as it reads [DONE], before the last chunk).
                w.force_close = True
                if w.status == 200 and self.cache is not None:
                    response_cache.store(self)  # a whole answer: cacheable as well
                self.finish(w.status, "" if w.status < 400 else f"upstream_{w.status}")
            else:
                self.finish(499, "client_closed")
        except Exception:
            self._crash()

    # -- endings ---------------------------------------------------------------------------

    def respond(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        """A whole local response (ops endpoints, /v1/models): no usage record."""
        keep = self.writer.whole(status, body, content_type)
        self._to(DONE)
        app = self.app
        app.inflight -= 1
        app.metrics.count_status(status)
        self.client.finish(keep)

    def respond_later(self, status: int, body: bytes, content_type: bytes) -> None:
        """`respond` for an answer that took a moment (gathered from the sibling
        workers); nothing if the client left meanwhile."""
        if self.state is DONE:
            return
        try:
            self.respond(status, body, content_type)
        except Exception:
            self._crash()

    def local_error(self, err: errors.FastgateError) -> None:
        """An error the gateway answers itself, in the ingress protocol's shape."""
        if self.state is DONE:
            return
        w = self.writer
        w.out.clear()  # the whole answer replaces whatever was framed
        w.head_out = None
        recorded = self.ctx.head.method == b"POST" or self.ctx.ingress.kind == PASSTHROUGH
        keep = w.whole(
            err.status, err.body(self.ctx.ingress.protocol), extra=err.headers, hold=recorded
        )
        if recorded:
            self.finish(err.status, err.code)  # data-plane requests always leave a record
        else:
            self._to(DONE)
            app = self.app
            app.inflight -= 1
            app.metrics.count_status(err.status)
            self.client.finish(keep)

    def complete(self, status: int, error_code: str, release: Any = None) -> None:
        """End the request after the body's last bytes (framing terminated)."""
        self._to(DONE)
        cap = self.cache
        if cap is not None and status == 200 and not error_code:
            response_cache.store(self)
        self._end(status, error_code, release, True)

    def finish(self, status: int, error_code: str = "") -> None:
        """End the request without the body's pending bytes (its answer was written
        whole, or it is cut): account, hand the client connection back."""
        if self.state is DONE:
            return
        self._to(DONE)
        self.writer.out.clear()
        self._end(status, error_code)

    def _end(
        self, status: int, error_code: str, release: Any = None, terminate: bool = False
    ) -> None:
        """`ResponseWriter.end` with this exchange's usage, context and attempt."""
        tr = self.transform
        usage = tr.usage() if tr is not None else Usage()
        ctx = self.ctx
        token = ctx.token
        att = self.attempts
        snap = self.app.snapshot
        cap = self.cache
        model = att.model or ctx.model  # a router's: the member model that answered
        self.writer.end(
            status,
            error_code,
            usage,
            token,
            ctx.ingress.protocol,
            att.channel,
            model,
            att.upstream_model,
            ctx.stream,
            snap.prices.get(model),
            snap.group_ratio.get(token.group, 1_000_000) if token is not None else 1_000_000,
            att.count,
            ctx.limited,
            release,
            terminate,
            cap is not None and cap.hit,
            ctx.router,
        )

    def _crash(self) -> None:
        """A bug or an illegal transition: log it, answer 500 (nothing sent yet) or
        cut the response; stop the upstream. The event loop carries on."""
        state = self.state
        rid = self.ctx.request_id.decode("latin-1")
        log.exception("request %s failed in state %s", rid, state.name, extra={"request_id": rid})
        if state is DONE:
            return
        self.writer.force_close = True
        self.attempts.cancel(self.app)
        if state is STREAMING:
            self.finish(500, "internal_error")
        else:
            self.local_error(errors.FastgateError("internal error"))
