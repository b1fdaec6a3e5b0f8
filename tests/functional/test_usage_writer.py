"""The usage writer process: real writer processes, a real SQLite file, signals.

The data plane's side (`WriterSink`) appends tuples (RECORD_FIELDS order) or
dicts on an event loop; a `python -m fastgate.store.writer` child writes them.
Checked here: everything appended reaches the database and the access log; a
SIGKILLed writer is restarted on the same ring and goes on from what it had
settled: every record lands, none twice (also while the database is locked and
the records went to the spool); an outage spools and replays; `aclose()`
writes everything before returning; a full ring holds records in the worker; a
worker killed right after appending loses none; a gateway whose writer is
killed under load still has one row per request.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fastgate.store.writer_sink import WriterSink
from fastgate.vocab.record import RECORD_FIELDS, record_dict
from tests.functional.test_durable_e2e import ENV, MOCK, chat, new_tag, tagged_rows
from tests.harness import Gateway, make_key, token
from tests.unit.test_store_logsink import rec as dict_rec


def rec(i: int, **kw: Any) -> tuple[Any, ...]:
    """The unit tests' record, as the data plane builds it: a tuple."""
    d = dict_rec(i, **kw)
    return tuple(d[f] for f in RECORD_FIELDS)


def rows(db: Path) -> list[str]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT uid FROM usage_records ORDER BY rowid")]
    finally:
        con.close()


def create_schema(db: Path) -> None:
    from fastgate.store.sqlite import SQLiteStore

    s = SQLiteStore(str(db), environ={})
    s.start()  # the worker migrates; the writer opens without migrating
    s.stop()


def sink_for(db: Path, tmp: Path, **kw: Any) -> WriterSink:
    create_schema(db)
    kw.setdefault("flush_interval", 0.02)
    kw.setdefault("store_options", {"busy_timeout": 0.2})
    return WriterSink(database=f"sqlite:///{db}", spool_dir=str(tmp / "spool"), **kw)


async def until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


class Lock:
    """Another connection holds SQLite's write lock: writes fail as an outage."""

    def __init__(self, db: Path) -> None:
        self.con = sqlite3.connect(db, isolation_level=None, timeout=5)
        self.con.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.con.in_transaction:
            self.con.execute("ROLLBACK")
        self.con.close()


def test_tuples_and_dicts_reach_the_database_and_the_access_log(tmp_path: Path) -> None:
    db, log = tmp_path / "fg.db", tmp_path / "access.jsonl"
    sent = [rec(i) for i in range(300)]

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, access_log=str(log))
        sink.start()
        for r in sent[:150]:
            sink.append(r)
        for r in sent[150:]:
            sink.append(record_dict(r))  # the handler's dicts, until it builds tuples
        assert await until(lambda: sink.written == 300, 10), sink.last_error
        assert sink.writer_pid is not None and sink.writer_pid != os.getpid()
        await sink.aclose()
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(300)]
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert lines == [record_dict(r) for r in sent]
    assert sink.written == 300 and sink.dropped == 0 and sink.pending == 0


def test_aclose_writes_everything_appended(tmp_path: Path) -> None:
    """SIGTERM path: appended just before close, nothing shipped yet: all written."""
    db = tmp_path / "fg.db"

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, flush_interval=30, batch_size=1000)
        sink.start()
        for i in range(2500):
            sink.append(rec(i))
        await sink.aclose()
        sink.append(rec(9999))  # after close: counted, not written
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(2500)]
    assert sink.written == 2500 and sink.dropped == 1


def test_records_without_uid_get_one_before_they_leave(tmp_path: Path) -> None:
    db = tmp_path / "fg.db"

    async def go() -> None:
        sink = sink_for(db, tmp_path)
        sink.start()
        for i in range(10):
            sink.append(rec(i, uid=""))
        await sink.aclose()

    asyncio.run(go())
    assert len(set(rows(db))) == 10 and all(rows(db))


