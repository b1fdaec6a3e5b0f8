"""Prometheus metrics: counters kept as plain dict increments.

Two hot counters have their own dicts (`status`, `attempts`: the data plane
bumps them inline). Every other counter goes through `inc(name, labels, n)`:
`name` must be declared in `COUNTERS` (its help text), `labels` is a tuple of
(label, value) pairs. `counters` is the one place a scrape (or a worker
publishing its numbers) reads them from.
"""

from __future__ import annotations

from typing import Any

# name -> help text, for every counter kept in `Metrics.counters`.
COUNTERS: dict[str, str] = {}


def declare(name: str, help_text: str) -> str:
    """Declare a counter (module import time); returns its name."""
    COUNTERS[name] = help_text
    return name


Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.records_dropped = 0
        self.counters: dict[str, dict[Labels, int]] = {}

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

    def render(self, app: Any) -> bytes:
        lines = [
            "# HELP fastgate_requests_total Responses sent, by HTTP status.",
            "# TYPE fastgate_requests_total counter",
        ]
        for status, n in sorted(self.status.items()):
            lines.append(f'fastgate_requests_total{{status="{status}"}} {n}')
        lines += [
            "# HELP fastgate_upstream_attempts_total Upstream attempts, by channel and outcome.",
            "# TYPE fastgate_upstream_attempts_total counter",
        ]
        for (ch, outcome), n in sorted(self.attempts.items()):
            lines.append(
                f'fastgate_upstream_attempts_total{{channel="{ch}",outcome="{outcome}"}} {n}'
            )
        lines += [
            "# HELP fastgate_inflight_requests Requests being answered now.",
            "# TYPE fastgate_inflight_requests gauge",
            f"fastgate_inflight_requests {app.inflight}",
            "# HELP fastgate_client_connections Open client connections.",
            "# TYPE fastgate_client_connections gauge",
            f"fastgate_client_connections {len(app.clients)}",
            "# HELP fastgate_upstream_connections Open upstream connections.",
            "# TYPE fastgate_upstream_connections gauge",
            f"fastgate_upstream_connections {len(app.pool.all)}",
            "# HELP fastgate_usage_records_dropped_total Usage records dropped (queue full).",
            "# TYPE fastgate_usage_records_dropped_total counter",
            f"fastgate_usage_records_dropped_total {app.sink.dropped}",
            "# HELP fastgate_snapshot_version Version of the config snapshot in use.",
            "# TYPE fastgate_snapshot_version gauge",
            f"fastgate_snapshot_version {app.snapshot.version}",
            "# HELP fastgate_channel_cooldown_seconds Seconds a channel is still skipped "
            "for its upstream's rate limits (429 or a budget at 0).",
            "# TYPE fastgate_channel_cooldown_seconds gauge",
        ]
        for ch, left in app.cooldowns().items():
            lines.append(f'fastgate_channel_cooldown_seconds{{channel="{ch}"}} {left}')
        for name in sorted(self.counters):
            lines += [f"# HELP {name} {COUNTERS.get(name, name)}", f"# TYPE {name} counter"]
            for labels, n in sorted(self.counters[name].items()):
                if labels:
                    text = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{text}}} {n}")
                else:
                    lines.append(f"{name} {n}")
        return ("\n".join(lines) + "\n").encode()
