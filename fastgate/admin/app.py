"""The admin API (aiohttp.web) and the dashboard's static files, on the admin port.

Everything under /admin/ needs `Authorization: Bearer <admin token>` (compared
in constant time); with no admin token configured every /admin/ request is 401.
JSON in and out; errors are OpenAI-shaped, `{"error": {"message", "type",
"code"}}`, and validation errors add `"fields": {field: message}` (422).

Routes (`{id}` is a store id or a name; for prices the model, slashes allowed):
  GET    /admin/status                     runtime status + store health
  GET    /admin/usage?group_by=&since=&until=&tag=&bucket=&key=
  GET    /admin/routers                    each router's and model's candidate order, why
  GET    /admin/prices/missing             models routed or served with no price
  GET    /admin/runs, /admin/runs/{tag}, /admin/usage/latency  (runs_api.py)
  GET    /admin/{channels|tokens|prices|groups}          list (file entries too)
  POST   /admin/{channels|tokens|prices|groups}          create -> 201
  GET    /admin/{kind}s/{id}   PATCH /admin/{kind}s/{id}   DELETE /admin/{kind}s/{id}
  POST   /admin/channels/{id}/test         one-token probe
  GET    /admin/channels/{id}/models?timeout=  the upstream's models (discovery)
  GET    /  -> /dashboard/, GET /dashboard/{index.html,app.js,style.css}  (no auth)

Every write goes through the store (version bump + NOTIFY), so the data plane's
refresh task picks it up; nothing here touches the running snapshot.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from fastgate.admin import KINDS, ControlPlane, ReadOnlyEntry, field_errors, parse_time
from fastgate.config import Config
from fastgate.store.base import Conflict, InvalidEntry, NotFound, Store, StoreError
from fastgate.store.secrets import SecretKeyInvalid, SecretKeyMissing

__all__ = ["STATIC_DIR", "AdminContext", "build_admin_app"]

log = logging.getLogger("fastgate.admin")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_PLURALS = {k + "s": k for k in KINDS}
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
}


@dataclass
class AdminContext:
    """What the admin app needs from the process that runs it."""

    store: Store  # started, running its own thread
    token: str  # admin bearer token; "" = admin API disabled (every request 401)
    config: Callable[[], Config]  # the current FILE config (read-only entries)
    # runtime status from the data plane (a coroutine when it gathers every worker's)
    status: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
    # the routing report of the worker serving the admin API (gateway/route_report.py)
    routers: Callable[[], dict[str, Any]] | None = None


CTX = web.AppKey("fastgate_admin_ctx", AdminContext)
PLANE = web.AppKey("fastgate_admin_plane", ControlPlane)


class ApiError(Exception):
    """An error answered as JSON with this status, code and optional fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.type = type_ or _TYPES_BY_STATUS.get(status, "server_error")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(exc: ApiError) -> web.Response:
    err: dict[str, Any] = {"message": exc.message, "type": exc.type, "code": exc.code}
    if exc.fields is not None:
        err["fields"] = exc.fields
    resp = _json({"error": err}, exc.status)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="fastgate-admin"'
    return resp


