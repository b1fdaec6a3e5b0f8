"""The per-request metrics folded from usage records, and their merge across workers.

`Metrics.fold` takes batches of record tuples (the hot path's) or dicts;
`render_reports` sums reports, stale ones included, bucket by bucket. The
expected numbers are computed here from the records the test makes, one by one.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgate.metrics import LATENCY_MS, OVERHEAD_MS, Metrics, render_reports
from fastgate.vocab.record import RECORD_FIELDS

SNAPSHOT = SimpleNamespace(routes={("default", "m1"): None, ("default", "m2"): None})


def record(**kw: Any) -> tuple[Any, ...]:
    base = dict.fromkeys(RECORD_FIELDS, "")
    base.update(
        ingress="openai",
        model="m1",
        channel="up",
        status=200,
        latency_ms=12.5,
        ttfb_ms=3.0,
        gateway_ms=0.2,
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=2,
        cache_write_tokens=0,
        cost_micros=20,
    )
    base.update(kw)
    return tuple(base[f] for f in RECORD_FIELDS)


def report(m: Metrics) -> dict[str, Any]:
    """What Metrics.report says about the folded records, through JSON as siblings send it."""
    rep = {
        "status": {},
        "attempts": [],
        "counters": {},
        "records_dropped": 0,
        "inflight": 0,
        "client_connections": 0,
        "snapshot_version": 1,
        "records": {
            "requests": [[*k, n] for k, n in m.requests.items()],
            "series": [[*k, *s] for k, s in m.series.items()],
        },
    }
    return orjson.loads(orjson.dumps(rep))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def random_records(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    return [
        record(
            model=rng.choice(["m1", "m2", "made-up"]),
            status=rng.choice([200, 200, 429, 500]),
            latency_ms=rng.choice([5.0, 1000.0, 5.0001, rng.random() * 400000]),  # le: <=
            ttfb_ms=rng.choice([0, 0, 4.0, 25.0, 7000.0]),
            gateway_ms=rng.choice([0.1, 0.05, 3.3, 2000.0]),
            prompt_tokens=rng.randrange(100),
            cost_micros=rng.randrange(1000),
        )
        for _ in range(n)
    ]


def expected(records: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The same numbers, record by record."""
    idx = {f: i for i, f in enumerate(RECORD_FIELDS)}
    req: dict[tuple[Any, ...], int] = {}
    lat: dict[tuple[Any, ...], list[int]] = {}
    over: dict[tuple[Any, ...], list[int]] = {}
    ttfb_count: dict[tuple[Any, ...], int] = {}
    for r in records:
        model = r[idx["model"]] if r[idx["model"]] in ("m1", "m2") else ""
        key = (r[idx["ingress"]], model, r[idx["channel"]])
        rk = (*key, r[idx["status"]])
        req[rk] = req.get(rk, 0) + 1
        lat.setdefault(key, [0] * (len(LATENCY_MS) + 1))[
            bisect_left(LATENCY_MS, r[idx["latency_ms"]])
        ] += 1
        over.setdefault(key, [0] * (len(OVERHEAD_MS) + 1))[
            bisect_left(OVERHEAD_MS, r[idx["gateway_ms"]])
        ] += 1
        if r[idx["ttfb_ms"]]:
            ttfb_count[key] = ttfb_count.get(key, 0) + 1
    return {"requests": req, "latency": lat, "overhead": over, "ttfb_count": ttfb_count}


def test_fold_matches_record_by_record_counting() -> None:
    rng = random.Random(7)
    records = random_records(rng, 3000)
    m = Metrics()
    for i in range(0, len(records), 700):  # batches of several label sets
        m.fold(records[i : i + 700], SNAPSHOT)
    want = expected(records)
    assert m.requests == want["requests"]
    for key, s in m.series.items():
        assert s[0] == want["latency"][key]
        assert s[4] == want["overhead"][key]
        assert sum(s[2]) == want["ttfb_count"].get(key, 0)
    assert sum(s[10] for s in m.series.values()) == sum(r[17] for r in records)


def test_fold_takes_dicts_and_lists_as_well() -> None:
    r = record()
    m = Metrics()
    m.fold([r], SNAPSHOT)
    m.fold([dict(zip(RECORD_FIELDS, r, strict=True))], SNAPSHOT)
    m.fold([list(r)], SNAPSHOT)
    assert m.requests == {("openai", "m1", "up", 200): 3}
    assert m.series[("openai", "m1", "up")][6] == 30


def test_workers_and_stale_reports_sum_bucket_by_bucket() -> None:
    rng = random.Random(11)
    parts = [random_records(rng, 500) for _ in range(3)]
    workers = []
    for part in parts:
        m = Metrics()
        m.fold(part, SNAPSHOT)
        workers.append(report(m))
    # worker 2 did not answer: its last published report still counts
    text = render_reports(workers[:2], [workers[2]], [(0, 100), (1, 101)], 3).decode()
    got = samples(text)
    want = expected([r for part in parts for r in part])
    for (ingress, model, channel, status), n in want["requests"].items():
        labels = (
            ("channel", channel),
            ("ingress", ingress),
            ("model", model),
            ("status", str(status)),
        )
        assert got[("fastgate_requests_total", labels)] == n
    for key, counts in want["latency"].items():
        labels = (("channel", key[2]), ("ingress", key[0]), ("model", key[1]))
        cum = 0
        for bound, n in zip([*LATENCY_MS, float("inf")], counts, strict=True):
            cum += n
            le = "+Inf" if bound == float("inf") else repr(bound / 1000)
            bucket = tuple(sorted((*labels, ("le", le))))
            assert got[("fastgate_request_duration_seconds_bucket", bucket)] == cum
        assert got[("fastgate_request_duration_seconds_count", labels)] == sum(counts)


def test_a_respawned_worker_continues_its_slots_histograms() -> None:
    rng = random.Random(3)
    first, later = random_records(rng, 200), random_records(rng, 100)
    dead = Metrics()
    dead.fold(first, SNAPSHOT)
    successor = Metrics()
    successor.seed(report(dead))
    successor.fold(later, SNAPSHOT)
    both = Metrics()
    both.fold(first + later, SNAPSHOT)
    assert successor.requests == both.requests
    for key, s in both.series.items():
        mine = successor.series[key]
        assert [mine[i] for i in (0, 2, 4)] == [s[i] for i in (0, 2, 4)]
        assert mine[1] == pytest.approx(s[1])
