"""Budget periods: where the UTC day, week and month that contain a moment start
and end.

A week starts on Monday 00:00 UTC (ISO 8601); a month on its first day 00:00
UTC. Times are unix seconds; the bounds are whole seconds (start inclusive, end
exclusive). Pure arithmetic, imports nothing of fastgate (layer 1).
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["PERIODS", "period_bounds", "period_label"]

PERIODS = ("day", "week", "month")
DAY = 86400
_EPOCH_MONDAY = 4 * DAY  # 1970-01-01 was a Thursday; 1970-01-05 a Monday


def period_bounds(period: str, ts: float) -> tuple[int, int]:
    """(start, end) of the `period` ("day" | "week" | "month") that holds `ts`."""
    t = int(ts // 1)
    if period == "day":
        start = t - t % DAY
        return start, start + DAY
    if period == "week":
        start = t - (t - _EPOCH_MONDAY) % (7 * DAY)
        return start, start + 7 * DAY
    if period == "month":
        d = _dt.datetime.fromtimestamp(t, _dt.UTC)
        first = _dt.datetime(d.year, d.month, 1, tzinfo=_dt.UTC)
        nxt = _dt.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=_dt.UTC)
        return int(first.timestamp()), int(nxt.timestamp())
    raise ValueError(f"unknown budget period {period!r}")


def period_label(period: str, start: int) -> str:
    """A short name for the period that starts at `start` (2026-12-04, 2026-W49, 2026-12)."""
    d = _dt.datetime.fromtimestamp(start, _dt.UTC)
    if period == "week":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return d.strftime("%Y-%m")
    return d.strftime("%Y-%m-%d")
