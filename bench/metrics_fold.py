"""CPU per usage record of the metrics fold (`fastgate.metrics.Metrics.fold`).

The per-request metric families are folded from the record tuples in batches
where the sink ships them (README "Observability"). This measures one batch of
1000 records with one set of labels (a quiet batch) and one with four (two
models, 200 and 429), best of 7 rounds of CPU time (process_time):

    python bench/metrics_fold.py
"""

from __future__ import annotations

import os
import random
import sys
import time
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastgate.metrics import Metrics
from fastgate.vocab.record import RECORD_FIELDS

SNAPSHOT = SimpleNamespace(routes={("default", "m1"): None, ("default", "m2"): None})


def record(rng: random.Random, mixed: bool) -> tuple[Any, ...]:
    r = dict.fromkeys(RECORD_FIELDS, "")
    r.update(
        ts=time.time(),
        ingress="openai",
        channel="up",
        provider="openai",
        model=rng.choice(["m1", "m2"]) if mixed else "m1",
        status=rng.choice([200, 200, 200, 429]) if mixed else 200,
        latency_ms=rng.random() * 3000,
        ttfb_ms=rng.random() * 500,
        gateway_ms=rng.random() * 0.5,
        prompt_tokens=rng.randrange(1000),
        completion_tokens=rng.randrange(500),
        cached_tokens=0,
        cache_write_tokens=0,
        cost_micros=rng.randrange(10000),
    )
    return tuple(r[f] for f in RECORD_FIELDS)


def main() -> None:
    rng = random.Random(1)
    for name, mixed in (("one label set", False), ("four label sets", True)):
        batch = [record(rng, mixed) for _ in range(1000)]
        m = Metrics()
        best = float("inf")
        for _ in range(7):
            t = time.process_time()
            for _ in range(100):
                m.fold(batch, SNAPSHOT)
            best = min(best, (time.process_time() - t) / 100_000)
        print(f"{name}: {best * 1e6:.2f} us CPU per record")


if __name__ == "__main__":
    main()