def test_sigkill_of_the_writer_rewrites_what_it_had_not_settled(tmp_path: Path) -> None:
    """Batches are shipped and the writer killed right after (some committed but
    not settled, some not taken yet): every record lands exactly once."""
    db = tmp_path / "fg.db"
    n = 4000

    async def go() -> tuple[WriterSink, set[int]]:
        sink = sink_for(db, tmp_path, batch_size=100)
        sink.start()
        pids = set()
        for i in range(n):
            sink.append(rec(i))
            if i % 1000 == 400:
                # a writer that has been writing (not one still starting up)
                floor = i - 1000
                assert await until(
                    lambda f=floor: sink.written >= f and sink.writer_pid is not None, 10
                ), sink.written
            if i % 1000 == 550:  # 150 appended since without yielding: they are
                # in the ring, not settled (the loop has not run since)
                pid = sink.writer_pid
                assert pid is not None
                pids.add(pid)
                assert sink.pending > 0
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.05)
            if i % 200 == 0:
                await asyncio.sleep(0.005)
        assert await sink.drain(20), (sink.pending, sink.last_error)
        pids.add(sink.writer_pid or 0)
        await sink.aclose()
        return sink, pids

    sink, pids = asyncio.run(go())
    got = rows(db)
    assert sorted(got) == [f"uid-{i:05d}" for i in range(n)]
    assert len(got) == n
    assert sink.restarts == 4 and len(pids) == 5
    assert sink.written == n and sink.dropped == 0


def test_writer_killed_during_an_outage_keeps_the_spool(tmp_path: Path) -> None:
    """Acked while the database is locked means fsync'd to the spool; the next
    writer replays the dead one's spool files once the database is back."""
    db = tmp_path / "fg.db"
    n = 600

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, batch_size=100)
        sink.start()
        lock = Lock(db)
        try:
            for i in range(n):
                sink.append(rec(i))
            assert await sink.drain(20), sink.pending  # all acked: in the spool
            assert sink.degraded and sink.spooled == n and "locked" in sink.last_error
            os.kill(sink.writer_pid or 0, signal.SIGKILL)
            assert await until(lambda: sink.restarts == 1 and sink.writer_pid, 5)
        finally:
            lock.release()
        assert await until(lambda: sink.written == n and not sink.degraded, 20), (
            sink.written,
            sink.last_error,
        )
        await sink.aclose()
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(n)]
    assert sink.replayed == n and sink.write_failures >= 1
    assert list((tmp_path / "spool").glob("spool-*.jsonl")) == []


def test_outage_spools_then_replays_in_order(tmp_path: Path) -> None:
    db = tmp_path / "fg.db"

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, batch_size=50)
        sink.start()
        for i in range(100):
            sink.append(rec(i))
        assert await until(lambda: sink.written == 100, 10)
        lock = Lock(db)
        try:
            for i in range(100, 400):
                sink.append(rec(i))
                if i % 100 == 0:
                    await asyncio.sleep(0.05)
            assert await until(lambda: sink.spooled == 300, 10), sink.spooled
            assert sink.degraded and sink.write_failures >= 1
        finally:
            lock.release()
        assert await until(lambda: sink.written == 400 and not sink.degraded, 15)
        await sink.aclose()
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(400)]
    assert sink.replayed == 300 and sink.spooled == 0


def test_access_log_follows_a_reload(tmp_path: Path) -> None:
    db, first, second = tmp_path / "fg.db", tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    async def go() -> None:
        sink = sink_for(db, tmp_path, access_log=str(first))
        sink.start()
        sink.append(rec(0))
        assert await sink.drain(10)
        sink.access_log = str(second)
        sink.append(rec(1))
        await sink.aclose()

    asyncio.run(go())
    assert [orjson.loads(x)["uid"] for x in first.read_bytes().splitlines()] == ["uid-00000"]
    assert [orjson.loads(x)["uid"] for x in second.read_bytes().splitlines()] == ["uid-00001"]


