"""What a request gets before any upstream is involved.

`ops_response`: the ops endpoints and the model listings, answered locally.
`admit`: a data-plane request is classified (ingress protocol), authenticated,
parsed, its model resolved and checked against the key, its route found and
the key's quota and rate limits applied; the request context is filled in and
the candidates in the order to try them are returned (a call that names no
model: `passthrough.py`'s one channel). No I/O: dict lookups on
the snapshot (a step that needs a round trip, shared rate limits or a budget
near its end, is left in `ctx.pending` for the exchange to await). Errors are raised as `errors.FastgateError` for the exchange to
answer in the ingress protocol's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from fastgate import errors
from fastgate.gateway import listing, passthrough, protocols
from fastgate.gateway.auth import authenticate, check_model, presented_key
from fastgate.gateway.context import OPENAI_INGRESS, RequestContext
from fastgate.providers import openai as openai_proto

if TYPE_CHECKING:
    from fastgate.app import App

JSON = b"application/json"


def ops_response(app: App, ctx: RequestContext) -> tuple[int, bytes, bytes] | None:
    """(status, body, content type) for a GET answered here; None for an OpenAI
    `/v1/*` GET that goes upstream (files, batches...: `passthrough.py`)."""
    head = ctx.head
    path = head.path
    if path == b"/health":
        return 200, b'{"status":"ok"}', JSON
    if path == b"/ready":
        if app.stopping:  # SIGTERM: draining (the answer closes the connection)
            return 503, b'{"status":"draining"}', JSON
        if not app.ready:
            return 503, b'{"status":"not ready"}', JSON
        body = orjson.dumps(
            {
                "status": "ready",
                "snapshot": app.snapshot.version,
                "pid": app.pid,
                **app.store_status,  # "store": "ok" | "connecting" | "unreachable"
            }
        )
        return 200, body, JSON
    if path == b"/metrics":
        return 200, app.metrics.render(app), b"text/plain; version=0.0.4"
    if listing.is_listing(path):
        return listing.answer(app, ctx)  # in the shape of the SDK that asks
    if path.startswith(b"/v1/"):
        return None
    raise errors.NotFound(f"no route for GET {path.decode('latin-1')}")


def quota_refuses(app: App, token: Any, model: str) -> bool:
    """A key with a quota is served while what is left covers what its last request
    on this model cost (the first needs only some quota left). The fast path asks
    too, for its keys with a quota."""
    left = app.quota_left(token)
    return left <= 0 or left < app.last_cost.get((token.name, model), 0)


async def _budget_then_limits(app: App, token: Any, wait: Any) -> tuple[bytes, Any]:
    """A budget's round trip, then the rate limits (the `(headers, ticket)` of both)."""
    await wait
    if not token.limited:
        return b"", None
    got = app.limits.admit(token)
    return got if type(got) is tuple else await got


def admit(app: App, ctx: RequestContext, order: list[Any] | None) -> list[Any] | None:
    """Fill `ctx` for a POST and return its candidates in order (`order`: the
    route's turn already taken by the fast path). None for a token count no
    channel of its kind can do: the caller estimates it locally."""
    head = ctx.head
    path = head.path
    other = head.method != b"POST" or head.upload is not None  # passthrough.py's
    if other:
        passthrough.classify(ctx)
    elif path.startswith((b"/v1/messages", b"/v1beta/", b"/v1/models/")):
        ing = protocols.classify(path, head.query)
        if ing is not None:
            ctx.ingress = ing
    elif not path.startswith(b"/v1/"):
        raise errors.NotFound(f"no route for POST {path.decode('latin-1')}")
    ing = ctx.ingress
    snap = app.snapshot
    key = presented_key(head, ing.protocol) or ing.query_key
    ctx.token = token = authenticate(snap, key)
    obj = ctx.obj  # already parsed by the fast path when it passed the request on
    if obj is None and not other:
        try:
            obj = orjson.loads(head.body)
        except orjson.JSONDecodeError as exc:
            if ing is not OPENAI_INGRESS or path in passthrough.MODEL_PATHS:
                raise errors.InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if (
        not other
        and ing is OPENAI_INGRESS
        and path not in passthrough.MODEL_PATHS
        and (type(obj) is not dict or type(obj.get("model")) is not str or not obj["model"])
    ):
        other = True  # another OpenAI POST that names no model: passed through
        passthrough.classify(ctx)
    if other:
        route = None
        model = ""
        order = passthrough.candidates(snap, ctx, token)
    else:
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
        ctx.router = route.router
        ctx.measure = route.measure
    if token.quota_micros >= 0 and quota_refuses(app, token, model):
        raise errors.InsufficientQuota("quota exhausted for this API key")
    if token.budgets:  # the key's or its group's budget for this period (budgets.py)
        wait = app.budgets.admit(token)
        if wait is not None:  # near a budget: the fleet's total first, then the limits
            ctx.pending = _budget_then_limits(app, token, wait)
    if token.limited and ctx.pending is None:
        got = app.limits.admit(token)
        if type(got) is tuple:
            ctx.rate_headers, ctx.limited = got
        else:  # a round trip to the shared limits first (Exchange.start awaits it)
            ctx.pending = got
    if route is None:  # passthrough: its one channel
        return order
    order = order or route.order()
    if ing is OPENAI_INGRESS:
        asked = ctx.include_usage = openai_proto.client_asked_usage(obj)
        ctx.inject = openai_proto.needs_include_usage(path, obj, asked)
    elif ing.kind in (protocols.COUNT, protocols.COUNT_TOKENS):
        order = [c for c in order if c.protocol == ing.protocol]
        if not order:
            return None
    return order
