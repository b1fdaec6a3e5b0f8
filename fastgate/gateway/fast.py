"""The fast path: an OpenAI request to an OpenAI channel, done in a few calls.

`dispatch` decides per request, with inline checks only, whether the request
is the plain case: a POST to an OpenAI endpoint with a Bearer key that is
`fast` (snapshot.Token: enabled, no limits or cache) or `fast_limits` (the
same with rpm/tpm, admitted here only when the limits answer at once: a local
window, or a slot of a Redis lease), and whose expiry, allow-list, quota and
budgets, if it has them (`checked`), admit it by admission's own rules at once
(a refusal, or a budget near enough to read the fleet's total, is the general
path's), a JSON body whose model has a fast-eligible route plan
(`gateway/plan.py`), and a first candidate whose breaker is closed and who is
not cooling down. Then it builds
the upstream request from the channel's pre-encoded pieces, writes it once,
forwards the response bytes as they arrive, reads usage from the tail of the
body (non-stream) or with the stream scanner (stream). A `FastExchange` is its
own `ResponseWriter`: head framing, flush and the end of the request
(`ResponseWriter.end` -> `accounting.account`) are the general exchange's own.

Everything else goes to the general `Exchange`, and so does every unusual
event of a fast request (429/5xx, a connection error, the client leaving):
`_general()` hands the whole state over (this object becomes the general
exchange's writer) before anything reached the client, so failover, error
events and 499 accounting exist in one place only. A request the fast path
declines after parsing goes on with its parsed body (`general`).

Hot code: every function call here is counted by the call-budget test
(`tests/unit/test_call_budget.py`); inline a check rather than add a helper.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fastgate.gateway.admission import quota_refuses
from fastgate.gateway.attempts import Attempts
from fastgate.gateway.auth import DIGESTS, expired, lookup, model_allowed
from fastgate.gateway.breaker import CLOSED
from fastgate.gateway.context import RequestContext
from fastgate.gateway.handler import Exchange
from fastgate.gateway.routing import attempt_plan
from fastgate.gateway.writer import ResponseWriter, without_rate_headers
from fastgate.http.flow import PEER_SLOW
from fastgate.http.responses import STATUS_LINE, status_line
from fastgate.providers import openai as openai_proto
from fastgate.scan.openai import OpenAIBodyUsage, OpenAIStreamUsage, body_usage
from fastgate.vocab.protocols import OPENAI
from fastgate.vocab.usage import Usage

FAST_PATHS = frozenset(
    {b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/v1/responses"}
)
TAIL = 16384  # bytes of a non-stream body kept to find its usage object


def dispatch(app: Any, client: Any, head: Any) -> None:
    """Serve one complete request: on the fast path when it qualifies."""
    auth = head.authorization
    if (
        head.method != b"POST"
        or head.path not in FAST_PATHS
        or head.query
        or head.cache  # x-fastgate-cache: the response cache is the general path's
        or auth[:7] != b"Bearer "
    ):
        Exchange(app, client, head).start()
        return
    snap = app.snapshot
    key = auth[7:]
    digest = DIGESTS.get(key)  # `auth.lookup`, its hit inlined (hot)
    token = snap.tokens.get(digest) if digest is not None else lookup(snap, key)
    if token is None or not (token.fast or token.fast_limits):
        Exchange(app, client, head).start()
        return
    try:
        obj = orjson.loads(head.body)
    except orjson.JSONDecodeError:
        obj = None
    if type(obj) is not dict:
        Exchange(app, client, head).start()
        return
    requested = obj.get("model")
    plan = snap.plans.get((token.group, requested)) if type(requested) is str else None
    if plan is None or not plan.fast:
        general(app, client, head, obj, None)
        return
    if token.checked and (  # refused, or a budget near: the general path's to answer
        expired(token)
        or not model_allowed(token, plan.model, requested)
        or (token.quota_micros >= 0 and quota_refuses(app, token, plan.model))
        or (token.budgets and not app.budgets.clear(token))
    ):
        general(app, client, head, obj, None)
        return
    ch = plan.single
    model = plan.model
    order = None
    if ch is not None:
        br = plan.breaker
    else:
        order = plan.route.order()
        ch = order[0]
        br = app.breakers.get(ch.name, model)
    if br.state is not CLOSED or ch.name in app.channel_cooldown:
        general(app, client, head, obj, order)  # the route's turn is taken: pass it on
        return
    admitted = None
    if not token.fast:  # rpm/tpm: served here when the limits answer without Redis
        try:
            admitted = app.limits.admit(token)
        except Exception:  # refused: the general path refuses it in the ingress's shape
            admitted = None
        if type(admitted) is not tuple:
            if admitted is not None:
                admitted.close()  # a round trip not started: nothing was taken
            general(app, client, head, obj, order)
            return
    stream = obj.get("stream") is True
    asked = inject = False
    if stream:
        asked = openai_proto.client_asked_usage(obj)
        inject = openai_proto.needs_include_usage(head.path, obj, asked)
    upstream_model = ch.model_map.get(model, model)
    body = head.body
    if inject or upstream_model != requested:
        body = openai_proto.edit_body(body, obj, requested, upstream_model, inject)
    path = head.path
    if ch.targets is not None:  # a target of the channel type's own (Azure's deployment)
        target = ch.targets.get((model, upstream_model, path))
        path = (
            target
            if target is not None
            else ch.kind.openai_target(ch, model, upstream_model, path, b"")[0]
        )
    data = openai_proto.request_bytes(ch, path, b"", head.forward, body, head.content_type)
    fx = FastExchange(app, client, head, token, plan, ch, br, obj, upstream_model, stream, inject)
    fx.asked = asked
    fx.order = order
    if admitted is not None:
        fx.extra_head, fx.ticket = admitted
    app.inflight += 1
    client.exchange = fx
    srv = app.cfg.server
    fx.t_up = time.time()  # the upstream window opens (gateway_ms: writer.py)
    conn = app.pool.take_idle(ch.origin)
    if conn is not None:
        fx.conn = conn
        conn.send(fx, data, ch.first_byte_timeout or srv.first_byte_timeout, srv.idle_timeout)
    else:
        fx.data = data
        fx.cancel_acquire = app.pool.acquire(ch.origin, fx.on_conn, fx.on_conn_error)


def general(app: Any, client: Any, head: Any, obj: Any, order: list[Any] | None) -> None:
    """Hand a request the fast path does not take to the general exchange, with
    the body this path already parsed (no second parse) and the route's turn."""
    ex = Exchange(app, client, head)
    ex.ctx.obj = obj
    ex.order = order
    ex.start()


