"""CPU of the usage writer process per record: a WriterSink fed N record tuples.

    python bench/bench_writer.py                # 100,000 records to a fresh SQLite file
    python bench/bench_writer.py -n 200000 --database postgresql://postgres@127.0.0.1/test
    python bench/bench_writer.py -n 300000 --uids random   # new_uid before 2026-12-06
    python bench/bench_writer.py -n 300000 --drop-indexes  # what the 4 secondary indexes cost

It also prints what the writer process wrote per record (bytes and write calls,
from /proc/PID/io), which does not depend on the host's speed.

The worker side appends tuples as the data plane does (in batches per loop tick);
the figure is the writer process's utime+stime (from /proc, read just before it
exits) divided by the records it wrote, and the data-plane side's CPU per append.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastgate.store.writer_sink import WriterSink
from fastgate.vocab.record import RECORD_FIELDS

CLK = os.sysconf("SC_CLK_TCK")


def io_counts(pid: int) -> tuple[int, int]:
    """(bytes written, write calls) of a process so far, from /proc (any file)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return int(fields["wchar"]), int(fields["syscw"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def io_last(pid: int, last: tuple[int, int]) -> tuple[int, int]:
    """io_counts(pid), or `last` once the process has gone."""
    now = io_counts(pid)
    return now if now[0] else last


def ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


# How a record's uid is made (`--uids`): "gateway" as the data plane makes it (the
# request id, `App.new_request_id`: a per-process random prefix and a counter);
# "fresh" leaves it empty and the sink fills it (`store/usage.py` `new_uid`,
# time-ordered: records that arrive without one); "random" is what `new_uid`
# was before 2026-12-06 (`os.urandom(12).hex()`).
_PREFIX = os.urandom(8).hex()
UIDS = {
    "gateway": lambda i: f"fg-{_PREFIX}-{i + 1:x}",
    "fresh": lambda i: "",
    "random": lambda i: os.urandom(12).hex(),
}
UID = UIDS["gateway"]


def record(i: int) -> tuple:
    """A record as `gateway/accounting.py` builds it (RECORD_FIELDS order)."""
    return (
        time.time(), f"fg-req-{i}", "bench", "default", "openai", "ch", "openai",
        "gpt-4o-mini", "gpt-4o-mini", False, 200, "", 24, 19, 0, 0, False, 31,
        1.25, 0.9, 1, "127.0.0.1", "", False, UID(i), False, "", "",
        0.05,
    )  # fmt: skip


# A record of another length takes the writer's slow (coercing) insert path.
assert len(record(0)) == len(RECORD_FIELDS), (len(record(0)), len(RECORD_FIELDS))


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--database", default="")
    ap.add_argument("--uids", choices=sorted(UIDS), default="gateway")
    ap.add_argument(
        "--drop-indexes",
        action="store_true",
        help="SQLite: drop usage_records' four secondary indexes first (what they cost)",
    )
    args = ap.parse_args()
    global UID
    UID = UIDS[args.uids]
    db = args.database or "sqlite:///" + os.path.join(tempfile.mkdtemp(), "bench.db")
    if db.startswith("sqlite"):
        from fastgate.store.base import store_for

        st = store_for(db)
        st.start()  # create the schema
        if args.drop_indexes:
            import sqlite3

            con = sqlite3.connect(db[len("sqlite:///") :])
            for ix in ("ts", "key_ts", "model_ts", "tag_ts"):
                con.execute(f"DROP INDEX usage_records_{ix}")
            con.commit()
            con.close()
        st.stop()
    sink = WriterSink(database=db, spool_dir=tempfile.mkdtemp())
    sink.start(asyncio.get_running_loop())
    pid = sink.writer_pid
    await asyncio.sleep(0.5)  # let it start: its start-up is not per-record work
    start = ticks(pid)
    io0 = io_counts(pid)
    t0 = time.process_time()
    per_tick = 200  # records appended between two loop iterations (~20k req/s)
    for i in range(0, args.n, per_tick):
        for j in range(i, min(i + per_tick, args.n)):
            sink.append(record(j))
        await asyncio.sleep(0)
        while sink.pending > 20_000:  # paced like a gateway the writer keeps up with
            await asyncio.sleep(0.01)
    feed_cpu = time.process_time() - t0
    last = 0
    io1 = io0
    while sink.written < args.n:
        last = ticks(pid) or last
        io1 = io_last(pid, io1)
        await asyncio.sleep(0.05)
    last = ticks(pid) or last
    io1 = io_last(pid, io1)
    await sink.aclose()
    print(f"records {args.n}, written {sink.written}, database {db.split('://')[0]}")
    print(f"writer process CPU per record: {(last - start) / CLK / args.n * 1e6:.2f} us")
    print(f"worker side CPU per append (incl. shipping): {feed_cpu / args.n * 1e6:.2f} us")
    print(
        f"writer process writes per record: {(io1[0] - io0[0]) / args.n:.0f} bytes in "
        f"{(io1[1] - io0[1]) / args.n:.2f} write calls (any file: WAL, database, temporary)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
