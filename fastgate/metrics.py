"""Prometheus metrics: counters kept as plain dict increments, and the
per-request families folded from the usage records off the hot path.

Two hot counters have their own dicts (`status`, `attempts`: the data plane
bumps them inline). Every other counter goes through `inc(name, labels, n)`:
`name` must be declared in `COUNTERS` (its help text), `labels` is a tuple of
(label, value) pairs. `counters` is the one place a scrape (or a worker
publishing its numbers) reads them from. A gauge (a value read at scrape
time, such as the entries a cache holds) is a function registered in
`gauges` under a name declared with `declare_gauge`.

Per-request families (requests by ingress/model/channel/status, the latency,
time-to-first-byte and gateway-overhead histograms, tokens and cost) cost the
data plane nothing: every request already leaves one usage record tuple in the
sink, and the sink hands each batch to `fold` where it ships it (at most every
100 ms, and at once when a scrape asks: `report` ships what waits first), so a
scrape is exact for what was answered before it. A model name the snapshot does
not route (a 404 for a made-up name) is labelled `model=""`: a client cannot
grow the label set.

`Metrics.report` turns one process's numbers into a JSON-able dict;
`render_reports` renders one report (one process) or a whole instance's
(`--workers N`: counters and histograms summed over every worker slot, gauges
summed over the workers that answered, plus per-worker series; see
fastgate/siblings.py).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any

from fastgate.vocab.record import FIELD_INDEX, RECORD_FIELDS

# name -> help text, for every counter kept in `Metrics.counters`.
COUNTERS: dict[str, str] = {}
LABELLED: set[str] = set()  # declared counters whose series have labels


def declare(name: str, help_text: str, labelled: bool = False) -> str:
    """Declare a counter (module import time); returns its name. A scrape
    shows every declared counter; an unlabelled one is 0 until counted."""
    COUNTERS[name] = help_text
    if labelled:
        LABELLED.add(name)
    return name


# name -> help text, for every gauge a `Metrics.gauges` reader may report.
GAUGE_HELP: dict[str, str] = {}


def declare_gauge(name: str, help_text: str) -> str:
    """Declare a gauge (module import time); returns its name."""
    GAUGE_HELP[name] = help_text
    return name


Labels = tuple[tuple[str, str], ...]

# Histogram bounds in milliseconds (the records' unit); rendered in seconds.
LATENCY_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
OVERHEAD_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
HISTOGRAMS = (  # (name, help, bounds, index of its counts in a series)
    (
        "fastgate_request_duration_seconds",
        "Total latency of proxied requests: request read -> response end.",
        LATENCY_MS,
        0,
    ),
    (
        "fastgate_time_to_first_byte_seconds",
        "Request read -> the upstream's response head (requests that got one).",
        LATENCY_MS,
        2,
    ),
    (
        "fastgate_gateway_overhead_seconds",
        "Time spent in the gateway itself: latency minus the upstream windows "
        "(the usage record's gateway_ms).",
        OVERHEAD_MS,
        4,
    ),
)
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write")  # series[6:10]
COST = 10  # series[10]: integer micro-dollars

# The record fields `fold` reads, in this order: the requests counter's key
# (ingress, model, channel, status), then latency, ttfb, gateway time, the four
# token counts and the cost.
_NUMERIC = ("status", "latency_ms", "ttfb_ms", "gateway_ms", "prompt_tokens")
_NUMERIC += ("completion_tokens", "cached_tokens", "cache_write_tokens", "cost_micros")
_FOLDED = tuple(FIELD_INDEX[f] for f in ["ingress", "model", "channel", *_NUMERIC])
_WIDTH = len(RECORD_FIELDS)


def _new_series() -> list[Any]:
    """[latency counts, latency sum, ttfb counts, ttfb sum, overhead counts,
    overhead sum, prompt, completion, cached, cache_write, cost micros]."""
    n, m = len(LATENCY_MS) + 1, len(OVERHEAD_MS) + 1
    return [[0] * n, 0.0, [0] * n, 0.0, [0] * m, 0.0, 0, 0, 0, 0, 0]


def _as_tuple(record: Any) -> tuple[Any, ...]:
    """A record given as a dict, list, object or older (shorter) tuple, as a
    tuple in RECORD_FIELDS order (missing fields: 0 or "")."""
    if isinstance(record, list | tuple):
        record = dict(zip(RECORD_FIELDS, record, strict=False))
    if not isinstance(record, dict):
        record = {f: getattr(record, f, None) for f in RECORD_FIELDS}
    got = (record.get(f) for f in RECORD_FIELDS)
    return tuple(
        v if v is not None else (0 if f in _NUMERIC else "")
        for f, v in zip(RECORD_FIELDS, got, strict=True)
    )


class Metrics:
    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}  # (channel, kind): upstream errors
        self.records_dropped = 0
        self.counters: dict[str, dict[Labels, int]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}  # name -> reader, read per scrape
        # Folded from the usage records (`fold`); a sink may fold from its own thread.
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.series: dict[tuple[str, str, str], list[Any]] = {}
        self.sink_base: dict[str, int] = {}  # a respawned worker's slot: written, rejected
        self.lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._known_of: Any = None  # the snapshot `_known` was built from

    def inc(self, name: str, labels: Labels = (), n: int = 1) -> None:
        """Add `n` to counter `name` (declared in COUNTERS) with `labels`."""
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        series[labels] = series.get(labels, 0) + n

    def count_status(self, status: int) -> None:
        self.status[status] = self.status.get(status, 0) + 1

    def attempt(self, channel: str, outcome: str) -> None:
        """One upstream attempt ended: "ok" (a response head accepted) or how it failed."""
        key = (channel, outcome)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if outcome != "ok":
            self.errors[key] = self.errors.get(key, 0) + 1

    def upstream_error(self, channel: str, kind: str) -> None:
        """An upstream failed after its attempt was counted ok (mid-response)."""
        key = (channel, kind)
        self.errors[key] = self.errors.get(key, 0) + 1

    # -- the usage records ----------------------------------------------------------

    def fold(self, records: list[Any], snapshot: Any = None) -> None:
        """Count a batch of usage records (tuples in RECORD_FIELDS order, or dicts)
        into the per-request families. `snapshot`: the models it routes are the
        only model labels kept (others count under model="").

        Batched so that the per-record work is C loops (zip, set, sort,
        groupby, sum); Python runs once per group of records with the same
        labels (and once per histogram bound)."""
        if not records:
            return
        if set(map(type, records)) != {tuple} or set(map(len, records)) != {_WIDTH}:
            records = [_as_tuple(r) for r in records]  # dicts, lists, older tuples
        if snapshot is not None and snapshot is not self._known_of:
            self._known = frozenset(m for _, m in snapshot.routes)
            self._known_of = snapshot
        known = self._known if snapshot is not None else None
        every = list(zip(*records, strict=True))  # the batch's columns
        folded = [every[i] for i in _FOLDED]
        groups: Iterable[tuple[Any, list[Any]]]
        if all(c.count(c[0]) == len(c) for c in folded[:4]):  # one set of labels
            groups = ((tuple(c[0] for c in folded[:4]), folded),)
        else:  # sort the columns by labels, then one slice of each per group
            keys = list(zip(*folded[:4], strict=True))
            order = sorted(range(len(keys)), key=keys.__getitem__)
            take = itemgetter(*order)
            folded = [take(c) for c in folded]
            groups = _slices(take(keys), folded)
        requests, series = self.requests, self.series
        with self.lock:
            for (ingress, model, channel, status), cols in groups:
                if known is not None and model not in known:
                    model = ""
                key = (ingress, model, channel)
                s = series.get(key)
                if s is None:
                    s = series[key] = _new_series()
                rkey = (*key, status)
                requests[rkey] = requests.get(rkey, 0) + len(cols[0])
                for at, values, bounds in (
                    (0, sorted(cols[4]), LATENCY_MS),
                    (2, sorted(filter(None, cols[5])), LATENCY_MS),  # a response head came
                    (4, sorted(cols[6]), OVERHEAD_MS),
                ):
                    counts = s[at]
                    below = 0
                    for i, bound in enumerate(bounds):
                        upto = bisect_right(values, bound)  # values <= bound: le's meaning
                        counts[i] += upto - below
                        below = upto
                    counts[-1] += len(values) - below
                    s[at + 1] += sum(values)
                for i in range(5):
                    s[6 + i] += sum(cols[7 + i])

    def _merge_records(self, reqs: Any, series: Any) -> None:
        """Add reported `requests` and `series` (JSON shapes) to this process's own."""
        with self.lock:
            for ingress, model, channel, status, n in reqs:
                k = (ingress, model, channel, int(status))
                self.requests[k] = self.requests.get(k, 0) + n
            for ingress, model, channel, *values in series:
                s = self.series.setdefault((ingress, model, channel), _new_series())
                _add_series(s, values)

    # -- reports ----------------------------------------------------------------------

    def seed(self, report: dict[str, Any]) -> None:
        """Start from the counters a predecessor in this worker slot reported
        (a respawned worker continues its slot's counters instead of resetting them)."""
        for code, n in report.get("status", {}).items():
            self.status[int(code)] = self.status.get(int(code), 0) + n
        for ch, outcome, n in report.get("attempts", ()):
            self.attempts[(ch, outcome)] = self.attempts.get((ch, outcome), 0) + n
        for ch, kind, n in report.get("errors", ()):
            self.errors[(ch, kind)] = self.errors.get((ch, kind), 0) + n
        for name, series in report.get("counters", {}).items():
            for labels, n in series:
                self.inc(name, tuple((k, v) for k, v in labels), n)
        self.records_dropped += report.get("records_dropped", 0)
        rec = report.get("records", {})
        self._merge_records(rec.get("requests", ()), rec.get("series", ()))
        for name, n in report.get("sink", {}).items():
            if name in ("written", "rejected"):
                self.sink_base[name] = self.sink_base.get(name, 0) + n

    def report(self, app: Any) -> dict[str, Any]:
        """This process's counters and gauges as a JSON-able dict (what a worker
        publishes to its siblings; `render_reports` renders one or several).
        The usage records waiting in the sink are shipped (and folded) first."""
        sink = app.sink
        ship = getattr(sink, "ship", None)
        if ship is not None:
            ship()
        with self.lock:
            records = {
                "requests": [[*k, n] for k, n in self.requests.items()],
                "series": [[*k, *s] for k, s in self.series.items()],
            }
        base = self.sink_base
        now = time.monotonic()
        breakers = [
            [
                c,
                m,
                "half_open" if b.state == "open" and now - b.opened_at >= b.cooldown else b.state,
            ]
            for (c, m), b in app.breakers._by_key.items()
        ]
        return {
            "status": {str(k): n for k, n in self.status.items()},
            "attempts": [[ch, outcome, n] for (ch, outcome), n in self.attempts.items()],
            "errors": [[ch, kind, n] for (ch, kind), n in self.errors.items()],
            "counters": {
                name: [[list(labels), n] for labels, n in series.items()]
                for name, series in self.counters.items()
            },
            "records": records,
            "records_dropped": self.records_dropped + sink.dropped,
            "sink": {
                "written": base.get("written", 0) + getattr(sink, "written", 0),
                "rejected": base.get("rejected", 0) + getattr(sink, "rejected", 0),
                "pending": getattr(sink, "pending", 0),
                "spooled": getattr(sink, "spooled", 0),
            },
            "inflight": app.inflight,
            "client_connections": len(app.clients),
            "upstream_connections": len(app.pool.all),
            "pool": [
                [f"{s}://{h}:{p}", len(o.idle), o.busy] for (s, h, p), o in app.pool.origins.items()
            ],
            "breakers": breakers,
            "snapshot_version": app.snapshot.version,
            "gauges": {name: read() for name, read in self.gauges.items()},
            "cooldowns": app.cooldowns(),
        }

    def render(self, app: Any) -> bytes:
        """One process's scrape (no --workers supervisor)."""
        return render_reports([self.report(app)])