def _writer_of(pid: int, timeout: float = 5.0) -> int:
    """The gateway's writer process: a descendant running fastgate.store.writer."""
    deadline = time.monotonic() + timeout
    while True:
        parents: dict[int, int] = {}
        writers = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            if b"fastgate.store.writer" in cmd:
                writers.append(int(entry))
        for w in writers:
            p = parents.get(w, 0)
            while p > 1 and p != pid:
                p = parents.get(p, 0)
            if p == pid:
                return w
        if time.monotonic() > deadline:
            raise AssertionError("no writer process")
        time.sleep(0.02)


def test_gateway_survives_a_writer_crash_under_load(
    make_gateway: Callable[..., Gateway],
) -> None:
    """SIGKILL of the gateway's writer between requests: the gateway starts a new
    one, and after SIGTERM the database holds one row per request."""
    key = make_key()
    gw = make_gateway(channels=[MOCK], tokens=[token("w-key", key)], env=ENV)
    assert gw.proc is not None
    tag = new_tag("writer-kill")
    rids = [f"{tag}-{i:03d}" for i in range(60)]
    first = _writer_of(gw.proc.pid)
    for i, rid in enumerate(rids):
        assert chat(gw, key, tag=tag, request_id=rid)[0] == 200
        if i in (20, 40):
            os.kill(_writer_of(gw.proc.pid), signal.SIGKILL)
    assert _writer_of(gw.proc.pid) != first
    assert gw.stop() == 0
    assert "usage writer" in gw.stderr_text()  # the restart is logged
    url = "sqlite:///" + str(gw.config_path.parent / "fastgate.db")
    got = tagged_rows(url, tag)
    assert sorted(r[1] for r in got) == sorted(rids)


def test_a_full_ring_keeps_records_in_the_worker_until_the_writer_settles(
    tmp_path: Path,
) -> None:
    """A ring of 8 KB (a few dozen records) and a stopped writer: what does not
    fit waits in the worker, in order; once the writer runs again every record
    lands once, after the ring wrapped around many times."""
    db = tmp_path / "fg.db"
    n = 600

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, ring_bytes=8192)
        sink.start()
        assert await until(lambda: sink.writer_pid is not None, 5)
        sink.append(rec(0))
        assert await until(lambda: sink.written == 1, 10)  # the writer is up
        pid = sink.writer_pid or 0
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(1, n):
                sink.append(rec(i))
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            assert sink.pending == n - 1 and sink.written == 1 and sink.dropped == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await sink.drain(20), sink.pending
        await sink.aclose()
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(n)]
    assert sink.written == n and sink.dropped == 0 and sink.restarts == 0


_KILLED_WORKER = """
import asyncio, os, signal, sys
from tests.functional.test_usage_writer import rec
from fastgate.store.writer_sink import WriterSink

async def main():
    sink = WriterSink(database=sys.argv[1], spool_dir=sys.argv[2], flush_interval=5.0)
    sink.start()
    print(sink.writer_pid, flush=True)
    for i in range(int(sys.argv[3])):
        sink.append(rec(i))
    os.kill(os.getpid(), signal.SIGKILL)  # no yield to the loop, no timer, no send

asyncio.run(main())
"""


def killed_worker_rows(script: str, tmp_path: Path, n: int) -> list[str]:
    """Run `script` as a worker (argv: database URL, spool dir, n) that appends `n`
    records and kills itself with SIGKILL; wait for its writer to exit; the rows."""
    import subprocess
    import sys

    db = tmp_path / "fg.db"
    create_schema(db)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{db}", str(tmp_path / "sp"), str(n)],
        capture_output=True,
        env=env,
        timeout=60,
        cwd=root,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    writer = int(proc.stdout.split()[0])

    def gone() -> bool:
        try:
            return Path(f"/proc/{writer}/stat").read_text().split()[2] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(), "the writer did not exit after its worker died"
    return rows(db)


