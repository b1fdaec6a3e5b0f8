"""Prometheus metrics: counters kept as plain dict increments.

Two hot counters have their own dicts (`status`, `attempts`: the data plane
bumps them inline). Every other counter goes through `inc(name, labels, n)`:
`name` must be declared in `COUNTERS` (its help text), `labels` is a tuple of
(label, value) pairs. `counters` is the one place a scrape (or a worker
publishing its numbers) reads them from. A gauge (a value read at scrape
time, such as the entries a cache holds) is a function registered in
`gauges` under a name declared with `declare_gauge`.

`Metrics.report` turns one process's numbers into a JSON-able dict;
`render_reports` renders one report (one process) or a whole instance's
(`--workers N`: counters summed over every worker slot, gauges summed over the
workers that answered, plus per-worker series; see fastgate/siblings.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# name -> help text, for every counter kept in `Metrics.counters`.
COUNTERS: dict[str, str] = {}


def declare(name: str, help_text: str) -> str:
    """Declare a counter (module import time); returns its name."""
    COUNTERS[name] = help_text
    return name


# name -> help text, for every gauge a `Metrics.gauges` reader may report.
GAUGE_HELP: dict[str, str] = {}


def declare_gauge(name: str, help_text: str) -> str:
    """Declare a gauge (module import time); returns its name."""
    GAUGE_HELP[name] = help_text
    return name


Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.records_dropped = 0
        self.counters: dict[str, dict[Labels, int]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}  # name -> reader, read per scrape

    def inc(self, name: str, labels: Labels = (), n: int = 1) -> None:
        """Add `n` to counter `name` (declared in COUNTERS) with `labels`."""
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        series[labels] = series.get(labels, 0) + n

    def count_status(self, status: int) -> None:
        self.status[status] = self.status.get(status, 0) + 1

    def attempt(self, channel: str, outcome: str) -> None:
        key = (channel, outcome)
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def seed(self, report: dict[str, Any]) -> None:
        """Start from the counters a predecessor in this worker slot reported
        (a respawned worker continues its slot's counters instead of resetting them)."""
        for code, n in report.get("status", {}).items():
            self.status[int(code)] = self.status.get(int(code), 0) + n
        for ch, outcome, n in report.get("attempts", ()):
            self.attempts[(ch, outcome)] = self.attempts.get((ch, outcome), 0) + n
        for name, series in report.get("counters", {}).items():
            for labels, n in series:
                self.inc(name, tuple((k, v) for k, v in labels), n)
        self.records_dropped += report.get("records_dropped", 0)

    def report(self, app: Any) -> dict[str, Any]:
        """This process's counters and gauges as a JSON-able dict (what a worker
        publishes to its siblings; `render_reports` renders one or several)."""
        return {
            "status": {str(k): n for k, n in self.status.items()},
            "attempts": [[ch, outcome, n] for (ch, outcome), n in self.attempts.items()],
            "counters": {
                name: [[list(labels), n] for labels, n in series.items()]
                for name, series in self.counters.items()
            },
            "records_dropped": self.records_dropped + app.sink.dropped,
            "inflight": app.inflight,
            "client_connections": len(app.clients),
            "upstream_connections": len(app.pool.all),
            "snapshot_version": app.snapshot.version,
            "gauges": {name: read() for name, read in self.gauges.items()},
            "cooldowns": app.cooldowns(),
        }

    def render(self, app: Any) -> bytes:
        """One process's scrape (no --workers supervisor)."""
        return render_reports([self.report(app)])


GAUGES = (
    ("inflight", "fastgate_inflight_requests", "Requests being answered now."),
    ("client_connections", "fastgate_client_connections", "Open client connections."),
    ("upstream_connections", "fastgate_upstream_connections", "Open upstream connections."),
)


def _labels(pairs: Any) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


def render_reports(
    reports: list[dict[str, Any]],
    stale: list[dict[str, Any]] = (),  # type: ignore[assignment]
    workers: list[tuple[int, int]] | None = None,
    expected: int = 1,
) -> bytes:
    """Prometheus text for one instance. `reports`: the live workers' reports;
    `stale`: the last published report of a worker slot that did not answer (its
    counters count, its gauges do not). Counters are summed over both, gauges
    over the live ones. `workers` ([(index, pid)] of the live reports, in order)
    switches on the per-worker series: `fastgate_workers`, `fastgate_workers_reporting`,
    `fastgate_worker_info{worker,pid}` and the snapshot version per worker."""
    status: dict[int, int] = {}
    attempts: dict[tuple[str, str], int] = {}
    counters: dict[str, dict[Labels, int]] = {}
    dropped = 0
    for rep in [*reports, *stale]:
        for code, n in rep["status"].items():
            status[int(code)] = status.get(int(code), 0) + n
        for ch, outcome, n in rep["attempts"]:
            attempts[(ch, outcome)] = attempts.get((ch, outcome), 0) + n
        for name, series in rep["counters"].items():
            into = counters.setdefault(name, {})
            for labels, n in series:
                key = tuple((k, v) for k, v in labels)
                into[key] = into.get(key, 0) + n
        dropped += rep["records_dropped"]
    lines = [
        "# HELP fastgate_requests_total Responses sent, by HTTP status.",
        "# TYPE fastgate_requests_total counter",
    ]
    for code, n in sorted(status.items()):
        lines.append(f'fastgate_requests_total{{status="{code}"}} {n}')
    lines += [
        "# HELP fastgate_upstream_attempts_total Upstream attempts, by channel and outcome.",
        "# TYPE fastgate_upstream_attempts_total counter",
    ]
    for (ch, outcome), n in sorted(attempts.items()):
        lines.append(f'fastgate_upstream_attempts_total{{channel="{ch}",outcome="{outcome}"}} {n}')
    for field, name, help_text in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines.append(f"{name} {sum(rep[field] for rep in reports)}")
    gauges: dict[str, float] = {}
    cooldowns: dict[str, float] = {}
    for rep in reports:
        for name, value in rep.get("gauges", {}).items():
            gauges[name] = gauges.get(name, 0) + value
        for ch, left in rep.get("cooldowns", {}).items():
            cooldowns[ch] = max(cooldowns.get(ch, 0.0), left)
    for name in sorted(gauges):
        lines += [f"# HELP {name} {GAUGE_HELP.get(name, name)}", f"# TYPE {name} gauge"]
        lines.append(f"{name} {gauges[name]}")
    lines += [
        "# HELP fastgate_channel_cooldown_seconds Seconds a channel is still skipped "
        "for its upstream's rate limits (429 or a budget at 0; the longest of the workers).",
        "# TYPE fastgate_channel_cooldown_seconds gauge",
    ]
    for ch, left in sorted(cooldowns.items()):
        lines.append(f'fastgate_channel_cooldown_seconds{{channel="{ch}"}} {left}')
    lines += [
        "# HELP fastgate_usage_records_dropped_total Usage records dropped (queue full).",
        "# TYPE fastgate_usage_records_dropped_total counter",
        f"fastgate_usage_records_dropped_total {dropped}",
        "# HELP fastgate_snapshot_version Version of the config snapshot in use.",
        "# TYPE fastgate_snapshot_version gauge",
    ]
    if workers is None:
        lines.append(f"fastgate_snapshot_version {reports[0]['snapshot_version']}")
    else:
        for (index, _pid), rep in zip(workers, reports, strict=True):
            lines.append(f'fastgate_snapshot_version{{worker="{index}"}} {rep["snapshot_version"]}')
        lines += [
            "# HELP fastgate_workers Worker processes the instance runs (--workers).",
            "# TYPE fastgate_workers gauge",
            f"fastgate_workers {expected}",
            "# HELP fastgate_workers_reporting Workers that answered this scrape.",
            "# TYPE fastgate_workers_reporting gauge",
            f"fastgate_workers_reporting {len(reports)}",
            "# HELP fastgate_worker_info A worker that answered this scrape: its index and pid.",
            "# TYPE fastgate_worker_info gauge",
        ]
        for index, pid in sorted(workers):
            lines.append(f'fastgate_worker_info{{worker="{index}",pid="{pid}"}} 1')
    for name in sorted(counters):
        lines += [f"# HELP {name} {COUNTERS.get(name, name)}", f"# TYPE {name} counter"]
        for labels, n in sorted(counters[name].items()):
            if labels:
                lines.append(f"{name}{{{_labels(labels)}}} {n}")
            else:
                lines.append(f"{name} {n}")
    return ("\n".join(lines) + "\n").encode()
