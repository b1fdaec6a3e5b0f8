"""A request's life: auth -> route -> forward -> account.

`Exchange` is driven by callbacks, not a task: the client protocol hands it a
complete request; it authenticates and routes from the snapshot (no I/O), asks
the pool for an upstream connection, writes the request in one write, then
receives the upstream's parsed response events (`up_headers`, `up_body`,
`up_flush`, `up_complete`, `up_error`) and forwards bytes to the client as they
arrive, writing once per upstream read. Failover happens while no byte has
reached the client; after that an upstream failure ends the response with an
error event. When the response ends the usage is priced and a record queued.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from fastgate import errors
from fastgate.convert import UpstreamProtocolError, convert_error_body, error_event
from fastgate.gateway import protocols
from fastgate.gateway.accounting import account
from fastgate.gateway.auth import authenticate, check_model, presented_key
from fastgate.gateway.routing import attempt_plan
from fastgate.gateway.scanners import AnthropicUsage, GeminiUsage
from fastgate.gateway.usage import OpenAIBodyUsage, OpenAIStreamUsage, Usage
from fastgate.http import upstream as up
from fastgate.http.flow import PEER_SLOW
from fastgate.http.head import RequestHead
from fastgate.http.responses import CHUNK_END, simple_response, status_line
from fastgate.providers import openai as openai_proto

log = logging.getLogger("fastgate.gateway")

OPENAI_INGRESS = protocols.Ingress(protocols.OPENAI, "")
# How an attempt's response reaches the client.
PASS, CONVERT = 0, 1
# Bound on a response body held whole for conversion.
MAX_CONVERT_BODY = 64 * 1024 * 1024

if TYPE_CHECKING:
    from fastgate.app import App
    from fastgate.http.client import ClientProtocol


class Exchange:
    __slots__ = (
        "app",
        "attempts",
        "breaker",
        "cancel_acquire",
        "channel",
        "chunked",
        "client",
        "client_include_usage",
        "client_paused_flag",
        "collect",
        "collect_size",
        "conn",
        "conv",
        "conv_usage",
        "done",
        "failures",
        "force_close",
        "head",
        "head_out",
        "hub",
        "ingress",
        "inject",
        "last_channel",
        "limited",
        "mode",
        "model",
        "obj",
        "order",
        "out",
        "plan",
        "request_id",
        "requested",
        "scanner",
        "sent",
        "skipped_open",
        "stale_retry",
        "status",
        "stream",
        "t_first",
        "token",
        "upstream_model",
        "upstream_request_id",
    )

    def __init__(
        self, app: App, client: ClientProtocol, head: RequestHead, request_id: bytes = b""
    ) -> None:
        self.app = app
        self.client = client
        self.head = head
        self.request_id = request_id or head.request_id or app.new_request_id()
        self.token: Any = None
        self.model = ""
        self.requested = ""
        self.upstream_model = ""
        self.stream = False
        self.inject = False
        self.obj: dict[str, Any] | None = None
        self.order: list[Any] | None = None  # candidates already drawn from the route
        self.plan: Any = None
        self.attempts = 0
        self.last_channel: Any = None
        self.channel: Any = None
        self.breaker: Any = None
        self.conn: Any = None
        self.cancel_acquire: Any = None
        self.scanner: Any = None
        self.head_out: bytes | None = None
        self.out: list[bytes] = []
        self.chunked = False
        self.sent = False  # a response byte has been written to the client
        self.status = 0
        self.t_first = 0.0
        self.failures: list[tuple[str, str]] = []
        self.skipped_open = 0
        self.done = False
        self.force_close = False
        self.client_paused_flag = False
        self.upstream_request_id = b""
        self.stale_retry = False
        self.limited = False
        self.ingress = OPENAI_INGRESS
        self.hub: dict[str, Any] | None = None
        self.mode = PASS
        self.conv: Any = None
        self.collect: list[bytes] | None = None
        self.collect_size = 0
        self.conv_usage: Usage | None = None
        self.client_include_usage = False

    # -- start ----------------------------------------------------------------

    def start(self) -> None:
        self.client.exchange = self
        self.app.inflight += 1
        try:
            self._start()
        except errors.FastgateError as err:
            self.local_error(err)
        except Exception:  # a bug answers 500 and is logged; it never kills the loop
            log.exception("request %s failed", self.request_id.decode("latin-1"))
            if not self.done:
                self.force_close = True
                if self.sent:
                    self.finish(500, "internal_error")
                else:
                    self.local_error(errors.FastgateError("internal error"))

    def _start(self) -> None:
        head = self.head
        path = head.path
        if head.method == b"GET":
            self._get(path)
            return
        if head.method != b"POST":
            raise errors.NotFound(f"no route for {head.method.decode()} {path.decode('latin-1')}")
        if path.startswith((b"/v1/messages", b"/v1beta/", b"/v1/models/")):
            ing = protocols.classify(path, head.query)
            if ing is not None:
                self.ingress = ing
        elif not path.startswith(b"/v1/"):
            raise errors.NotFound(f"no route for POST {path.decode('latin-1')}")
        ing = self.ingress
        snap = self.app.snapshot
        key = presented_key(head, ing.protocol) or ing.query_key
        self.token = token = authenticate(snap, key)
        try:
            obj = orjson.loads(head.body)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidRequest(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise errors.InvalidRequest("request body must be a JSON object")
        if ing is OPENAI_INGRESS or ing.protocol == protocols.ANTHROPIC:
            requested = obj.get("model")
            self.stream = obj.get("stream") is True
        else:
            requested = ing.model
            self.stream = ing.kind == protocols.STREAM_GENERATE
        if not isinstance(requested, str) or not requested:
            raise errors.InvalidRequest("missing 'model' in request body")
        self.obj = obj
        self.requested = requested
        self.model = model = snap.resolve_model(requested)
        check_model(token, model, requested)
        route = snap.routes.get((token.group, model))
        if route is None:
            raise errors.ModelNotFound(
                f"The model '{requested}' does not exist or is not available to this key"
            )
        if token.quota_micros >= 0:
            # Served while the quota left covers what this key's last request on
            # this model cost (the first needs only some quota left).
            left = self.app.quota_left(token)
            if left <= 0 or left < self.app.last_cost.get((token.name, model), 0):
                raise errors.InsufficientQuota("quota exhausted for this API key")
        if token.limited:
            self.app.limits.admit(token)
            self.limited = True
        order = self.order or route.order()
        if ing is OPENAI_INGRESS:
            asked = self.client_include_usage = openai_proto.client_asked_usage(obj)
            self.inject = openai_proto.needs_include_usage(path, obj, asked)
        elif ing.kind in (protocols.COUNT, protocols.COUNT_TOKENS):
            order = [c for c in order if c.protocol == ing.protocol]
            if not order:  # no channel of its kind can count: estimate here
                self.respond(200, protocols.count_tokens_locally(self))
                return
        self.plan = attempt_plan(order, self.app.cfg.routing.max_attempts)
        self.attempt()

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
            token = authenticate(app.snapshot, presented_key(self.head, "openai"))
            self.respond(200, app.snapshot.models_body(token))
        else:
            raise errors.NotFound(f"no route for GET {path.decode('latin-1')}")

    # -- attempts ---------------------------------------------------------------

    def attempt(self) -> None:
        """Send the request to the next candidate, or give up with the right error."""
        app = self.app
        breakers = app.breakers
        now = time.monotonic()
        for ch in self.plan:
            if ch is self.last_channel:
                continue
            until = app.channel_cooldown.get(ch.name)
            if until is not None and now < until:
                self.skipped_open += 1
                continue
            if ch.rpm and not app.limits.channel_allows(ch):
                self.skipped_open += 1
                continue
            br = breakers.get(ch.name, self.model)
            if not br.allow(now):
                self.skipped_open += 1
                continue
            self.attempts += 1
            self.channel = ch
            self.last_channel = ch
            self.breaker = br
            self.upstream_model = ch.model_map.get(self.model, self.model)
            ing = self.ingress
            self.mode = PASS if ch.protocol == ing.protocol else CONVERT
            if ch.is_mock:
                if self.mode == CONVERT:
                    try:
                        protocols.hub_request(self)
                    except errors.FastgateError as err:
                        self.local_error(err)
                        return
                app.mock.serve(self, ch)
            else:
                self.cancel_acquire = app.pool.acquire(ch.origin, self.on_conn, self.on_conn_error)
            return
        self.give_up()

    def give_up(self) -> None:
        if self.attempts == 0 and self.skipped_open:
            err: errors.FastgateError = errors.ServiceUnavailable(
                f"every channel for '{self.model}' is temporarily unavailable (circuit open)"
            )
        elif self.failures and all(k in up.TIMEOUT_KINDS for _, k in self.failures):
            err = errors.UpstreamTimeout(
                "upstream timed out: " + "; ".join(f"{c}: {k}" for c, k in self.failures)
            )
        else:
            err = errors.UpstreamError(
                f"all {self.attempts} attempt(s) failed: "
                + "; ".join(f"{c}: {k}" for c, k in self.failures)
            )
        self.local_error(err)

    def on_conn(self, conn: Any) -> None:
        self.cancel_acquire = None
        if self.done:
            self.app.pool.release(conn)
            return
        self.conn = conn
        ch = self.channel
        head = self.head
        if self.mode == PASS and self.ingress is OPENAI_INGRESS:
            path, query = head.path, head.query
            if ch.type == "azure":  # same protocol, its own URL scheme
                path, query = protocols.azure_path(self, ch), b""
            data = openai_proto.request_bytes(
                ch,
                path,
                query,
                head.forward,
                self.body_for_openai_channel(),
                head.content_type,
            )
        else:
            try:
                data = self.other_request(ch)
            except errors.FastgateError as err:
                self.drop_conn(conn)
                self.local_error(err)
                return
        srv = self.app.cfg.server
        conn.send(self, data, ch.first_byte_timeout or srv.first_byte_timeout, srv.idle_timeout)

    def body_for_openai_channel(self) -> bytes:
        """The client's OpenAI body with the allowed edits (model name, include_usage)."""
        return openai_proto.edit_body(
            self.head.body, self.obj, self.requested, self.upstream_model, self.inject
        )

    def other_request(self, ch: Any) -> bytes:
        """Upstream request bytes for every case but OpenAI -> OpenAI passthrough."""
        head = self.head
        if self.mode == PASS:
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
        self.cancel_acquire = None
        if self.done:
            return
        self.attempt_failed(kind)

    def attempt_failed(self, kind: str) -> None:
        self.failures.append((self.channel.name, kind))
        self.breaker.failure()
        self.app.metrics.attempt(self.channel.name, kind)
        self.reset_response()
        self.attempt()

    # -- upstream events -------------------------------------------------------------

    def up_headers(self, conn: Any, status: int) -> None:
        if status == 429 or status >= 500:
            if status == 429:
                self.app.note_rate_limited(self.channel.name, conn.retry_after)
            self.drop_conn(conn)
            self.attempt_failed(f"HTTP {status}")
            return
        self.status = status
        self.t_first = time.time()
        self.breaker.success()
        attempts = self.app.metrics.attempts
        key = (self.channel.name, "ok")
        attempts[key] = attempts.get(key, 0) + 1
        if self.mode == CONVERT:
            self.convert_headers(conn, status)
            return
        sse = conn.sse
        self.upstream_request_id = rid = conn.request_id
        parts = [status_line(status), *conn.forward, b"x-request-id: %b\r\n" % self.request_id]
        if rid:
            parts.append(b"x-upstream-request-id: %b\r\n" % rid)
        if 200 <= status < 300:
            proto = self.ingress.protocol
            if proto == protocols.ANTHROPIC:
                self.scanner = AnthropicUsage()
            elif proto == protocols.GEMINI:
                self.scanner = GeminiUsage()
            elif sse:
                self.scanner = OpenAIStreamUsage(strip_usage_chunk=self.inject)
            else:
                self.scanner = OpenAIBodyUsage()
        length = conn.content_length
        self.end_head(parts, conn, length if length and not (sse and self.inject) else b"")

    def end_head(self, parts: list[bytes], conn: Any, length: bytes) -> None:
        """Framing (content-length, chunked, or close-delimited) and the head's end;
        the head waits in `head_out` to leave with the first body bytes."""
        keep = self.keep_alive()
        if length:
            parts.append(b"content-length: %b\r\n" % length)
        elif self.head.http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self.chunked = True
        else:
            keep = False
            self.force_close = True
        parts.append(b"\r\n" if keep else b"connection: close\r\n\r\n")
        self.head_out = b"".join(parts)
        if self.client_paused_flag:
            conn.pause_reading()

    def convert_headers(self, conn: Any, status: int) -> None:
        """Response head when converting: a stream converter, or collect the body."""
        self.upstream_request_id = rid = conn.request_id
        if 200 <= status < 300 and self.stream:
            try:
                self.conv = protocols.stream_processor(self, self.channel)
            except errors.FastgateError as err:
                self.drop_conn(conn)
                self.local_error(err)
                return
            ctype = (
                b"application/json"
                if self.ingress.protocol == protocols.GEMINI and not self.ingress.alt_sse
                else b"text/event-stream; charset=utf-8"
            )
            parts = [
                status_line(status),
                b"content-type: %b\r\n" % ctype,
                b"cache-control: no-cache\r\nx-request-id: %b\r\n" % self.request_id,
            ]
            if rid:
                parts.append(b"x-upstream-request-id: %b\r\n" % rid)
            self.end_head(parts, conn, b"")
        else:
            self.collect = []  # whole body needed: JSON to convert, or an error

    def up_body(self, data: bytes) -> None:
        if self.mode == CONVERT:
            if self.conv is not None:
                try:
                    data = self.conv.feed(data)
                except UpstreamProtocolError as exc:
                    self.conv_failed(exc)
                    return
                if data:
                    self.up_body_raw(data)
            elif self.collect is not None:
                self.collect_size += len(data)
                if self.collect_size <= MAX_CONVERT_BODY:
                    self.collect.append(data)
            return
        scanner = self.scanner
        if scanner is not None:
            if scanner.__class__ is OpenAIBodyUsage:
                scanner.feed(data)
            else:
                data = scanner.feed(data)
                if not data:
                    return
        self.up_body_raw(data)

    def up_flush(self) -> None:
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.sent = True
            self.client.write(data)

    def up_complete(self, conn: Any) -> None:
        if self.mode == CONVERT:
            self.convert_complete(conn)
            return
        scanner = self.scanner
        if scanner is not None and scanner.__class__ is OpenAIStreamUsage:
            rest = scanner.close()
            if rest:
                self.up_body(rest)
        if self.head_out is not None:
            self.out.append(self.head_out)
            self.head_out = None
        if self.chunked:
            self.out.append(CHUNK_END)
        self.up_flush()
        self.conn = None
        if conn.key is not None:
            self.app.pool.release(conn)
        status = self.status
        self.finish(status, "" if status < 400 else f"upstream_{status}")

    def convert_complete(self, conn: Any) -> None:
        conv = self.conv
        self.conn = None
        if conn.key is not None:
            self.app.pool.release(conn)
        status = self.status
        if conv is not None:
            try:
                rest = conv.close()
            except UpstreamProtocolError as exc:
                self.conv_failed(exc)
                return
            if rest:
                self.up_body_raw(rest)
            if self.head_out is not None:
                self.out.append(self.head_out)
                self.head_out = None
            if self.chunked:
                self.out.append(CHUNK_END)
            self.up_flush()
            self.finish(status)
            return
        body = b"".join(self.collect or ())
        self.collect = None
        if self.collect_size > MAX_CONVERT_BODY:
            self.local_error(errors.UpstreamError("upstream response too large to convert"))
            return
        if 200 <= status < 300:
            try:
                body, self.conv_usage = protocols.convert_body(self, self.channel, body)
            except errors.FastgateError as err:
                self.local_error(err)
                return
            code = ""
        else:
            body = convert_error_body(body, status, self.ingress.protocol)
            code = f"upstream_{status}"
        keep = self.keep_alive()
        rid = self.upstream_request_id
        extra = ((b"x-upstream-request-id", rid),) if rid else ()
        self.client.write(
            simple_response(status, body, request_id=self.request_id, keep_alive=keep, extra=extra)
        )
        self.sent = True
        self.finish(status, code)

    def up_body_raw(self, data: bytes) -> None:
        """Frame bytes already in the client's format (converted) for the client."""
        out = self.out
        if self.head_out is not None:
            out.append(self.head_out)
            self.head_out = None
        if self.chunked:
            out.append(b"%x\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        else:
            out.append(data)

    def conv_failed(self, exc: Exception) -> None:
        """The upstream's stream could not be converted: end it with an error event."""
        if self.conn is not None:
            self.drop_conn(self.conn)
        msg = f"upstream sent a malformed stream: {exc}"
        log.warning("request %s: %s", self.request_id.decode("latin-1"), msg)
        if self.conv is not None:
            self.up_body_raw(self.conv.error_event(msg, "server_error"))
        if self.chunked:
            self.out.append(CHUNK_END)
        else:
            self.force_close = True
        self.up_flush()
        self.finish(502, "upstream_error")

    def up_error(self, conn: Any, kind: str, exc: BaseException | None) -> None:
        self.drop_conn(conn)
        if self.done:
            return
        if not self.sent:
            if kind == up.RESET and conn.used and not conn.got_bytes and not self.stale_retry:
                # A kept-alive connection the upstream had closed: not the
                # channel's fault; try once more on a fresh connection.
                self.stale_retry = True
                self.reset_response()
                self.cancel_acquire = self.app.pool.acquire(
                    self.channel.origin, self.on_conn, self.on_conn_error
                )
                return
            self.attempt_failed(kind)
            return
        # Bytes already reached the client: no failover. End the stream with an
        # error event in its format, or cut the connection if it is not a stream.
        self.app.metrics.attempt(self.channel.name, kind)
        self.breaker.failure()
        self.close_scanner()
        msg = f"upstream failed mid-response: {kind}"
        if self.chunked and self.conv is not None:
            self.up_body_raw(self.conv.error_event(msg, "server_error"))
            self.out.append(CHUNK_END)
            self.up_flush()
        elif self.chunked and self.stream and self.scanner is not None:
            self.up_body_raw(error_event(self.ingress.protocol, msg, "server_error"))
            self.out.append(CHUNK_END)
            self.up_flush()
        else:
            self.force_close = True
        self.finish(502, "upstream_error")

    def close_scanner(self) -> None:
        """On an abort: let the usage scanner count a final event left unterminated."""
        scanner = self.scanner
        if scanner is not None:
            try:
                scanner.close()
            except Exception:  # what it would have forwarded is not wanted any more
                pass

    def reset_response(self) -> None:
        """Forget what a failed attempt's response head set up (nothing was sent)."""
        self.scanner = None
        self.head_out = None
        self.out.clear()
        self.chunked = False
        self.status = 0
        self.t_first = 0.0
        self.upstream_request_id = b""
        self.conv = None
        self.collect = None
        self.collect_size = 0

    def drop_conn(self, conn: Any) -> None:
        """Done with a connection that must not be reused: close it, free its slot."""
        self.conn = None
        conn.abort()
        if conn.key is not None:
            self.app.pool.discard(conn)

    def upstream_paused(self) -> None:
        self.client.gate.pause(PEER_SLOW)

    def upstream_resumed(self) -> None:
        self.client.gate.resume(PEER_SLOW)

    # -- client events ---------------------------------------------------------------------

    def client_paused(self) -> None:
        self.client_paused_flag = True
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resumed(self) -> None:
        self.client_paused_flag = False
        if self.conn is not None:
            self.conn.resume_reading()

    def client_lost(self) -> None:
        """The client went away: cancel the upstream request, bill what was used."""
        if self.done:
            return
        if self.conn is not None:
            self.drop_conn(self.conn)
        if self.cancel_acquire is not None:
            self.cancel_acquire()
            self.cancel_acquire = None
        if self.breaker is not None and not self.status:
            self.breaker.release_probe()
        self.close_scanner()
        self.finish(499, "client_closed")

    # -- endings ---------------------------------------------------------------------------

    def keep_alive(self) -> bool:
        return self.head.keep_alive and not self.force_close and not self.app.stopping

    def respond(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        """A whole local response (ops endpoints, /v1/models)."""
        keep = self.keep_alive()
        self.client.write(
            simple_response(
                status, body, content_type=content_type, request_id=self.request_id, keep_alive=keep
            )
        )
        self.done = True
        self.app.inflight -= 1
        self.app.metrics.count_status(status)
        self.client.finish(keep)

    def local_error(self, err: errors.FastgateError) -> None:
        """An error the gateway answers itself, in the ingress protocol's shape."""
        keep = self.keep_alive()
        self.client.write(
            simple_response(
                err.status,
                err.body(self.ingress.protocol),
                request_id=self.request_id,
                keep_alive=keep,
                extra=err.headers,
            )
        )
        self.sent = True
        if self.head.method == b"POST":
            self.finish(err.status, err.code)  # data-plane requests always leave a record
        else:
            self.done = True
            self.app.inflight -= 1
            self.app.metrics.count_status(err.status)
            self.client.finish(keep)

    def finish(self, status: int, error_code: str = "") -> None:
        """Account for the request and hand the connection back to the client side."""
        if self.done:
            return
        self.done = True
        app = self.app
        app.inflight -= 1
        counts = app.metrics.status
        counts[status] = counts.get(status, 0) + 1
        scanner = self.scanner
        if scanner is not None:
            usage = scanner.usage
        elif self.conv is not None:
            usage = self.conv.usage
        else:
            usage = self.conv_usage or Usage()
        token = self.token
        snap = app.snapshot
        account(
            app,
            self.head,
            self.request_id,
            token,
            self.ingress.protocol,
            self.channel,
            self.model,
            self.upstream_model,
            self.stream,
            status,
            error_code,
            usage,
            snap.prices.get(self.model),
            snap.group_ratio.get(token.group, 1_000_000) if token is not None else 1_000_000,
            self.t_first,
            self.attempts,
            self.client.client_ip,
        )
        if self.limited:
            app.limits.done(token, usage.prompt_tokens + usage.completion_tokens)
        if self.client.gate.reasons:
            self.client.gate.resume(PEER_SLOW)
        if status == 499:
            return
        self.client.finish(self.keep_alive())
