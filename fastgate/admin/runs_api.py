"""The admin API's run routes (see fastgate/admin/runs.py for what they say):

  GET /admin/runs?since=&until=&limit=         runs, newest last request first
  GET /admin/runs?compare=A,B&since=&until=    two runs side by side
  GET /admin/runs/{tag}?since=&until=          one run: totals, per model, per
                                               channel, timeline
  GET /admin/usage/latency?since=&until=&tag=&bucket=minute|hour|day
                                               latency / TTFB / gateway overhead
                                               percentiles per time bucket

Times take the forms of `/admin/usage` (unix seconds, RFC 3339, or a span back
from now such as 1h or 7d).
"""

from __future__ import annotations

from aiohttp import web

from fastgate.admin import parse_time
from fastgate.admin.app import CTX, ApiError, _json
from fastgate.admin.runs import (
    DEFAULT_LIMIT,
    compare_runs,
    latency_series,
    list_runs,
    show_run,
)

__all__ = ["add_run_routes"]


def _window(request: web.Request) -> dict[str, float | None]:
    fields: dict[str, str] = {}
    out: dict[str, float | None] = {"since": None, "until": None}
    for name in out:
        text = request.query.get(name, "")
        if text:
            try:
                out[name] = parse_time(text)
            except ValueError as exc:
                fields[name] = str(exc)
    if fields:
        raise ApiError(422, "validation_error", "invalid time range", fields=fields)
    return out


async def runs(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    window = _window(request)
    compare = request.query.get("compare")
    if compare is not None:
        tags = compare.split(",")
        if len(tags) != 2 or not all(tags):
            raise ApiError(
                422,
                "validation_error",
                "compare takes two run tags: ?compare=A,B",
                fields={"compare": "expected two comma-separated tags"},
            )
        return _json(await compare_runs(store, tags[0], tags[1], **window))
    text = request.query.get("limit", "")
    limit = DEFAULT_LIMIT
    if text:
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 10_000:
            raise ApiError(
                422,
                "validation_error",
                "invalid limit",
                fields={"limit": "expected a whole number from 1 to 10000"},
            )
    return _json(await list_runs(store, limit=limit, **window))


async def run(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    return _json(await show_run(store, request.match_info["tag"], **_window(request)))


async def latency(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    result = await latency_series(
        store,
        tag=request.query.get("tag") or None,
        bucket=request.query.get("bucket") or "hour",
        **_window(request),
    )
    return _json(result)


def add_run_routes(r: web.UrlDispatcher) -> None:
    """Register the run routes (before any catch-all /admin/{kind} route)."""
    r.add_get("/admin/runs", runs)
    r.add_get("/admin/runs/{tag:.+}", run)
    r.add_get("/admin/usage/latency", latency)