def _slices(keys: tuple[Any, ...], cols: list[Any]) -> Iterable[tuple[Any, list[Any]]]:
    """(key, its slice of every column) for each run of equal sorted `keys`."""
    at = 0
    for key, run in groupby(keys):
        n = len(list(run))
        yield key, [c[at : at + n] for c in cols]
        at += n


def _add_series(into: list[Any], values: list[Any]) -> None:
    for i, v in enumerate(values):
        if isinstance(v, list):
            counts = into[i]
            for j, n in enumerate(v[: len(counts)]):
                counts[j] += n
        else:
            into[i] += v


# -- rendering ------------------------------------------------------------------------


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, Any]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _sample(name: str, pairs: Iterable[tuple[str, Any]], value: Any) -> str:
    body = _labels(pairs)
    return f"{name}{{{body}}} {value}" if body else f"{name} {value}"


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _seconds(ms: float) -> str:
    return repr(ms / 1000)


_LE = {bounds: [_seconds(b) for b in bounds] + ["+Inf"] for bounds in (LATENCY_MS, OVERHEAD_MS)}
_GAUGES = (
    ("inflight", "fastgate_inflight_requests", "Requests being answered now."),
    ("client_connections", "fastgate_client_connections", "Open client connections."),
)


def _outcome(kind: str) -> str:
    """ "HTTP 503" -> "http_503" (label values in one style)."""
    return "http_" + kind[5:] if kind.startswith("HTTP ") else kind


