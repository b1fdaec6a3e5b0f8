"""Benchmark runs: the usage records of one `x-fastgate-tag`, summed up.

Shared by the admin API (`GET /admin/runs`, `/admin/runs/{tag}`,
`/admin/runs?compare=A,B`, `/admin/usage/latency`) and the CLI (`fastgate runs`,
`runs show TAG`, `runs compare A B`), so both say the same thing. Every number
comes from the store (`Store.query_stats`: sums, counts and the percentiles,
whose rule is documented in fastgate/store/runs.py); this module only orders,
zero-fills and compares.
"""

from __future__ import annotations

import math
from typing import Any

from fastgate.store.base import InvalidEntry, NotFound

__all__ = [
    "COMPARED",
    "DEFAULT_LIMIT",
    "compare_runs",
    "latency_series",
    "list_runs",
    "show_run",
    "timeline_bucket",
]

DEFAULT_LIMIT = 50
_STEPS = {"minute": 60, "hour": 3600, "day": 86400}
# What `compare` puts side by side: (label, path into a run's stats).
COMPARED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("requests", ("requests",)),
    ("errors", ("errors",)),
    ("error_rate", ("error_rate",)),
    ("prompt_tokens", ("prompt_tokens",)),
    ("completion_tokens", ("completion_tokens",)),
    ("cached_tokens", ("cached_tokens",)),
    ("cost_usd", ("cost_usd",)),
    ("cache_hits", ("cache_hits",)),
    ("duration_s", ("duration_s",)),
    *(
        (f"{m}.{p}", (m, p))
        for m in ("latency_ms", "ttfb_ms", "gateway_ms")
        for p in ("p50", "p95", "p99")
    ),
)


async def _stats(store: Any, group_by: tuple[str, ...], **kw: Any) -> list[dict[str, Any]]:
    return await store.call(store.query_stats(group_by, **kw))


def _check_window(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and until < since:
        raise InvalidEntry(["runs.until: must not be before since"])


async def list_runs(
    store: Any,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Every run (tag) with requests in [since, until), newest last request first,
    at most `limit`; each run's figures count only its requests in the window."""
    _check_window(since, until)
    runs = await _stats(store, ("tag",), since=since, until=until, limit=limit)
    return {"object": "list", "since": since, "until": until, "limit": limit, "data": runs}


def timeline_bucket(first: float, last: float) -> str:
    """Minutes for a run of up to 6 hours, hours up to 14 days, then days."""
    span = last - first
    if span <= 6 * 3600:
        return "minute"
    if span <= 14 * 86400:
        return "hour"
    return "day"


def _fill(rows: list[dict[str, Any]], start: float, end: float, step: int) -> list[dict]:
    """Every bucket from the one holding `start` to the one holding `end`."""
    at = {r["bucket"]: r for r in rows}
    first = math.floor(start / step) * step
    last = math.floor(end / step) * step
    out = []
    for t in range(int(first), int(last) + 1, step):
        r = at.get(t)
        out.append(
            {"bucket": t, "requests": r["requests"] if r else 0, "errors": r["errors"] if r else 0}
        )
    return out


async def show_run(
    store: Any, tag: str, *, since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """One run: its totals, the same per model and per channel, and its timeline
    (requests and errors per minute, zero-filled; hours or days for long runs)."""
    _check_window(since, until)
    if not tag:
        raise InvalidEntry(["runs.tag: a run is named by a non-empty x-fastgate-tag"])
    window = {"since": since, "until": until, "tag": tag}
    found = await _stats(store, ("tag",), **window)
    if not found:
        raise NotFound(f'no requests tagged "{tag}"' + (" in this range" if since or until else ""))
    run = found[0]
    by_model = await _stats(store, ("model",), **window)
    by_channel = await _stats(store, ("channel",), **window)
    bucket = timeline_bucket(run["first_ts"], run["last_ts"])
    series = await store.call(
        store.query_usage(None, since=since, until=until, tag=tag, bucket=bucket)
    )
    timeline = _fill(series, run["first_ts"], run["last_ts"], _STEPS[bucket])
    for rows in (by_model, by_channel):
        rows.sort(key=lambda r: (-r["requests"], str(r.get("model", r.get("channel")))))
    return {
        "object": "run",
        "tag": tag,
        "since": since,
        "until": until,
        "run": run,
        "by_model": by_model,
        "by_channel": by_channel,
        "timeline_bucket": bucket,
        "timeline": timeline,
    }


def _pick(stats: dict[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = stats
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    return v


async def compare_runs(
    store: Any, a: str, b: str, *, since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """Two runs side by side: each one's `show_run`, and per compared figure
    a, b, delta (b - a) and ratio (b / a, None when a is 0 or missing)."""
    left = await show_run(store, a, since=since, until=until)
    right = await show_run(store, b, since=since, until=until)
    rows = []
    for label, path in COMPARED:
        x, y = _pick(left["run"], path), _pick(right["run"], path)
        both = x is not None and y is not None
        rows.append(
            {
                "metric": label,
                "a": x,
                "b": y,
                "delta": (y - x) if both else None,
                "ratio": (y / x) if both and x else None,
            }
        )
    return {"object": "run_comparison", "a": left, "b": right, "compared": rows}


async def latency_series(
    store: Any,
    *,
    since: float | None = None,
    until: float | None = None,
    tag: str | None = None,
    bucket: str = "hour",
) -> dict[str, Any]:
    """Latency, time to first byte and gateway overhead percentiles per time
    bucket (every request, tagged or not, unless `tag` names one run)."""
    _check_window(since, until)
    if bucket not in _STEPS:
        raise InvalidEntry([f"usage.bucket: must be one of {', '.join(_STEPS)}"])
    rows = await _stats(store, (bucket,), since=since, until=until, tag=tag, tagged_only=False)
    return {
        "object": "latency",
        "bucket": bucket,
        "since": since,
        "until": until,
        "tag": tag,
        "data": rows,
    }