class FastExchange(ResponseWriter):
    """One fast-path request: the upstream consumer and the client-side callbacks,
    and its own response writer (head, framing, flush and the end of the request
    are `ResponseWriter`'s). A hand-over gives the general exchange this object
    as its writer: the response so far carries over with nothing copied."""

    __slots__ = (
        "asked",
        "breaker",
        "cancel_acquire",
        "channel",
        "conn",
        "data",
        "inject",
        "obj",
        "order",
        "plan",
        "scanner",
        "stream",
        "tail",
        "ticket",
        "token",
        "upstream_model",
    )

    def __init__(
        self,
        app: Any,
        client: Any,
        head: Any,
        token: Any,
        plan: Any,
        channel: Any,
        breaker: Any,
        obj: dict[str, Any],
        upstream_model: str,
        stream: bool,
        inject: bool,
    ) -> None:
        ResponseWriter.__init__(self, app, client, head, head.request_id or app.new_request_id())
        self.token = token
        self.plan = plan
        self.channel = channel
        self.breaker = breaker
        self.obj = obj
        self.upstream_model = upstream_model
        self.stream = stream
        self.inject = inject
        self.asked = False
        self.order: list[Any] | None = None
        self.conn: Any = None
        self.cancel_acquire: Any = None
        self.data = b""
        self.scanner: Any = None
        self.tail: bytes | None = None  # non-stream 2xx: the body while it is small
        self.ticket: Any = None  # the rate limits' ticket (a limited key)

    # -- connection --------------------------------------------------------------

    def on_conn(self, conn: Any) -> None:
        self.cancel_acquire = None
        self.conn = conn
        srv = self.app.cfg.server
        conn.send(
            self,
            self.data,
            self.channel.first_byte_timeout or srv.first_byte_timeout,
            srv.idle_timeout,
        )
        self.data = b""

    def on_conn_error(self, kind: str, exc: BaseException | None) -> None:
        self._general().on_conn_error(kind, exc)

    # -- upstream events ---------------------------------------------------------

    def up_headers(self, conn: Any, status: int) -> None:
        if status >= 400:
            self._general().up_headers(conn, status)  # failover and error bodies live there
            return
        self.status = status
        self.t_first = time.time()
        if conn.exhausted:  # served, but the channel's budget is spent: skip it a while
            self.app.note_limits(self.channel.name, status, conn)
        self.breaker.failures = 0  # Breaker.success() for a closed breaker
        attempts = self.app.metrics.attempts
        key = (self.channel.name, "ok")
        attempts[key] = attempts.get(key, 0) + 1
        sse = conn.sse
        self.upstream_request_id = rid = conn.request_id
        parts = [
            STATUS_LINE.get(status) or status_line(status),
            *(
                conn.forward
                if conn.limits is None or not self.extra_head
                else without_rate_headers(conn.forward)
            ),
            b"x-request-id: %b\r\n" % self.request_id,
        ]
        if rid:
            parts.append(b"x-upstream-request-id: %b\r\n" % rid)
        if 200 <= status < 300:
            if sse:
                self.scanner = OpenAIStreamUsage(strip_usage_chunk=self.inject)
            else:
                self.tail = b""
        length = conn.content_length  # kept unless the injected usage chunk goes
        self.begin(parts, conn, length if length and not (sse and self.inject) else b"")

    def up_body(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is not None:
            if scanner.__class__ is OpenAIBodyUsage:
                scanner.feed(data)  # looks only; forwards nothing itself
            else:
                data = scanner.feed(data)
                if not data:
                    return
        elif self.tail is not None:
            tail = self.tail + data if self.tail else data
            if len(tail) <= TAIL:
                self.tail = tail
            else:  # a big body: its usage may not be at its end; scan it all as it passes
                self.scanner = OpenAIBodyUsage()
                self.scanner.feed(tail)
                self.tail = None
        self.frame(data)

    up_flush = ResponseWriter.flush

    def up_complete(self, conn: Any) -> None:
        scanner = self.scanner
        if scanner is not None:
            if scanner.__class__ is not OpenAIBodyUsage:
                rest = scanner.close()
                if rest:
                    self.up_body(rest)
            usage = scanner.usage
        else:
            usage = Usage()
            if self.tail:
                body_usage(self.tail, usage)
        self.conn = None
        status = self.status
        plan = self.plan
        self.end(
            status,
            "" if status < 400 else f"upstream_{status}",
            usage,
            self.token,
            OPENAI,
            self.channel,
            plan.model,
            self.upstream_model,
            self.stream,
            plan.price,
            plan.ratio,
            1,
            self.ticket,
            conn,
            True,
        )

    def up_error(self, conn: Any, kind: str, exc: BaseException | None) -> None:
        self._general().up_error(conn, kind, exc)

    def upstream_paused(self) -> None:
        self.client.gate.pause(PEER_SLOW)

    def upstream_resumed(self) -> None:
        self.client.gate.resume(PEER_SLOW)

    # -- client events -----------------------------------------------------------

    def client_paused(self) -> None:
        self.paused = True
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resumed(self) -> None:
        self.paused = False
        if self.conn is not None:
            self.conn.resume_reading()

    def client_lost(self) -> None:
        ex = self._general()
        self.client.exchange = None
        ex.client_lost()

    # -- hand-over -----------------------------------------------------------------

    def _general(self) -> Exchange:
        """The general exchange, carrying this request's whole state from here on."""
        app = self.app
        obj = self.obj
        ctx = RequestContext(
            self.head,
            self.request_id,
            self.token,
            obj,
            obj["model"],
            self.plan.model,
            self.stream,
            self.inject,
            self.asked,
        )
        ctx.limited = self.ticket
        ctx.rate_headers = self.extra_head
        order = self.order if self.order is not None else [self.channel]
        plan = attempt_plan(order, app.cfg.routing.max_attempts)
        next(plan)  # the candidate this request is on
        attempts = Attempts(
            order,
            plan,
            self.channel,
            self.breaker,
            self.upstream_model,
            self.conn,
            self.cancel_acquire,
            self.plan.model,
        )
        scanner = self.scanner
        if scanner is None and self.tail is not None:
            scanner = OpenAIBodyUsage()  # what the general path scans a body with
            if self.tail:
                scanner.feed(self.tail)
        return Exchange.adopt(app, self.client, ctx, attempts, self, scanner, bool(self.last), self)