def render_reports(
    reports: list[dict[str, Any]],
    stale: list[dict[str, Any]] = (),  # type: ignore[assignment]
    workers: list[tuple[int, int]] | None = None,
    expected: int = 1,
) -> bytes:
    """Prometheus text for one instance. `reports`: the live workers' reports;
    `stale`: the last published report of a worker slot that did not answer (its
    counters count, its gauges do not). Counters and histograms are summed over
    both, gauges over the live ones. `workers` ([(index, pid)] of the live
    reports, in order) switches on the per-worker series: `fastgate_workers`,
    `fastgate_workers_reporting`, `fastgate_worker_info{worker,pid}` and the
    snapshot version per worker."""
    status: dict[int, int] = {}
    attempts: dict[tuple[str, str], int] = {}
    errors: dict[tuple[str, str], int] = {}
    counters: dict[str, dict[Labels, int]] = {}
    totals = Metrics()  # the instance's folded records
    dropped = written = rejected = 0
    for rep in [*reports, *stale]:
        for code, n in rep["status"].items():
            status[int(code)] = status.get(int(code), 0) + n
        for ch, outcome, n in rep["attempts"]:
            attempts[(ch, outcome)] = attempts.get((ch, outcome), 0) + n
        for ch, kind, n in rep.get("errors", ()):
            errors[(ch, kind)] = errors.get((ch, kind), 0) + n
        for name, series in rep["counters"].items():
            into = counters.setdefault(name, {})
            for labels, n in series:
                key = tuple((k, v) for k, v in labels)
                into[key] = into.get(key, 0) + n
        rec = rep.get("records", {})
        totals._merge_records(rec.get("requests", ()), rec.get("series", ()))
        dropped += rep["records_dropped"]
        sink = rep.get("sink", {})
        written += sink.get("written", 0)
        rejected += sink.get("rejected", 0)
    lines: list[str] = []
    _family(
        lines,
        "fastgate_http_responses_total",
        "counter",
        "HTTP responses sent, by status (every endpoint).",
    )
    for code, n in sorted(status.items()):
        lines.append(_sample("fastgate_http_responses_total", (("status", code),), n))
    _family(
        lines,
        "fastgate_requests_total",
        "counter",
        "Proxied API requests (one per usage record), by ingress, model, channel and status.",
    )
    for (ingress, model, ch, code), n in sorted(totals.requests.items()):
        pairs = (("ingress", ingress), ("model", model), ("channel", ch), ("status", code))
        lines.append(_sample("fastgate_requests_total", pairs, n))
    series = sorted(totals.series.items())
    for name, help_text, bounds, at in HISTOGRAMS:
        _family(lines, name, "histogram", help_text)
        les = _LE[bounds]
        for (ingress, model, ch), s in series:
            counts = s[at]
            total = sum(counts)
            if not total:
                continue
            pairs = (("ingress", ingress), ("model", model), ("channel", ch))
            cum = 0
            for le, n in zip(les, counts, strict=True):
                cum += n
                lines.append(_sample(name + "_bucket", (*pairs, ("le", le)), cum))
            lines.append(_sample(name + "_sum", pairs, _seconds(s[at + 1])))
            lines.append(_sample(name + "_count", pairs, total))
    tokens: dict[tuple[str, str], list[int]] = {}
    for (_ingress, model, ch), s in series:
        into = tokens.setdefault((model, ch), [0] * 5)
        for i in range(5):
            into[i] += s[6 + i]
    _family(
        lines,
        "fastgate_tokens_total",
        "counter",
        "Tokens of proxied requests by kind (prompt includes cached and cache_write).",
    )
    for (model, ch), t in sorted(tokens.items()):
        for kind, n in zip(TOKEN_KINDS, t, strict=False):
            pairs = (("model", model), ("channel", ch), ("kind", kind))
            lines.append(_sample("fastgate_tokens_total", pairs, n))
    _family(
        lines, "fastgate_cost_usd_total", "counter", "Cost charged for proxied requests, in USD."
    )
    for (model, ch), t in sorted(tokens.items()):
        lines.append(
            _sample("fastgate_cost_usd_total", (("model", model), ("channel", ch)), t[4] / 1e6)
        )
    _family(
        lines,
        "fastgate_upstream_attempts_total",
        "counter",
        "Upstream attempts, by channel and outcome (ok, or why it failed before the first byte).",
    )
    for (ch, outcome), n in sorted(attempts.items()):
        pairs = (("channel", ch), ("outcome", _outcome(outcome)))
        lines.append(_sample("fastgate_upstream_attempts_total", pairs, n))
    _family(
        lines,
        "fastgate_upstream_errors_total",
        "counter",
        "Upstream errors by channel and kind (failed attempts and failures mid-response).",
    )
    for (ch, kind), n in sorted(errors.items()):
        pairs = (("channel", ch), ("kind", _outcome(kind)))
        lines.append(_sample("fastgate_upstream_errors_total", pairs, n))
    for field, name, help_text in _GAUGES:
        _family(lines, name, "gauge", help_text)
        lines.append(f"{name} {sum(rep[field] for rep in reports)}")
    pool: dict[tuple[str, str], int] = {}
    breakers: dict[tuple[str, str, str], int] = {}
    gauges: dict[str, float] = {}
    cooldowns: dict[str, float] = {}
    pending = spooled = 0
    for rep in reports:
        for origin, idle, active in rep.get("pool", ()):
            pool[(origin, "idle")] = pool.get((origin, "idle"), 0) + idle
            pool[(origin, "active")] = pool.get((origin, "active"), 0) + active
        for ch, model, state in rep.get("breakers", ()):
            for one in ("closed", "open", "half_open"):
                k = (ch, model, one)
                breakers[k] = breakers.get(k, 0) + (one == state)
        for name, value in rep.get("gauges", {}).items():
            gauges[name] = gauges.get(name, 0) + value
        for ch, left in rep.get("cooldowns", {}).items():
            cooldowns[ch] = max(cooldowns.get(ch, 0.0), left)
        pending += rep.get("sink", {}).get("pending", 0)
        spooled += rep.get("sink", {}).get("spooled", 0)
    _family(
        lines,
        "fastgate_upstream_connections",
        "gauge",
        "Upstream pool connections by origin and state (idle: kept alive; active: in use or opening).",
    )
    for (origin, state), n in sorted(pool.items()):
        lines.append(
            _sample("fastgate_upstream_connections", (("origin", origin), ("state", state)), n)
        )
    _family(
        lines,
        "fastgate_breaker_state",
        "gauge",
        "Circuit breakers per channel and model: workers whose breaker is in each state.",
    )
    for (ch, model, state), n in sorted(breakers.items()):
        pairs = (("channel", ch), ("model", model), ("state", state))
        lines.append(_sample("fastgate_breaker_state", pairs, n))
    for name in sorted(gauges):
        _family(lines, name, "gauge", GAUGE_HELP.get(name, name))
        lines.append(f"{name} {gauges[name]}")
    _family(
        lines,
        "fastgate_channel_cooldown_seconds",
        "gauge",
        "Seconds a channel is still skipped for its upstream's rate limits "
        "(429 or a budget at 0; the longest of the workers).",
    )
    for ch, left in sorted(cooldowns.items()):
        lines.append(_sample("fastgate_channel_cooldown_seconds", (("channel", ch),), left))
    for name, kind, help_text, value in (
        (
            "fastgate_usage_records_written_total",
            "counter",
            "Usage records written (store, or the access log without one).",
            written,
        ),
        (
            "fastgate_usage_records_dropped_total",
            "counter",
            "Usage records dropped (queue full).",
            dropped,
        ),
        (
            "fastgate_usage_records_rejected_total",
            "counter",
            "Usage records the database refused as bad data (set aside).",
            rejected,
        ),
        (
            "fastgate_usage_queue_records",
            "gauge",
            "Usage records not yet settled by the writer (in the ring or waiting for room).",
            pending,
        ),
        (
            "fastgate_usage_spool_records",
            "gauge",
            "Usage records waiting in the spool for the database.",
            spooled,
        ),
    ):
        _family(lines, name, kind, help_text)
        lines.append(f"{name} {value}")
    _family(lines, "fastgate_snapshot_version", "gauge", "Version of the config snapshot in use.")
    if workers is None:
        lines.append(f"fastgate_snapshot_version {reports[0]['snapshot_version']}")
    else:
        for (index, _pid), rep in zip(workers, reports, strict=True):
            lines.append(
                _sample("fastgate_snapshot_version", (("worker", index),), rep["snapshot_version"])
            )
        _family(
            lines, "fastgate_workers", "gauge", "Worker processes the instance runs (--workers)."
        )
        lines.append(f"fastgate_workers {expected}")
        _family(lines, "fastgate_workers_reporting", "gauge", "Workers that answered this scrape.")
        lines.append(f"fastgate_workers_reporting {len(reports)}")
        _family(
            lines,
            "fastgate_worker_info",
            "gauge",
            "A worker that answered this scrape: its index and pid.",
        )
        for index, pid in sorted(workers):
            lines.append(_sample("fastgate_worker_info", (("worker", index), ("pid", pid)), 1))
    for name in sorted(COUNTERS.keys() | counters.keys()):
        _family(lines, name, "counter", COUNTERS.get(name, name))
        got = counters.get(name) or ({} if name in LABELLED else {(): 0})
        for labels, n in sorted(got.items()):
            lines.append(_sample(name, labels, n))
    return ("\n".join(lines) + "\n").encode()