def test_records_appended_by_a_worker_killed_at_once_are_written(tmp_path: Path) -> None:
    """`append` returns with the record out of the worker: a worker that appends
    and is killed with SIGKILL before its loop runs again (its flush timer
    5 s away) loses none; its writer sees EOF, writes the ring and exits."""
    n = 2000
    assert killed_worker_rows(_KILLED_WORKER, tmp_path, n) == [f"uid-{i:05d}" for i in range(n)]


_KILLED_WITH_AN_ACK_UNREAD = """
import asyncio, os, signal, sys, time
from tests.functional.test_usage_writer import rec
from fastgate.store.writer_sink import WriterSink

async def main():
    sink = WriterSink(database=sys.argv[1], spool_dir=sys.argv[2], flush_interval=0.05)
    sink.start()
    print(sink.writer_pid, flush=True)
    n = int(sys.argv[3])
    for i in range(100):
        sink.append(rec(i))
    time.sleep(1.0)  # the loop does not run: the writer's ack for these stays unread
    for i in range(100, n):
        sink.append(rec(i))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_worker_killed_with_an_ack_unread_loses_no_record(tmp_path: Path) -> None:
    """A worker that dies with its writer's last ack unread in its socket: Linux
    then reports ECONNRESET to the writer, not EOF. The writer must take that as
    the worker's end too and write what the ring holds (it used to exit on the
    exception, and the records after its last write were lost: CI caught one in
    test_service.py's kill -9 test)."""
    n = 2000
    got = killed_worker_rows(_KILLED_WITH_AN_ACK_UNREAD, tmp_path, n)
    assert got == [f"uid-{i:05d}" for i in range(n)]


def test_a_record_too_big_for_the_ring_is_cut_not_stuck(tmp_path: Path) -> None:
    """A client's megabyte in a field the record keeps (an unknown `model`, a tag)
    would never fit the ring and would hold every record behind it: its long
    strings are cut instead, and the records after it flow."""
    db = tmp_path / "fg.db"

    async def go() -> WriterSink:
        sink = sink_for(db, tmp_path, ring_bytes=16384)
        sink.start()
        sink.append(rec(0, model="m" * 100_000))
        for i in range(1, 50):
            sink.append(rec(i))
        assert await sink.drain(20), sink.pending
        await sink.aclose()
        return sink

    sink = asyncio.run(go())
    assert rows(db) == [f"uid-{i:05d}" for i in range(50)]
    con = sqlite3.connect(db)
    try:
        model = con.execute("SELECT model FROM usage_records WHERE uid = 'uid-00000'").fetchone()
    finally:
        con.close()
    assert model[0] == "m" * 1024 + "..."
    assert sink.written == 50 and sink.dropped == 0


def test_gateway_records_a_request_whose_model_is_half_a_megabyte(
    make_gateway: Callable[..., Gateway],
) -> None:
    """Through a real gateway: a client's 500 KB model name (unknown: 404) leaves a
    record with the name cut, and the requests after it are recorded too."""
    key = make_key()
    gw = make_gateway(channels=[MOCK], tokens=[token("w-key", key)], env=ENV)
    tag = new_tag("big-model")
    status, _ = chat(gw, key, model="x" * 500_000, tag=tag, request_id=f"{tag}-big")
    assert status == 404
    rids = [f"{tag}-{i}" for i in range(5)]
    for rid in rids:
        assert chat(gw, key, tag=tag, request_id=rid)[0] == 200
    assert gw.stop() == 0
    db = gw.config_path.parent / "fastgate.db"
    got = tagged_rows("sqlite:///" + str(db), tag)
    assert sorted(r[1] for r in got) == sorted([f"{tag}-big", *rids])
    con = sqlite3.connect(db)
    try:
        (model,) = con.execute(
            "SELECT model FROM usage_records WHERE request_id = ?", (f"{tag}-big",)
        ).fetchone()
    finally:
        con.close()
    assert model == "x" * 1024 + "..."
