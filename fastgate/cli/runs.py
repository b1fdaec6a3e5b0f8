"""`fastgate runs` (benchmark runs: requests grouped by `x-fastgate-tag`),
`fastgate runs show TAG` and `fastgate runs compare A B`.

The figures are `fastgate.admin.runs`'s, the admin API's own: the same store
queries, the same percentile rule (fastgate/store/runs.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from fastgate.cli.render import Column, Row, rfc3339, table, usd
from fastgate.cli.session import Session, UsageError

__all__ = ["add_runs_command"]


# --------------------------------------------------------------------------- cells


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pcts(metric: str) -> Callable[[Row], str]:
    return lambda r: "/".join(_ms((r.get(metric) or {}).get(p)) for p in ("p50", "p95", "p99"))


def _errors(r: Row) -> str:
    if not r["errors"]:
        return "0"
    codes = " ".join(
        f"{e['status']}{'/' + e['error_code'] if e['error_code'] else ''}:{e['requests']}"
        for e in r["errors_by_code"]
    )
    return f"{r['errors']} ({codes})"


def _duration(r: Row) -> str:
    s = float(r["duration_s"])
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _stat_columns(first: Column) -> tuple[Column, ...]:
    return (
        first,
        Column("REQUESTS", lambda r: r["requests"], right=True),
        Column("ERRORS", _errors),
        Column("PROMPT", lambda r: r["prompt_tokens"], right=True),
        Column("COMPLETION", lambda r: r["completion_tokens"], right=True),
        Column("CACHED", lambda r: r["cached_tokens"], right=True),
        Column("COST_USD", lambda r: usd(r["cost_micros"]), right=True),
        Column("HITS", lambda r: r["cache_hits"], right=True),
        Column("LATENCY_MS p50/95/99", _pcts("latency_ms")),
        Column("TTFB_MS p50/95/99", _pcts("ttfb_ms")),
        Column("GATEWAY_MS p50/95/99", _pcts("gateway_ms")),
    )


RUN_COLUMNS = (
    Column("TAG", lambda r: r["tag"]),
    Column("FIRST", lambda r: rfc3339(r["first_ts"])),
    Column("LAST", lambda r: rfc3339(r["last_ts"])),
    Column("DURATION", _duration, right=True),
    *_stat_columns(Column("", lambda r: ""))[1:],
)


def _cmp_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


COMPARE_COLUMNS = (
    Column("METRIC", lambda r: r["metric"]),
    Column("A", lambda r: _cmp_value(r["a"]), right=True),
    Column("B", lambda r: _cmp_value(r["b"]), right=True),
    Column("DELTA", lambda r: _cmp_value(r["delta"]), right=True),
    Column("B/A", lambda r: "-" if r["ratio"] is None else f"{r['ratio']:.3f}x", right=True),
)


# --------------------------------------------------------------------------- handlers


def _window(a: argparse.Namespace) -> dict[str, float | None]:
    from fastgate.admin import parse_time

    out: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = getattr(a, name, None)
        try:
            out[name] = parse_time(text) if text else None
        except ValueError as exc:
            raise UsageError(f"--{name}: {exc}") from None
    return out


async def list_runs(s: Session, a: argparse.Namespace) -> int:
    """Every run in the window, newest last request first."""
    from fastgate.admin.runs import list_runs as query

    if a.limit < 1:
        raise UsageError("--limit: must be at least 1")
    result = await query(s.store, limit=a.limit, **_window(a))
    if s.out.json:
        s.out.doc(result)
    elif not result["data"]:
        s.out.line("no tagged requests in this range (send x-fastgate-tag: NAME to name a run)")
    else:
        table(RUN_COLUMNS, result["data"])
    return 0


async def show(s: Session, a: argparse.Namespace) -> int:
    """One run: its totals, then per model and per channel."""
    from fastgate.admin.runs import show_run

    result = await show_run(s.store, a.tag, **_window(a))
    if s.out.json:
        s.out.doc(result)
        return 0
    table(RUN_COLUMNS, [result["run"]])
    for title, field, rows in (
        ("by model", "model", result["by_model"]),
        ("by channel", "channel", result["by_channel"]),
    ):
        s.out.line()
        s.out.line(title + ":")
        table(_stat_columns(Column(field.upper(), lambda r, f=field: r[f] or "(none)")), rows)
    peak = max((p["requests"] for p in result["timeline"]), default=0)
    s.out.line()
    s.out.line(
        f"timeline: {len(result['timeline'])} {result['timeline_bucket']}s, "
        f"peak {peak} requests per {result['timeline_bucket']} (--json for every point)"
    )
    return 0


async def compare(s: Session, a: argparse.Namespace) -> int:
    """Two runs side by side: A, B, B - A, B / A per figure."""
    from fastgate.admin.runs import compare_runs

    result = await compare_runs(s.store, a.a, a.b, **_window(a))
    if s.out.json:
        s.out.doc(result)
    else:
        s.out.line(f"A = {a.a}, B = {a.b}")
        table(COMPARE_COLUMNS, result["compared"])
    return 0


# --------------------------------------------------------------------------- parser


def add_runs_command(sub: Any, common: argparse.ArgumentParser, run: Any) -> None:
    """`fastgate runs [--since] [--until] [--limit]`, `runs show TAG`, `runs compare A B`."""

    def window(p: argparse.ArgumentParser, default: Any = None) -> None:
        # SUPPRESS under an action: `runs --since 1h show T` keeps the value
        p.add_argument("--since", default=default, help="7d, 24h, 30m, RFC 3339, or unix seconds")
        p.add_argument("--until", default=default, help="same forms as --since")

    p = sub.add_parser(
        "runs",
        parents=[common],
        help="benchmark runs (requests by x-fastgate-tag): counts, tokens, cost, latency",
        description="benchmark runs: requests grouped by their x-fastgate-tag",
    )
    p.set_defaults(main=run, func=list_runs)
    window(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    q = actions.add_parser("show", parents=[common], help="one run, per model and per channel")
    q.set_defaults(func=show)
    q.add_argument("tag", metavar="TAG")
    window(q, argparse.SUPPRESS)
    q = actions.add_parser("compare", parents=[common], help="two runs side by side")
    q.set_defaults(func=compare)
    q.add_argument("a", metavar="A")
    q.add_argument("b", metavar="B")
    window(q, argparse.SUPPRESS)
