"""pytest-benchmark glue for bench/micro: print the cost per feed / event / KiB.

Medians, not means: the machines these run on are shared and noisy.

The micro-benchmarks live outside the default test run (testpaths = tests); run
them by path: `pytest bench/micro -q --benchmark-only`.
"""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    session = getattr(config, "_benchmarksession", None)
    benchmarks = getattr(session, "benchmarks", None) or []
    rows = []
    for bench in benchmarks:
        stats = getattr(bench, "stats", None)
        info = getattr(bench, "extra_info", {}) or {}
        if stats is None or not info.get("feeds"):
            continue
        ns = stats.median * 1e9
        row = f"{bench.name:<42} {ns / info['feeds']:>8.0f} ns/feed"
        if info.get("events"):
            row += f" {ns / info['events']:>7.0f} ns/event"
        if info.get("bytes"):
            row += f" {ns / (info['bytes'] / 1024):>7.0f} ns/KiB"
        rows.append(row)
    if rows:
        terminalreporter.write_sep("-", "per-feed cost (median)")
        for row in rows:
            terminalreporter.write_line(row)
