"""Soak: mixed load for minutes, with a database cut, watching for leaks and lost records.

One fastgate (`python -m fastgate serve`, 1 worker unless --workers) with its
usage records in a fresh Postgres database reached through a TCP proxy this
script controls; two fake OpenAI upstreams (tests/fakes, in their own process):
one that answers, one that fails with 500. The load (aiohttp, --concurrency
clients in a loop) mixes:

- non-stream chat completions            (--mix 50)
- streamed chat completions               (30)
- errors: a model whose only channel 500s (10: the client sees 502)
- client disconnects: a slow stream the client drops after its first chunk (10)

At --cut-at seconds the proxy drops every database connection and refuses new
ones for --cut-seconds (records go to the spool and replay). Every --every
seconds one line: requests so far, records in the database, RSS and open fds
(the floor over 0.5 s: connections the load opens and closes are not a leak)
of the fastgate process tree, latency percentiles of the interval. At the end
fastgate gets SIGTERM and the script compares records (distinct uids) with the
requests the clients made: they must be equal.

Usage: python bench/soak.py [--duration 600] [--every 30] [--cut-at 300]
       [--cut-seconds 10] [--concurrency 16] [--workers 1] [--no-results]
Appends its table to bench/RESULTS.md unless --no-results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://postgres@127.0.0.1:5432"
KEY = "fg-soak-" + secrets.token_hex(8)
MODEL, ERR_MODEL, SLOW_MODEL = "soak-chat", "soak-err", "soak-slow"

FAKES = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fakes.openai_fake import FakeOpenAI, Fail, Ok
good = FakeOpenAI(name="good", models=[{model!r}])
good.behaviour = Ok(content="The soak test answers with a few words of text here.")
good.start()
slow = FakeOpenAI(name="slow", models=[{slow!r}])
slow.behaviour = Ok(content="one two three four five six seven eight", chunk_delay=0.2)
slow.start()
bad = FakeOpenAI(name="bad", models=[{err!r}])
bad.behaviour = Fail(500)
bad.start()
print(good.url, slow.url, bad.url, flush=True)
while True:
    time.sleep(5)
    for f in (good, slow, bad):  # the fakes record every request: keep them small
        with f._lock:
            f._requests.clear()
"""


# --------------------------------------------------------------------------- the database cut


class CutProxy:
    """TCP proxy to Postgres in its own thread; `cut(s)` drops every connection and
    refuses new ones (accept, then close) for s seconds."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.cut_until = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.cut_until:
            w.close()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self._writers |= {w, uw}

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            try:
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                b.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._writers -= {w, uw}

    def cut(self, seconds: float) -> None:
        def go() -> None:
            self.cut_until = time.monotonic() + seconds
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(go)


# --------------------------------------------------------------------------- process tree


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def fds(pids: list[int]) -> int:
    n = 0
    for p in pids:
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{p}/fd"))
    return n


async def fds_floor(pids: list[int], samples: int = 10, gap: float = 0.05) -> int:
    """The fewest open fds over `samples` looks `gap` s apart: connections opened
    and closed by the load (a client that drops a stream and reconnects, the
    upstream connection dropped with it) come and go between looks; a leak raises
    the floor."""
    low = fds(pids)
    for _ in range(samples - 1):
        await asyncio.sleep(gap)
        low = min(low, fds(pids))
    return low


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --------------------------------------------------------------------------- load


class Load:
    def __init__(self, base: str, mix: tuple[int, int, int, int]) -> None:
        self.base = base
        self.kinds = random.Random(7)
        self.mix = mix
        self.sent = 0  # requests whose head and body reached fastgate
        self.by_kind = {"json": 0, "stream": 0, "error": 0, "disconnect": 0}
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []
        self.stop = False

    def note(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    async def one(self, http: aiohttp.ClientSession) -> None:
        kind = self.kinds.choices(("json", "stream", "error", "disconnect"), self.mix)[0]
        model = {"error": ERR_MODEL, "disconnect": SLOW_MODEL}.get(kind, MODEL)
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "soak " + "word " * 20}],
            "stream": kind in ("stream", "disconnect"),
        }
        t0 = time.monotonic()
        try:
            async with http.post(
                self.base + "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {KEY}", "x-fastgate-tag": "soak"},
            ) as r:
                self.sent += 1
                self.by_kind[kind] += 1
                if kind == "disconnect":
                    await r.content.readany()
                    r.connection.transport.abort()  # type: ignore[union-attr]
                    return
                await r.read()
                want = (502, 503) if kind == "error" else (200,)  # 503: breaker open
                if r.status not in want:
                    self.note(f"{kind}:{r.status}")
        except (aiohttp.ClientError, OSError) as exc:
            self.note(f"{kind}:{exc.__class__.__name__}")
            return
        self.latencies.append(time.monotonic() - t0)

    async def client(self) -> None:
        conn = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=conn) as http:
            while not self.stop:
                await self.one(http)


# --------------------------------------------------------------------------- run


async def count_records(dsn: str) -> tuple[int, int]:
    con = await asyncpg.connect(dsn)
    try:
        row = await con.fetchrow(
            "SELECT count(*), count(DISTINCT uid) FROM usage_records WHERE tag = 'soak'"
        )
        return int(row[0]), int(row[1])
    finally:
        await con.close()


def config(tmp: Path, db_url: str, urls: list[str]) -> str:
    good, slow, bad = urls
    chans = ""
    for name, url, model in (
        ("good", good, MODEL),
        ("slow", slow, SLOW_MODEL),
        ("bad", bad, ERR_MODEL),
    ):
        chans += f"""