def _is_api(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def _check_auth(request: web.Request, token: str) -> None:
    if not token:
        raise ApiError(
            401,
            "admin_disabled",
            "the admin API is disabled: no admin token is configured "
            "(set [admin] token_env or token in the config file)",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise ApiError(
            401, "missing_token", "missing admin token: send Authorization: Bearer <admin token>"
        )
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        raise ApiError(401, "invalid_token", "invalid admin token")


def _translate(exc: BaseException, kind: str) -> ApiError | None:
    """Store and validation errors -> API errors (None: not ours, a bug)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidEntry):
        return ApiError(
            422,
            "validation_error",
            "; ".join(exc.problems),
            fields=field_errors(kind, exc.problems),
        )
    if isinstance(exc, SecretKeyMissing):
        return ApiError(422, "secret_key_missing", str(exc), fields={"api_key": str(exc)})
    if isinstance(exc, SecretKeyInvalid):
        return ApiError(500, "secret_key_invalid", str(exc), type_="server_error")
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, ReadOnlyEntry):
        return ApiError(409, "read_only", str(exc))
    if isinstance(exc, Conflict):
        return ApiError(409, "conflict", str(exc))
    if isinstance(exc, StoreError | OSError | TimeoutError):
        return ApiError(
            503,
            "store_unavailable",
            f"the database is not available: {exc or exc.__class__.__name__}",
            type_="server_error",
        )
    mod = type(exc).__module__
    if mod.startswith(("asyncpg", "sqlite3")):
        return ApiError(503, "store_unavailable", f"database error: {exc}", type_="server_error")
    return None


@web.middleware
async def _middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    if not _is_api(request.path):
        resp = await handler(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        return resp
    ctx = request.app[CTX]
    kind = _PLURALS.get(request.path.split("/")[2] if request.path.count("/") >= 2 else "", "")
    try:
        _check_auth(request, ctx.token)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        msg = f"{request.method} {request.path}: {exc.reason}"
        return _error(ApiError(exc.status, code.get(exc.status, "http_error"), msg))
    except Exception as exc:
        api = _translate(exc, kind)
        if api is None:
            log.exception("admin API: %s %s failed", request.method, request.path)
            api = ApiError(
                500, "internal_error", f"internal error: {exc.__class__.__name__}: {exc}"
            )
        return _error(api)


# --------------------------------------------------------------------------- handlers


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return doc


def _kind(request: web.Request) -> str:
    return _PLURALS[request.match_info["kind"]]


async def list_entries(request: web.Request) -> web.Response:
    kind = _kind(request)
    data = await request.app[PLANE].list(kind)
    return _json({"object": "list", "kind": kind, "data": data})


async def create_entry(request: web.Request) -> web.Response:
    kind = _kind(request)
    spec = await _body(request)
    return _json(await request.app[PLANE].create(kind, spec), 201)


async def get_entry(request: web.Request) -> web.Response:
    return _json(await request.app[PLANE].get(_kind(request), request.match_info["id"]))


async def patch_entry(request: web.Request) -> web.Response:
    kind = _kind(request)
    patch = await _body(request)
    return _json(await request.app[PLANE].update(kind, request.match_info["id"], patch))


async def delete_entry(request: web.Request) -> web.Response:
    return _json(await request.app[PLANE].delete(_kind(request), request.match_info["id"]))


async def test_channel(request: web.Request) -> web.Response:
    opts = await _body(request, optional=True)
    model = opts.get("model")
    timeout = opts.get("timeout", 15.0)
    fields: dict[str, str] = {}
    if model is not None and (not isinstance(model, str) or not model):
        fields["model"] = "expected a non-empty string"
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
        fields["timeout"] = "expected seconds between 0 and 120"
    if fields:
        raise ApiError(422, "validation_error", "invalid probe options", fields=fields)
    result = await request.app[PLANE].test_channel(
        request.match_info["id"], model=model, timeout=float(timeout)
    )
    return _json(result)


async def channel_models(request: web.Request) -> web.Response:
    """The upstream's models for a channel (fastgate.admin.discovery); upstream
    failures are 502/504 with the upstream's status and message, never the key."""
    from fastgate.admin.discovery import (
        NotDiscoverable,
        UpstreamError,
        UpstreamTimeout,
        UpstreamUnreachable,
        discover_models,
        models_report,
    )

    text = request.query.get("timeout", "15")
    try:
        timeout = float(text)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= 120:
        raise ApiError(
            422,
            "validation_error",
            "invalid discovery options",
            fields={"timeout": "expected seconds between 0 and 120"},
        )
    ch = await request.app[PLANE].channel_config(request.match_info["id"])
    try:
        ids = await discover_models(ch, timeout=timeout)
    except NotDiscoverable as exc:
        raise ApiError(400, "not_discoverable", str(exc)) from None
    except UpstreamTimeout as exc:
        raise ApiError(504, "upstream_timeout", str(exc), type_="server_error") from None
    except UpstreamUnreachable as exc:
        raise ApiError(502, "upstream_unreachable", str(exc), type_="server_error") from None
    except UpstreamError as exc:
        err = {
            "message": exc.message,
            "type": "server_error",
            "code": "upstream_error",
            "upstream_status": exc.status,
        }
        return _json({"error": err}, 502)
    return _json({"object": "list", **models_report(ch, ids)})


async def usage(request: web.Request) -> web.Response:
    q = request.query
    fields: dict[str, str] = {}
    times: dict[str, float | None] = {"since": None, "until": None}
    for name in times:
        text = q.get(name, "")
        if text:
            try:
                times[name] = parse_time(text)
            except ValueError as exc:
                fields[name] = str(exc)
    group_by = q.get("group_by") or None
    if group_by in ("none", "total"):
        group_by = None
    if fields:
        raise ApiError(422, "validation_error", "invalid usage query", fields=fields)
    result = await request.app[PLANE].usage(
        group_by=group_by,
        since=times["since"],
        until=times["until"],
        tag=q.get("tag") or None,
        bucket=q.get("bucket") or None,
        key_name=q.get("key") or None,
    )
    result["object"] = "usage"
    return _json(result)


async def missing_prices(request: web.Request) -> web.Response:
    return _json(await request.app[PLANE].missing_prices())


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        got = ctx.status()
        if inspect.isawaitable(got):  # --workers N: gathered from every worker
            got = await got
        out = dict(got)
    except Exception as exc:
        log.exception("admin status: the data plane's status failed")
        out = {"error": f"runtime status unavailable: {exc}"}
    health = await request.app[PLANE].store_health()
    store = out.get("store")
    out["store"] = {**(store if isinstance(store, dict) else {}), "health": health}
    return _json(out)


async def routers(request: web.Request) -> web.Response:
    """The current order of every router and model route, and why (the answering
    worker's: each worker measures its own latency)."""
    ctx = request.app[CTX]
    if ctx.routers is None:
        raise ApiError(404, "not_found", "no routing report in this process")
    return _json(ctx.routers())


# --------------------------------------------------------------------------- dashboard


def _static_file(name: str) -> web.FileResponse:
    path = STATIC_DIR / name
    resp = web.FileResponse(path)
    ctype = _STATIC_TYPES.get(path.suffix)
    if ctype:
        resp.headers["Content-Type"] = ctype
    resp.headers["Cache-Control"] = "no-cache"
    return resp


async def dashboard_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


async def dashboard_index(request: web.Request) -> web.StreamResponse:
    return _static_file("index.html")


async def dashboard_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    # Only the files shipped in static/ (a fixed list: no path ever reaches the disk).
    if name not in request.app[_FILES]:
        raise web.HTTPNotFound()
    return _static_file(name)


_FILES = web.AppKey("fastgate_admin_files", frozenset)


def build_admin_app(ctx: AdminContext) -> web.Application:
    """The admin application; run it with web.AppRunner + TCPSite on the admin port."""
    app = web.Application(middlewares=[_middleware], client_max_size=4 * 2**20)
    app[CTX] = ctx
    app[PLANE] = ControlPlane(ctx.store, ctx.config)
    app[_FILES] = frozenset(
        p.name for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    r = app.router
    kinds = "{kind:" + "|".join(_PLURALS) + "}"
    r.add_get("/admin/status", status)
    r.add_get("/admin/usage", usage)
    r.add_get("/admin/routers", routers)
    r.add_get("/admin/prices/missing", missing_prices)  # before /admin/prices/{id}
    from fastgate.admin.runs_api import add_run_routes  # imports this module

    add_run_routes(r)
    r.add_post("/admin/channels/{id:.+}/test", test_channel)
    r.add_get("/admin/channels/{id:.+}/models", channel_models)
    r.add_get(f"/admin/{kinds}", list_entries)
    r.add_post(f"/admin/{kinds}", create_entry)
    r.add_get(f"/admin/{kinds}/{{id:.+}}", get_entry)
    r.add_patch(f"/admin/{kinds}/{{id:.+}}", patch_entry)
    r.add_delete(f"/admin/{kinds}/{{id:.+}}", delete_entry)
    r.add_get("/", dashboard_root)
    r.add_get("/dashboard", dashboard_root)
    r.add_get("/dashboard/", dashboard_index)
    r.add_get("/dashboard/{name}", dashboard_file)
    return app
