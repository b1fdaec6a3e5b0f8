"""Fleet benchmark: what the shared features cost, each against plain passthrough.

Same stub upstream (nginx serving a canned chat completion), same wrk load as
bench/run.py's non-stream scenario, one fastgate per variant, runs interleaved
per round (median reported):

- plain:          a key with no limits (the fast path), 1 worker
- limits-redis:   the key has rpm and tpm far above the load, [ratelimit]
                  backend = "redis" (issue 8 target: <= 15 % throughput cost)
- limits-memory:  the same limits, memory backend (what the general path costs)
- cache-hit:      [cache] enabled, the key has cache = true, every request the
                  same: all hits after the first (target: less CPU than plain)
- workers2:       plain with --workers 2 (target: >= 1.6x plain's throughput,
                  or, if two cores cannot show it, equal CPU per request)
- managed-key:    the key has a quota, an expiry, a models allow-list and a
                  daily budget, none near (the fast path checks them itself)
- azure:          the channel is Azure (api_version 2024-10-21: requests go to
                  its deployment path; the stub answers any path)

Usage: python bench/fleet_bench.py [--duration S] [--rounds N] [--only a,b]
Writes a section to bench/RESULTS.md below the history marker (--no-results: print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # bench/run.py: stub, wrk, /proc accounting

VARIANTS = (
    "plain",
    "limits-redis",
    "limits-memory",
    "cache-hit",
    "workers2",
    "managed-key",
    "azure",
)


def config(variant: str, tmp: Path, stub: int, key: str, prefix: str) -> str:
    text = base.fastgate_config(tmp, stub, stub, 0, key)
    if variant.startswith("limits"):
        text = text.replace(
            'name = "bench"\n', 'name = "bench"\nrpm = 100000000\ntpm = 100000000000\n'
        )
    if variant == "limits-redis":
        text += f'\n[ratelimit]\nbackend = "redis"\nkey_prefix = "{prefix}"\n'
    if variant == "cache-hit":
        text = text.replace('name = "bench"\n', 'name = "bench"\ncache = true\n')
        text += "\n[cache]\nenabled = true\n"
    if variant == "managed-key":
        text = text.replace(
            'name = "bench"\n',
            'name = "bench"\nquota_usd = 1000000\nexpires_at = "2099-01-01T00:00:00Z"\n'
            'models = ["bench-chat", "bench-stream"]\nbudget_usd = 1000000\n'
            'budget_period = "day"\n',
        )
    if variant == "azure":
        text = text.replace(
            'name = "stub-json"\ntype = "openai"\n',
            'name = "stub-json"\ntype = "azure"\napi_version = "2024-10-21"\n',
        )
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default=",".join(VARIANTS))
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args()
    variants = [v for v in args.only.split(",") if v]
    base.ensure_tools()
    base.compile_bytecode()  # as run.py: the gateways start from bytecode caches
    stack = base.Stack()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    tmp.chmod(0o755)  # nginx workers (another user) read the stub files
    prefix = "fgbench:" + secrets.token_hex(3) + ":"
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        (stub_port,) = base.free_ports(1)
        www = tmp / "www"
        shutil.copytree(base.BENCH / "stub", www)
        stub = base.start_nginx(
            stack,
            "stub",
            tmp / "stub",
            [
                base.STUB_SERVER.format(
                    port=stub_port, www=www, file="chat_completion.json",
                    ctype="application/json",
                )
            ],
        )  # fmt: skip
        base.wait_port(stub_port, stub, tmp / "stub/error.log")
        key = "fg-" + secrets.token_urlsafe(32)
        ports = {("direct", "json"): stub_port}
        roots = {"direct": stub.pid}
        for v in variants:
            d = tmp / v
            d.mkdir()
            proc, port, _ = base.start_fastgate(
                stack, d, config(v, d, stub_port, key, prefix), 2 if v == "workers2" else 1
            )
            ports[(v, "json")] = port
            roots[v] = proc.pid
        env = base.Env(stack, tmp, key, ports, roots, list(roots.values()))
        sc = base.SCENARIOS["nonstream"]
        for v in variants:
            print(f"check {v}: {base.check_target(ports[(v, 'json')], sc, key, v)}")
            base.run_wrk(stack, ports[(v, "json")], sc, key, 2.0, tmp / "warm.log")
        results: dict[str, list[base.RunResult]] = {v: [] for v in ["direct", *variants]}
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}/{args.rounds}", flush=True)
            for v in ["direct", *variants]:
                results[v].append(base.measure(env, v, sc, rnd, args.duration))
    finally:
        stack.stop_all()
        _cleanup_redis(prefix)

    def med(v: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) or 0.0 for r in results[v])

    plain_rps = med("plain", "rps") if "plain" in results else 0.0
    lines = [
        f"### Fleet features vs plain passthrough ({started})",
        "",
        f"`python bench/fleet_bench.py --duration {args.duration:g} --rounds {args.rounds}`"
        f" (non-stream, {sc.connections} connections, 1 worker unless named; median of rounds)",
        "",
        "| variant | req/s | vs plain | CPU µs/req | p50 ms |",
        "|---|---|---|---|---|",
    ]
    for v in ["direct", *variants]:
        rps = med(v, "rps")
        vs = f"{rps / plain_rps:.2f}x" if plain_rps else "-"
        lines.append(
            f"| {v} | {rps:.0f} | {vs} | {med(v, 'cpu_us_per_req'):.1f} | {med(v, 'p50_ms'):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_results:
        path = base.BENCH / "RESULTS.md"
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + text)
    return 0


def _cleanup_redis(prefix: str) -> None:
    try:
        import redis

        client = redis.Redis()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception:
        pass


if __name__ == "__main__":
    time.sleep(0)
    sys.exit(main())
