"""A database cut under load: are usage records lost or doubled?

Issue 9 item 2's durability target at full size (the test,
tests/functional/test_store_at_boot.py, cuts for 2.5 s): a fastgate with the
mock channel and Postgres behind `tests/pgproxy.py`; a client sends chat
completions at a fixed rate (every third one streamed) while the proxy is cut
(listener closed, every connection aborted, then listening again). Then the
database's rows for the run are counted against the requests the client saw
complete, before and after SIGTERM.

    python bench/store_cut.py                       # a 10 s cut, 1 worker
    python bench/store_cut.py --workers 2
    python bench/store_cut.py --boot-down 10        # down at start, up 10 s later

Needs Postgres on 127.0.0.1:5432 (user postgres, trust); makes its own database
and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from tests.harness import Gateway, gateway_config, make_key, token  # noqa: E402
from tests.pgproxy import PgProxy  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def _pg(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    con = await asyncpg.connect(url)
    try:
        return await con.fetch(sql, *args)
    finally:
        await con.close()


def pg(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_pg(url, sql, *args))


def counts(url: str, tag: str) -> tuple[int, int, set[str]]:
    try:
        rows = pg(url, "SELECT request_id, uid FROM usage_records WHERE tag = $1", tag)
    except (OSError, asyncpg.PostgresError):
        return 0, 0, set()
    return len(rows), len({r["uid"] for r in rows}), {r["request_id"] for r in rows}


async def one(
    session: aiohttp.ClientSession, url: str, key: str, tag: str, rid: str, stream: bool
) -> bool:
    body = {"model": "mock-1", "messages": [{"role": "user", "content": rid}], "stream": stream}
    headers = {"authorization": f"Bearer {key}", "x-fastgate-tag": tag, "x-request-id": rid}
    try:
        async with session.post(
            url + "/v1/chat/completions", data=orjson.dumps(body), headers=headers
        ) as r:
            data = await r.read()
            return r.status == 200 and (not stream or b"data: [DONE]" in data)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cut", type=float, default=10.0, help="seconds the database is cut")
    ap.add_argument("--cut-at", type=float, default=2.0, help="seconds into the load")
    ap.add_argument(
        "--boot-down", type=float, default=0.0, help="down at start for S seconds instead"
    )
    ap.add_argument("--duration", type=float, default=16.0, help="seconds of load")
    ap.add_argument("--rate", type=float, default=150.0, help="requests a second")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    db = "fastgate_cut_" + secrets.token_hex(4)
    pg(PG_ADMIN, f"CREATE DATABASE {db}")
    url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    proxy = PgProxy(5432, up=not args.boot_down)
    key = make_key()
    tag = "cut-" + secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="fastgate-cut-"))
    text = gateway_config(
        channels=[{"name": "mock", "type": "mock", "models": ["mock-1"]}],
        tokens=[token("cut-key", key)],
        logging={"usage_spool_dir": str(tmp / "spool")},
        extra=f'[database]\nurl = "{proxy.url(url)}"\n',
    )
    gw = Gateway(tmp / "gw", text, args=["--workers", str(args.workers)])
    states: list[tuple[float, str]] = []
    try:
        gw.start()
        t_start = time.monotonic()
        if args.boot_down:
            threading.Timer(args.boot_down, proxy.restore).start()
            down_from, down_to = 0.0, args.boot_down
        else:
            while b'"store":"ok"' not in _ready(gw):
                time.sleep(0.1)
            down_from, down_to = args.cut_at, args.cut_at + args.cut
        total = int(args.rate * args.duration)
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                m = re.search(rb'"store":"(\w+)"', _ready(gw))
                state = m.group(1).decode() if m else "?"
                if not states or states[-1][1] != state:
                    states.append((round(time.monotonic() - t_start, 2), state))
                time.sleep(0.1)

        async def drive() -> list[str]:
            done: list[str] = []
            sem = asyncio.Semaphore(args.concurrency)
            t0 = time.monotonic()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:

                async def fire(i: int) -> None:
                    async with sem:
                        rid = f"{tag}-{i:06d}"
                        if await one(s, gw.url, key, tag, rid, i % 3 == 0):
                            done.append(rid)

                async def cut() -> None:
                    if not args.boot_down:
                        await asyncio.sleep(args.cut_at)
                        proxy.cut_for(args.cut)

                tasks = [asyncio.ensure_future(cut())]
                for i in range(total):
                    wait = t0 + i / args.rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    tasks.append(asyncio.ensure_future(fire(i)))
                await asyncio.gather(*tasks)
            return done

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        done = asyncio.run(drive())
        t_load_end = time.monotonic()
        while not proxy.is_up:
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while counts(url, tag)[0] < len(done) and time.monotonic() < deadline:
            time.sleep(0.1)
        settled = time.monotonic() - t_start
        stop.set()
        n, uids, rids = counts(url, tag)
        print(
            f"outage: {'boot' if args.boot_down else 'cut'} {down_from:.1f}-{down_to:.1f} s, "
            f"workers={args.workers}, {total} requests at {args.rate:.0f}/s"
        )
        print(f"client saw complete: {len(done)} of {total}")
        print(
            f"rows while running: {n} (distinct uids {uids}); missing {len(set(done) - rids)}, "
            f"extra {len(rids - set(done))}; all in by {settled:.1f} s "
            f"({settled - (t_load_end - t_start):.1f} s after the load ended)"
        )
        print(f"/ready store states (s since start): {states}")
        rc = gw.stop()
        n2, uids2, rids2 = counts(url, tag)
        print(
            f"after SIGTERM (rc={rc}): rows {n2}, distinct uids {uids2}, "
            f"missing {len(set(done) - rids2)}, doubled {n2 - uids2}"
        )
        lines = [ln for ln in gw.stderr_text().splitlines() if re.search(r"WARNING|ERROR|INFO", ln)]
        print("gateway log (warnings and store lines):")
        for ln in lines[:40]:
            print("  " + ln[:220])
        return 0 if n2 == uids2 == len(done) and set(done) == rids2 else 1
    finally:
        gw.close()
        proxy.close()
        pg(PG_ADMIN, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _ready(gw: Gateway) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(gw.url + "/ready", timeout=2) as r:
            return r.read()
    except OSError:
        return b""


if __name__ == "__main__":
    raise SystemExit(main())
