"""Usage sink throughput: records/s from `LogSink.append` into the database.

What it measures, per backend (SQLite file in a temp dir; Postgres in a fresh
database that is dropped afterwards):

- `sink`: N records appended from the calling thread as fast as it can (what
  the data plane does), timed until `sink.written == N`: the rate the writer
  thread sustains end to end (batches of `--batch` records, one transaction
  each; COPY + INSERT ... ON CONFLICT on Postgres).
- `write_usage`: the store call alone, batch after batch, for comparison.

Each record is a dict shaped like the ones the gateway appends, with a unique
uid. The table count is checked afterwards (exactly N rows per phase).

    python bench/bench_sink.py                      # both backends, 200k records
    python bench/bench_sink.py --backend postgres -n 500000
    python bench/bench_sink.py --pg-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from fastgate.store.base import Store, store_for
from fastgate.store.logsink import LogSink


def make_records(n: int, prefix: str) -> list[dict[str, Any]]:
    now = time.time()
    keys = [f"key-{i}" for i in range(50)]
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "gemini-flash"]
    return [
        {
            "ts": now + i * 1e-4,
            "request_id": f"req-{prefix}-{i}",
            "key_name": keys[i % 50],
            "group": "default",
            "ingress": "openai",
            "channel": "openai-main",
            "provider": "openai",
            "model": models[i % 4],
            "upstream_model": models[i % 4],
            "stream": bool(i & 1),
            "status": 200,
            "error_code": "",
            "prompt_tokens": 100 + i % 900,
            "completion_tokens": 20 + i % 300,
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "estimated": False,
            "cost_micros": 1234 + i % 1000,
            "latency_ms": 12.345,
            "ttfb_ms": 3.21,
            "attempts": 1,
            "client_ip": "10.0.0.1",
            "tag": "bench",
            "cache_hit": False,
            "uid": f"{prefix}-{i:09d}",
        }
        for i in range(n)
    ]


def count_rows(store: Store) -> int:
    async def q() -> int:
        rows = await store.query_usage(None)
        return rows[0]["requests"] if rows else 0

    return store.run(q())


def bench_backend(name: str, url: str, n: int, batch: int) -> dict[str, float]:
    store = store_for(url)
    store.start()
    try:
        base = count_rows(store)
        # 1. the store call alone
        recs = make_records(n, "w" + secrets.token_hex(4))
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            store.run(store.write_usage(recs[i : i + batch]))
        direct = n / (time.perf_counter() - t0)
        assert count_rows(store) == base + n, "write_usage lost or duplicated rows"

        # 2. end to end through the sink
        recs = make_records(n, "s" + secrets.token_hex(4))
        sink = LogSink("", store=store, max_queue=n + 1, batch_size=batch, flush_interval=0.05)
        sink.start()
        t0 = time.perf_counter()
        for r in recs:
            sink.append(r)
        t_append = time.perf_counter() - t0
        while sink.written < n and time.perf_counter() - t0 < 600:
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        sink.close()
        assert sink.dropped == 0, f"dropped {sink.dropped}"
        assert count_rows(store) == base + 2 * n, "sink lost or duplicated rows"
        return {
            "sink_rps": n / elapsed,
            "write_usage_rps": direct,
            "append_us": t_append / n * 1e6,
        }
    finally:
        store.stop()


async def _pg_admin(url: str, sql: str) -> None:
    con = await asyncpg.connect(url)
    try:
        await con.execute(sql)
    finally:
        await con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="records per phase")
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--backend", choices=("both", "sqlite", "postgres"), default="both")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("FASTGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database to connect to; the bench creates and drops its own",
    )
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            url = "sqlite:///" + os.path.join(tmp, "bench.db")
            results["sqlite"] = bench_backend("sqlite", url, args.n, args.batch)
    if args.backend in ("both", "postgres"):
        db = "fastgate_bench_" + secrets.token_hex(4)
        asyncio.run(_pg_admin(args.pg_url, f"CREATE DATABASE {db}"))
        try:
            url = args.pg_url.rsplit("/", 1)[0] + "/" + db
            results["postgres"] = bench_backend("postgres", url, args.n, args.batch)
        finally:
            asyncio.run(_pg_admin(args.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    print(f"records per phase: {args.n}, batch: {args.batch}")
    print(f"{'backend':10} {'sink rec/s':>12} {'write_usage rec/s':>18} {'append us':>10}")
    for name, r in results.items():
        print(
            f"{name:10} {r['sink_rps']:12,.0f} {r['write_usage_rps']:18,.0f} {r['append_us']:10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