[[channels]]
name = "{name}"
type = "openai"
base_url = "{url}"
api_key = "sk-upstream"
models = ["{model}"]
"""
    return f"""\
[server]
host = "127.0.0.1"
port = 0

[database]
url = "{db_url}"

[logging]
usage_spool_dir = "{tmp}/spool"
{chans}
[[tokens]]
name = "soak"
key = "{KEY}"
group = "default"

[[groups]]
name = "default"
ratio = 1.0

[[prices]]
model = "{MODEL}"
input = 1.0
output = 2.0
"""


async def run(args: argparse.Namespace) -> dict:
    dbname = "fastgate_soak_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG + "/postgres")
    await admin.execute(f"CREATE DATABASE {dbname}")
    await admin.close()
    proxy = CutProxy(("127.0.0.1", 5432))
    tmp = Path(tempfile.mkdtemp(prefix="fastgate-soak-"))
    fakes = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FAKES.format(root=str(ROOT), model=MODEL, slow=SLOW_MODEL, err=ERR_MODEL),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    urls = fakes.stdout.readline().split()  # type: ignore[union-attr]
    cfg = tmp / "soak.toml"
    cfg.write_text(config(tmp, f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}", urls))
    # The fastgate of this checkout (not whichever one is installed): cwd is tmp.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    gw = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastgate",
            "serve",
            "--config",
            str(cfg),
            "--workers",
            str(args.workers),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
        env=env,
    )
    port = 0
    for line in gw.stderr:  # type: ignore[union-attr]
        m = re.search(r"listening on http://[^:\s]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in gw.stderr], daemon=True).start()  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:  # wait for /ready
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/ready") as r:
                    if r.status == 200:
                        break
            await asyncio.sleep(0.05)
    direct = f"{PG}/{dbname}"
    load = Load(base, tuple(args.mix))
    clients = [asyncio.create_task(load.client()) for _ in range(args.concurrency)]
    rows: list[dict] = []
    t_start = time.monotonic()
    cut_done = False
    next_at = args.every
    print(
        f"{'t_s':>5} {'requests':>9} {'records':>9} {'rss_mb':>7} {'fds':>5} "
        f"{'p50_ms':>7} {'p95_ms':>7} {'p99_ms':>7} {'rps':>6} note",
        flush=True,
    )
    last_sent = 0
    while True:
        await asyncio.sleep(0.2)
        el = time.monotonic() - t_start
        if not cut_done and el >= args.cut_at:
            proxy.cut(args.cut_seconds)
            cut_done = True
            print(f"      -- database cut for {args.cut_seconds:g} s at t={el:.0f} s", flush=True)
        if el >= next_at or el >= args.duration:
            lat, load.latencies = load.latencies, []
            pids = tree(gw.pid)
            recs, _ = await count_records(direct)
            row = {
                "t": round(el),
                "requests": load.sent,
                "records": recs,
                "rss_mb": round(rss_mb(pids), 1),
                "fds": await fds_floor(pids),
                "p50": round(pct(lat, 0.5) * 1000, 1),
                "p95": round(pct(lat, 0.95) * 1000, 1),
                "p99": round(pct(lat, 0.99) * 1000, 1),
                "rps": round((load.sent - last_sent) / args.every),
                "note": "cut" if cut_done and el - args.cut_at < args.every else "",
                "per_pid": {p: round(rss_mb([p]), 1) for p in pids},
            }
            last_sent = load.sent
            rows.append(row)
            print(
                f"{row['t']:>5} {row['requests']:>9} {row['records']:>9} {row['rss_mb']:>7} "
                f"{row['fds']:>5} {row['p50']:>7} {row['p95']:>7} {row['p99']:>7} "
                f"{row['rps']:>6} {row['note']} {row['per_pid'] if args.verbose else ''}",
                flush=True,
            )
            next_at += args.every
            if el >= args.duration:
                break
    load.stop = True
    await asyncio.gather(*clients)
    gw.send_signal(signal.SIGTERM)
    code = gw.wait(60)
    fakes.kill()
    records, distinct = await count_records(direct)
    admin = await asyncpg.connect(PG + "/postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    await admin.close()
    return {
        "rows": rows,
        "requests": load.sent,
        "by_kind": load.by_kind,
        "failures": load.failures,
        "records": records,
        "distinct": distinct,
        "exit": code,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--every", type=float, default=30)
    p.add_argument("--cut-at", type=float, default=300)
    p.add_argument("--cut-seconds", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mix", type=int, nargs=4, default=[50, 30, 10, 10], metavar="N")
    p.add_argument("--no-results", action="store_true")
    p.add_argument("--verbose", action="store_true", help="RSS of each process of the tree")
    args = p.parse_args()
    out = asyncio.run(run(args))
    rows = out["rows"]
    after2 = [r for r in rows if r["t"] >= 120] or rows
    rss_growth = after2[-1]["rss_mb"] - after2[0]["rss_mb"]
    fd_growth = after2[-1]["fds"] - after2[0]["fds"]
    ok = out["records"] == out["distinct"] == out["requests"]
    verdict = (
        f"requests {out['requests']} {out['by_kind']}, records {out['records']} "
        f"(distinct uids {out['distinct']}): {'equal' if ok else 'MISMATCH'}; "
        f"RSS growth from t={after2[0]['t']} s to the end {rss_growth:+.1f} MB "
        f"(target < 5), fd growth {fd_growth:+d} (target 0); exit {out['exit']}; "
        f"client-side surprises {out['failures'] or 'none'}"
    )
    print(verdict)
    if not args.no_results:
        cmd = "python bench/soak.py " + " ".join(sys.argv[1:])
        table = [
            "| t (s) | requests | records | RSS MB | fds | p50 ms | p95 ms | p99 ms | req/s | |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ] + [
            f"| {r['t']} | {r['requests']} | {r['records']} | {r['rss_mb']} | {r['fds']} | "
            f"{r['p50']} | {r['p95']} | {r['p99']} | {r['rps']} | {r['note']} |"
            for r in rows
        ]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(
                f"\n## Soak ({stamp})\n\n`{cmd.strip()}` (1 fastgate, --workers {args.workers}, "
                f"records to Postgres through a proxy cut for {args.cut_seconds:g} s at "
                f"t={args.cut_at:g} s; `records` is the count in the database when sampled, "
                "spooled records arrive after the cut)\n\n" + "\n".join(table) + f"\n\n{verdict}\n"
            )
    return 0 if ok and rss_growth < 5 and fd_growth <= 0 else 1


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
