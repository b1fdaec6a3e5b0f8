"""Run statistics: usage records grouped by run (the `x-fastgate-tag`), model,
channel or time bucket, with latency percentiles computed by the database.

What a group reports (`query_stats`): first and last request time, requests,
errors (status >= 400) and errors by (status, error_code), tokens (prompt,
completion, cached, cache write), cost (micro-dollars), response cache hits,
and the 50th/95th/99th percentiles of `latency_ms`, `ttfb_ms` and `gateway_ms`.

The percentile rule (both backends, the same number for the same rows)
---------------------------------------------------------------------
Percentiles are over the group's requests answered with status < 400 (errors
are counted, not timed: a refused request's time says nothing about the
upstream). For a fraction p of n sorted values v[0..n-1] (Postgres's
`percentile_cont`, linear interpolation between the two nearest ranks):

    pos = p * (n - 1);  lo = floor(pos);  hi = ceil(pos)
    value = v[lo] + (pos - lo) * (v[hi] - v[lo])      (v[lo] when lo == hi)

Postgres computes it with `percentile_cont(ARRAY[...]) WITHIN GROUP (ORDER BY
v)`. SQLite has no such aggregate: an ordered window numbers the values of each
group (`ROW_NUMBER() OVER (PARTITION BY ... ORDER BY v) - 1`, `COUNT(*) OVER
(PARTITION BY ...)`), the rows at ranks lo and hi are picked with the same
expressions, and the interpolation is the same IEEE double arithmetic. The
fractions are bound as parameters (never parsed from SQL text), so the rank
arithmetic starts from the same doubles on both, and on Python's side.
`tests/functional/test_runs.py` checks both backends against that rule.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import Any

from fastgate.store.errors import InvalidEntry

__all__ = ["PERCENTILES", "STAT_GROUPS", "TIMED", "RunQueries", "percentile_cont"]

PERCENTILES = (0.5, 0.95, 0.99)
TIMED = ("latency_ms", "ttfb_ms", "gateway_ms")
_COLUMNS = {"tag": "tag", "model": "model", "channel": "channel", "key": "key_name"}
_BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
STAT_GROUPS = (*_COLUMNS, *_BUCKETS)
_SUMS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_micros",
)


def percentile_cont(sorted_values: Sequence[float], p: float) -> float | None:
    """The documented rule in Python (what both backends compute): linear
    interpolation between ranks floor and ceil of p * (n - 1)."""
    n = len(sorted_values)
    if not n:
        return None
    pos = p * (n - 1)
    lo = int(pos)
    if lo == pos:
        return float(sorted_values[lo])
    a, b = float(sorted_values[lo]), float(sorted_values[lo + 1])
    return a + (pos - lo) * (b - a)


def _pkey(p: float) -> str:
    """0.5 -> "p50", 0.95 -> "p95", 0.999 -> "p99.9"."""
    text = f"{p * 100:.10g}"
    return "p" + text


class RunQueries(abc.ABC):
    """The run-statistics queries, mixed into SQLStore (needs `_tx`, `_floor_expr`
    and `dialect`)."""

    dialect = ""

    @abc.abstractmethod
    def _tx(self, write: bool = True) -> contextlib.AbstractAsyncContextManager[Any]: ...

    @abc.abstractmethod
    def _floor_expr(self, seconds: int) -> str: ...

    async def query_stats(
        self,
        group_by: Sequence[str] = ("tag",),
        *,
        since: float | None = None,
        until: float | None = None,
        tag: str | None = None,
        tagged_only: bool = True,
        limit: int | None = None,
        percentiles: Sequence[float] = PERCENTILES,
    ) -> list[dict[str, Any]]:
        """Statistics per group (see the module docs); `group_by` names columns
        ("tag", "model", "channel", "key") and at most one bucket ("minute",
        "hour", "day": adds "bucket", its unix start). `tagged_only` leaves out
        requests without a tag (they belong to no run). Order: by bucket when
        bucketed, else by last request time, newest first; `limit` keeps the first
        `limit` groups."""
        group_by = tuple(group_by)
        problems = [
            f"runs.group_by: unknown group {g!r} (one of {', '.join(STAT_GROUPS)})"
            for g in group_by
            if g not in STAT_GROUPS
        ]
        buckets = [g for g in group_by if g in _BUCKETS]
        if len(buckets) > 1:
            problems.append("runs.group_by: at most one time bucket")
        if limit is not None and limit < 1:
            problems.append("runs.limit: must be >= 1")
        if any(not 0 <= p <= 1 for p in percentiles):
            problems.append("runs.percentiles: must be between 0 and 1")
        if problems:
            raise InvalidEntry(problems)
        groups = [
            (f"g{i}", _COLUMNS[g] if g in _COLUMNS else self._floor_expr(_BUCKETS[g]))
            for i, g in enumerate(group_by)
        ]
        where: list[str] = []
        args: list[Any] = []
        for cond, val in (("ts >= ", since), ("ts < ", until), ("tag = ", tag)):
            if val is not None:
                args.append(float(val) if cond.startswith("ts") else val)
                where.append(f"{cond}${len(args)}")
        if tagged_only:
            where.append("tag <> ''")
        async with self._tx(write=False) as tx:
            totals = await tx.fetch(
                *self._stats_totals_sql(groups, where, args, bool(buckets), limit)
            )
            totals = [r for r in totals if int(r["requests"])]  # no groups: one row, maybe 0
            if not totals:
                return []
            if limit is not None:  # only the groups kept: the other queries name them
                where, args = _only(groups, totals, where, args)
            errors = await tx.fetch(*self._stats_errors_sql(groups, where, args))
            pcts = await tx.fetch(*self._stats_percentiles_sql(groups, where, args, percentiles))
        return _assemble(group_by, totals, errors, pcts, percentiles, self.dialect == "postgres")

    # -- SQL ------------------------------------------------------------------------------

    def _stats_totals_sql(
        self,
        groups: Sequence[tuple[str, str]],
        where: Sequence[str],
        args: Sequence[Any],
        bucketed: bool,
        limit: int | None,
    ) -> tuple[Any, ...]:
        sums = ", ".join(f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}" for c in _SUMS)
        sql = (
            f"SELECT {_select(groups)}COUNT(*) AS requests, "
            "MIN(ts) AS first_ts, MAX(ts) AS last_ts, "
            "MAX(ts + latency_ms / 1000.0) AS last_end, "
            "CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, "
            "CAST(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS BIGINT) AS cache_hits, "
            f"{sums} FROM usage_records{_where_sql(where)}{_group_sql(groups)}"
        )
        order = [a for a, _ in groups]
        if bucketed:
            sql += " ORDER BY " + ", ".join(order)
        elif groups:
            sql += " ORDER BY last_ts DESC, " + ", ".join(order)
        args = list(args)
        if limit is not None:
            args.append(int(limit))
            sql += f" LIMIT ${len(args)}"
        return (sql, *args)

    def _stats_errors_sql(
        self, groups: Sequence[tuple[str, str]], where: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, ...]:
        sql = (
            f"SELECT {_select(groups)}status, error_code, COUNT(*) AS n FROM usage_records"
            f"{_where_sql(where, 'status >= 400')}{_group_sql(groups, 'status', 'error_code')}"
        )
        return (sql, *args)

    def _timed_union(self, groups: Sequence[tuple[str, str]], where: Sequence[str]) -> str:
        """One row per (group, metric, value) of the requests answered < 400."""
        cond = _where_sql(where, "status < 400")
        return " UNION ALL ".join(
            f"SELECT {_select(groups)}'{m}' AS m, {m} AS v FROM usage_records{cond}" for m in TIMED
        )

    def _stats_percentiles_sql(
        self,
        groups: Sequence[tuple[str, str]],
        where: Sequence[str],
        args: Sequence[Any],
        percentiles: Sequence[float],
    ) -> tuple[Any, ...]:
        gcols = "".join(f"{a}, " for a, _ in groups)
        base = self._timed_union(groups, where)
        args = list(args)
        if self.dialect == "postgres":
            args.append([float(p) for p in percentiles])
            sql = (
                f"SELECT {gcols}m, COUNT(*) AS n, percentile_cont(${len(args)}::float8[]) "
                f"WITHIN GROUP (ORDER BY v) AS p FROM ({base}) s GROUP BY {gcols}m"
            )
            return (sql, *args)
        # SQLite: rank the values of each (group, metric), pick ranks lo and hi.
        part = f"PARTITION BY {gcols}m"
        picks, outs = [], []
        for k, p in enumerate(percentiles):
            args.append(float(p))
            pos = f"(${len(args)} * (n - 1))"
            lo = f"CAST({pos} AS INTEGER)"
            hi = f"({lo} + ({pos} > {lo}))"
            picks.append(
                f"MAX(CASE WHEN i = {lo} THEN v END) AS lo{k}, "
                f"MAX(CASE WHEN i = {hi} THEN v END) AS hi{k}, "
                f"MAX({pos} - {lo}) AS f{k}"
            )
            outs.append(f"lo{k} + f{k} * (hi{k} - lo{k}) AS p{k}")
        sql = (
            f"WITH s AS ({base}), r AS (SELECT {gcols}m, v, "
            f"ROW_NUMBER() OVER ({part} ORDER BY v) - 1 AS i, COUNT(*) OVER ({part}) AS n "
            f"FROM s), q AS (SELECT {gcols}m, n, {', '.join(picks)} FROM r "
            f"GROUP BY {gcols}m, n) SELECT {gcols}m, n, {', '.join(outs)} FROM q"
        )
        return (sql, *args)


def _select(groups: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{expr} AS {alias}, " for alias, expr in groups)


def _where_sql(where: Sequence[str], *more: str) -> str:
    conds = [*where, *more]
    return (" WHERE " + " AND ".join(conds)) if conds else ""


def _group_sql(groups: Sequence[tuple[str, str]], *more: str) -> str:
    cols = [a for a, _ in groups] + list(more)
    return (" GROUP BY " + ", ".join(cols)) if cols else ""


def _only(
    groups: Sequence[tuple[str, str]], kept: Sequence[Any], where: Sequence[str], args: list[Any]
) -> tuple[list[str], list[Any]]:
    """Restrict later queries to the groups the limited totals query kept (by their
    first column: a run's tag, or a model/channel name)."""
    alias, expr = groups[0]
    values = sorted({r[alias] for r in kept}, key=str)
    args = list(args)
    marks = []
    for v in values:
        args.append(v)
        marks.append(f"${len(args)}")
    return [*where, f"{expr} IN ({', '.join(marks)})"], args


def _assemble(
    group_by: Sequence[str],
    totals: Sequence[Any],
    errors: Sequence[Any],
    pcts: Sequence[Any],
    percentiles: Sequence[float],
    array: bool,
) -> list[dict[str, Any]]:
    aliases = [f"g{i}" for i in range(len(group_by))]

    def key(r: Any) -> tuple[Any, ...]:
        return tuple(r[a] for a in aliases)

    by_code: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in errors:
        by_code.setdefault(key(r), []).append(
            {"status": int(r["status"]), "error_code": r["error_code"], "requests": int(r["n"])}
        )
    names = [_pkey(p) for p in percentiles]
    timed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in pcts:
        # Postgres: one array; SQLite: a column per fraction
        values = list(r["p"]) if array else [r[f"p{k}"] for k in range(len(percentiles))]
        entry = timed.setdefault(key(r), {"n": int(r["n"])})
        entry[r["m"]] = {
            n: None if v is None else float(v) for n, v in zip(names, values, strict=True)
        }
    out = []
    for r in totals:
        k = key(r)
        d: dict[str, Any] = {}
        for g, a in zip(group_by, aliases, strict=True):
            if g in _BUCKETS:
                d["bucket"] = int(r[a]) * _BUCKETS[g]
            else:
                d[g] = r[a]
        requests = int(r["requests"])
        errors_n = int(r["errors"])
        first, last = float(r["first_ts"]), float(r["last_ts"])
        d.update(
            requests=requests,
            errors=errors_n,
            error_rate=errors_n / requests if requests else 0.0,
            errors_by_code=sorted(
                by_code.get(k, []), key=lambda e: (-e["requests"], e["status"], e["error_code"])
            ),
            cache_hits=int(r["cache_hits"]),
            first_ts=first,
            last_ts=last,
            duration_s=max(0.0, float(r["last_end"]) - first),
        )
        for c in _SUMS:
            d[c] = int(r[c])
        d["cost_usd"] = d["cost_micros"] / 1_000_000
        t = timed.get(k, {})
        d["timed_requests"] = int(t.get("n", 0))
        empty = dict.fromkeys(names)
        for m in TIMED:
            d[m] = t.get(m, dict(empty))
        out.append(d)
    return out
