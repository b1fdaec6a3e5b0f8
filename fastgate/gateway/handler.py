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

import orjson

from fastgate import errors
from fastgate.convert import UpstreamProtocolError, convert_error_body
from fastgate.gateway import protocols
from fastgate.gateway.attempts import Attempts
from fastgate.gateway.auth import authenticate, check_model, presented_key
from fastgate.gateway.context import OPENAI_INGRESS, RequestContext
from fastgate.gateway.routing import attempt_plan
from fastgate.gateway.states import (
    CONNECTING,
    DONE,
    FAILED_OVER,
    RECEIVING,
    ROUTING,
    SENT,
    STREAMING,
    Machine,
    State,
)
from fastgate.gateway.transform import COLLECT, SCAN, Transform
from fastgate.gateway.writer import ResponseWriter
from fastgate.http import upstream as up
from fastgate.http.flow import PEER_SLOW
from fastgate.http.head import RequestHead
from fastgate.http.responses import STATUS_LINE, status_line
from fastgate.providers import openai as openai_proto

if TYPE_CHECKING:
    from fastgate.app import App
    from fastgate.http.interfaces import ClientSink

log = logging.getLogger("fastgate.gateway")

__all__ = ["OPENAI_INGRESS", "Exchange"]


class Exchange(Machine):
    """Implements `http.interfaces.UpstreamConsumer` and `ClientExchange`."""

    __slots__ = ("app", "attempts", "client", "ctx", "transform", "writer")

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
        ctx = self.ctx
        head = ctx.head
        try:
            path = head.path
            if head.method == b"GET":
                self._get(path)
                return
            if head.method != b"POST":
                raise errors.NotFound(
                    f"no route for {head.method.decode()} {path.decode('latin-1')}"
                )
            if path.startswith((b"/v1/messages", b"/v1beta/", b"/v1/models/")):
                ing = protocols.classify(path, head.query)
                if ing is not None:
                    ctx.ingress = ing
            elif not path.startswith(b"/v1/"):
                raise errors.NotFound(f"no route for POST {path.decode('latin-1')}")
            ing = ctx.ingress
            snap = app.snapshot
            key = presented_key(head, ing.protocol) or ing.query_key
            ctx.token = token = authenticate(snap, key)
            try:
                obj = orjson.loads(head.body)
            except orjson.JSONDecodeError as exc:
                raise errors.InvalidRequest(f"request body is not valid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise errors.InvalidRequest("request body must be a JSON object")
            if ing is OPENAI_INGRESS or ing.protocol == protocols.ANTHROPIC:
                requested = obj.get("model")
                ctx.stream = obj.get("stream") is True
            else:
                requested = ing.model
                ctx.stream = ing.kind == protocols.STREAM_GENERATE
            if not isinstance(requested, str) or not requested:
                raise errors.InvalidRequest("missing 'model' in request body")
            ctx.obj = obj
            ctx.requested = requested
            ctx.model = model = snap.resolve_model(requested)
            check_model(token, model, requested)
            route = snap.routes.get((token.group, model))
            if route is None:
                raise errors.ModelNotFound(
                    f"The model '{requested}' does not exist or is not available to this key"
                )
            if token.quota_micros >= 0:
                # Served while the quota left covers what this key's last request on
                # this model cost (the first needs only some quota left).
                left = app.quota_left(token)
                if left <= 0 or left < app.last_cost.get((token.name, model), 0):
                    raise errors.InsufficientQuota("quota exhausted for this API key")
            if token.limited:
                app.limits.admit(token)
                ctx.limited = True
            att = self.attempts
            order = att.order or route.order()
            if ing is OPENAI_INGRESS:
                asked = ctx.include_usage = openai_proto.client_asked_usage(obj)
                ctx.inject = openai_proto.needs_include_usage(path, obj, asked)
            elif ing.kind in (protocols.COUNT, protocols.COUNT_TOKENS):
                order = [c for c in order if c.protocol == ing.protocol]
                if not order:  # no channel of its kind can count: estimate here
                    self.respond(200, protocols.count_tokens_locally(self))
                    return
            att.plan = attempt_plan(order, app.cfg.routing.max_attempts)
            self.attempt()
        except errors.FastgateError as err:
            self.local_error(err)
        except Exception:
            self._crash()

    def _get(self, path: bytes) -> None:
        app = self.app
        if path == b"/health":
            self.respond(200, b'{"status":"ok"}')
        elif path == b"/ready":
            if app.ready:
                self.respond(
                    200,
                    orjson.dumps(
                        {
                            "status": "ready",
                            "snapshot": app.snapshot.version,
                            "pid": app.pid,
                            "store": "ok" if not app.store_error else "error: " + app.store_error,
                        }
                    ),
                )
            else:
                self.respond(503, b'{"status":"not ready"}')
        elif path == b"/metrics":
            self.respond(200, app.metrics.render(app), b"text/plain; version=0.0.4")
        elif path == b"/v1/models":
            token = authenticate(app.snapshot, presented_key(self.ctx.head, "openai"))
            self.respond(200, app.snapshot.models_body(token))
        else:
            raise errors.NotFound(f"no route for GET {path.decode('latin-1')}")

    # -- attempts ---------------------------------------------------------------

    def attempt(self) -> None:
        """Send the request to the next candidate, or give up with the right error."""
        att = self.attempts
        ctx = self.ctx
        ch = att.pick(self.app, ctx.model)
        if ch is None:
            self.local_error(att.give_up_error(ctx.model))
            return
        self._to(CONNECTING)
        convert = att.convert = ch.protocol != ctx.ingress.protocol
        if ch.is_mock:
            if convert:
                try:
                    protocols.hub_request(self)
                except errors.FastgateError as err:
                    self.local_error(err)
                    return
            self._to(SENT)
            self.app.mock.serve(self, ch)
        else:
            att.cancel_acquire = self.app.pool.acquire(ch.origin, self.on_conn, self.on_conn_error)

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
                path, query = head.path, head.query
                if ch.type == "azure":  # same protocol, its own URL scheme
                    path, query = protocols.azure_path(self, ch), b""
                body = openai_proto.edit_body(
                    head.body, ctx.obj, ctx.requested, att.upstream_model, ctx.inject
                )
                data = openai_proto.request_bytes(
                    ch, path, query, head.forward, body, head.content_type
                )
            else:
                try:
                    data = self.other_request(ch)
                except errors.FastgateError as err:
                    att.drop_conn(self.app, conn)
                    self.local_error(err)
                    return
            self._to(SENT)
            srv = self.app.cfg.server
            conn.send(self, data, ch.first_byte_timeout or srv.first_byte_timeout, srv.idle_timeout)
        except Exception:
            self._crash()

    def other_request(self, ch: Any) -> bytes:
        """Upstream request bytes for every case but OpenAI -> OpenAI passthrough."""
        head = self.ctx.head
        if not self.attempts.convert:
            target, body = protocols.passthrough_request(self, ch)
            forward = head.forward
            if ch.protocol == protocols.ANTHROPIC:  # the channel sets its own version
                forward = [
                    b"".join(forward[i : i + 4])
                    for i in range(0, len(forward), 4)
                    if forward[i].lower() != b"anthropic-version"
                ]
            extra: list[bytes] = []
        else:
            target, body, extra = protocols.converted_request(self, ch)
            forward = []
        return b"".join(
            (
                b"POST ",
                ch.path_prefix,
                target,
                b" HTTP/1.1\r\n",
                ch.static_headers,
                b"content-type: application/json\r\n",
                *forward,
                *extra,
                b"content-length: %d\r\n\r\n" % len(body),
                body,
            )
        )

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
        self.attempts.failed(self.app, kind)
        self.writer.reset()
        self.transform = None
        self.attempt()

    # -- upstream events (http.interfaces.UpstreamConsumer) ------------------------

    def up_headers(self, conn: Any, status: int) -> None:
        try:
            att = self.attempts
            if status == 429 or status >= 500:
                if status == 429:
                    self.app.note_rate_limited(att.channel.name, conn.retry_after)
                att.drop_conn(self.app, conn)
                self.attempt_failed(f"HTTP {status}")
                return
            self._to(RECEIVING)
            w = self.writer
            w.status = status
            w.t_first = time.time()
            att.breaker.success()
            attempts = self.app.metrics.attempts
            key = (att.channel.name, "ok")
            attempts[key] = attempts.get(key, 0) + 1
            w.upstream_request_id = rid = conn.request_id
            if att.convert:
                self._convert_headers(conn, status)
                return
            ctx = self.ctx
            sse = conn.sse
            parts = [
                STATUS_LINE.get(status) or status_line(status),
                *conn.forward,
                b"x-request-id: %b\r\n" % ctx.request_id,
            ]
            if rid:
                parts.append(b"x-upstream-request-id: %b\r\n" % rid)
            inject = ctx.inject
            self.transform = Transform.passthrough(
                ctx.ingress.protocol, 200 <= status < 300, sse, inject
            )
            length = conn.content_length
            w.begin(parts, conn, length if length and not (sse and inject) else b"")
        except Exception:
            self._crash()

    def _convert_headers(self, conn: Any, status: int) -> None:
        """Response head when converting: a stream converter, or collect the body."""
        ctx = self.ctx
        if 200 <= status < 300 and ctx.stream:
            try:
                conv = protocols.stream_processor(self, self.attempts.channel)
            except errors.FastgateError as err:
                self.attempts.drop_conn(self.app, conn)
                self.local_error(err)
                return
            self.transform = Transform.converting(conv)
            ctype = (
                b"application/json"
                if ctx.ingress.protocol == protocols.GEMINI and not ctx.ingress.alt_sse
                else b"text/event-stream; charset=utf-8"
            )
            parts = [
                status_line(status),
                b"content-type: %b\r\n" % ctype,
                b"cache-control: no-cache\r\nx-request-id: %b\r\n" % ctx.request_id,
            ]
            rid = self.writer.upstream_request_id
            if rid:
                parts.append(b"x-upstream-request-id: %b\r\n" % rid)
            self.writer.begin(parts, conn, b"")
        else:
            self.transform = Transform.collecting()  # whole body: JSON to convert, or an error

    def up_body(self, data: bytes) -> None:
        try:
            try:
                data = self.transform.feed(data)
            except UpstreamProtocolError as exc:
                self._conv_failed(exc)
                return
            if data:
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
            tr = self.transform
            if tr.kind == COLLECT:
                self._collect_complete(conn)
                return
            w = self.writer
            if tr.kind >= SCAN:  # a stream scanner or converter may hold a last event
                try:
                    rest = tr.end()
                except UpstreamProtocolError as exc:
                    self._conv_failed(exc, conn)
                    return
                if rest:
                    w.frame(rest)
            status = w.status
            self._to(DONE)
            code = "" if status < 400 else f"upstream_{status}"
            w.end(self, status, code, release=conn, terminate=True)
        except Exception:
            self._crash()

    def _collect_complete(self, conn: Any) -> None:
        """The whole body is here: convert it (or its error) and answer in one write."""
        if conn.key is not None:
            self.app.pool.release(conn)
        w = self.writer
        status = w.status
        tr = self.transform
        body = tr.collected()
        if body is None:
            self.local_error(errors.UpstreamError("upstream response too large to convert"))
            return
        if 200 <= status < 300:
            try:
                body, tr.conv_usage = protocols.convert_body(self, self.attempts.channel, body)
            except errors.FastgateError as err:
                self.local_error(err)
                return
            code = ""
        else:
            body = convert_error_body(body, status, self.ctx.ingress.protocol)
            code = f"upstream_{status}"
        rid = w.upstream_request_id
        w.whole(status, body, extra=((b"x-upstream-request-id", rid),) if rid else ())
        self.finish(status, code)

    def _conv_failed(self, exc: Exception, release: Any = None) -> None:
        """The upstream's stream could not be converted: end it with an error event."""
        att = self.attempts
        if att.conn is not None:
            att.drop_conn(self.app, att.conn)
        msg = f"upstream sent a malformed stream: {exc}"
        log.warning("request %s: %s", self.ctx.request_id.decode("latin-1"), msg)
        w = self.writer
        conv = self.transform.conv
        if conv is not None:
            w.frame(conv.error_event(msg, "server_error"))
        if not w.chunked:
            w.force_close = True
        self._to(DONE)
        w.end(self, 502, "upstream_error", release=release, terminate=True)

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
                    self.transform = None
                    att.cancel_acquire = app.pool.acquire(
                        att.channel.origin, self.on_conn, self.on_conn_error
                    )
                    return
                self.attempt_failed(kind)
                return
            # Bytes already reached the client: no failover. End the stream with an
            # error event in its format, or cut the connection if it is not a stream.
            app.metrics.attempt(att.channel.name, kind)
            att.breaker.failure()
            tr = self.transform
            tr.abort()
            w = self.writer
            msg = f"upstream failed mid-response: {kind}"
            ctx = self.ctx
            event = tr.error_event(ctx.ingress.protocol, ctx.stream, msg) if w.chunked else None
            if event is not None:
                w.frame(event)
                self._to(DONE)
                w.end(self, 502, "upstream_error", terminate=True)
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
            att = self.attempts
            att.cancel(self.app)
            if att.breaker is not None and not self.writer.status:
                att.breaker.release_probe()
            if self.transform is not None:
                self.transform.abort()
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

    def local_error(self, err: errors.FastgateError) -> None:
        """An error the gateway answers itself, in the ingress protocol's shape."""
        if self.state is DONE:
            return
        w = self.writer
        w.out.clear()  # the whole answer replaces whatever was framed
        w.head_out = None
        keep = w.whole(err.status, err.body(self.ctx.ingress.protocol), extra=err.headers)
        if self.ctx.head.method == b"POST":
            self.finish(err.status, err.code)  # data-plane requests always leave a record
        else:
            self._to(DONE)
            app = self.app
            app.inflight -= 1
            app.metrics.count_status(err.status)
            self.client.finish(keep)

    def finish(self, status: int, error_code: str = "") -> None:
        """End the request without the body's pending bytes (its answer was written
        whole, or it is cut): account, hand the client connection back."""
        if self.state is DONE:
            return
        self._to(DONE)
        self.writer.out.clear()
        self.writer.end(self, status, error_code)

    def _crash(self) -> None:
        """A bug or an illegal transition: log it, answer 500 (nothing sent yet) or
        cut the response; stop the upstream. The event loop carries on."""
        state = self.state
        log.exception(
            "request %s failed in state %s", self.ctx.request_id.decode("latin-1"), state.name
        )
        if state is DONE:
            return
        self.writer.force_close = True
        self.attempts.cancel(self.app)
        if state is STREAMING:
            self.finish(500, "internal_error")
        else:
            self.local_error(errors.FastgateError("internal error"))

    # -- compatibility: what protocols.py and the mock provider read --------------------

    @property
    def head(self) -> RequestHead:
        return self.ctx.head

    @property
    def request_id(self) -> bytes:
        return self.ctx.request_id

    @property
    def token(self) -> Any:
        return self.ctx.token

    @property
    def ingress(self) -> protocols.Ingress:
        return self.ctx.ingress

    @property
    def obj(self) -> dict[str, Any] | None:
        return self.ctx.obj

    @property
    def requested(self) -> str:
        return self.ctx.requested

    @property
    def model(self) -> str:
        return self.ctx.model

    @property
    def stream(self) -> bool:
        return self.ctx.stream

    @property
    def inject(self) -> bool:
        return self.ctx.inject

    @property
    def client_include_usage(self) -> bool:
        return self.ctx.include_usage

    @property
    def hub(self) -> dict[str, Any] | None:
        return self.ctx.hub

    @hub.setter
    def hub(self, value: dict[str, Any] | None) -> None:
        self.ctx.hub = value

    @property
    def upstream_model(self) -> str:
        return self.attempts.upstream_model

    @property
    def conn(self) -> Any:
        return self.attempts.conn

    @conn.setter
    def conn(self, value: Any) -> None:
        self.attempts.conn = value

    @property
    def force_close(self) -> bool:
        return self.writer.force_close

    @force_close.setter
    def force_close(self, value: bool) -> None:
        self.writer.force_close = value

    @property
    def order(self) -> list[Any] | None:
        return self.attempts.order

    @order.setter
    def order(self, value: list[Any] | None) -> None:
        # fast.dispatch: the route's turn was taken, the general path uses it
        self.attempts.order = value

    @property
    def done(self) -> bool:
        return self.state is DONE


# Kept importable from here: the state names.
__all__ += ["State"]
