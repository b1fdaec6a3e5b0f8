"""The usage sink against a real SQLite store: batching, the access log, queue
limits, spooling while the database is locked, replay order, idempotency."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgate.store.logsink import LogSink
from fastgate.store.sqlite import SQLiteStore
from fastgate.vocab.record import UsageRecord


def rec(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {f.name: None for f in dataclasses.fields(UsageRecord)}
    d.update(
        ts=1_700_000_000.0 + i,
        request_id=f"r{i}",
        key_name="k",
        group="default",
        ingress="openai",
        channel="c",
        provider="openai",
        model="m",
        upstream_model="m",
        stream=False,
        status=200,
        error_code="",
        prompt_tokens=i,
        completion_tokens=1,
        cached_tokens=0,
        cache_write_tokens=0,
        estimated=False,
        cost_micros=10,
        latency_ms=1.0,
        ttfb_ms=0.5,
        attempts=1,
        client_ip="127.0.0.1",
        tag="",
        cache_hit=False,
        uid=f"uid-{i:05d}",
    )
    d.update(kw)
    return d


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "fg.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(db), busy_timeout=0.2, environ={})
    s.start()
    try:
        yield s
    finally:
        s.stop()


def rows(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT uid FROM usage_records ORDER BY rowid")]
    finally:
        con.close()


class Lock:
    """Another connection holding SQLite's write lock: the store's writes fail as
    "database is locked" (an outage, as far as the sink can tell)."""

    def __init__(self, db: Path) -> None:
        self.con = sqlite3.connect(db, isolation_level=None, timeout=5)

    def __enter__(self) -> Lock:
        self.con.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.con.in_transaction:
            self.con.execute("ROLLBACK")


def test_access_log_only(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    sink = LogSink(str(path), flush_interval=0.01)
    sink.start()
    sent = [rec(i) for i in range(50)]
    for r in sent[:25]:
        sink.append(r)
    for r in sent[25:]:
        sink.append(UsageRecord(**r))
    sink.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == sent
    assert sink.written == 50 and sink.dropped == 0


def test_queue_full_is_counted_and_logged(
    store: SQLiteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = LogSink("", store=store, max_queue=10, flush_interval=60, batch_size=1000)
    for i in range(25):
        sink.append(rec(i))  # writer not started: the queue fills
    assert sink.dropped == 15 and len(sink.queue) == 10
    with caplog.at_level(logging.WARNING, logger="fastgate.sink"):
        sink.start()
        sink.close()
    assert "15 records dropped" in caplog.text
    assert sink.written == 10 and rows(db) == [f"uid-{i:05d}" for i in range(10)]
    sink.append(rec(99))  # after close: counted, not queued
    assert sink.dropped == 16


def test_batches_by_size_before_the_interval(store: SQLiteStore, db: Path) -> None:
    sink = LogSink("", store=store, flush_interval=30, batch_size=100)
    sink.start()
    try:
        for i in range(250):
            sink.append(rec(i))
        # 30 s interval: only the size trigger can write these in time
        assert wait_for(lambda: sink.written >= 200, 5)
    finally:
        sink.close()
    assert len(rows(db)) == 250


def test_flush_writes_now(store: SQLiteStore, db: Path) -> None:
    sink = LogSink("", store=store, flush_interval=60)
    sink.start()
    try:
        for i in range(5):
            sink.append(rec(i))
        sink.flush()
        assert rows(db) == [f"uid-{i:05d}" for i in range(5)] and sink.written == 5
    finally:
        sink.close()


def test_append_stays_cheap_while_the_database_is_locked(
    store: SQLiteStore, db: Path, tmp_path: Path
) -> None:
    sink = LogSink("", store=store, spool_dir=str(tmp_path / "spool"), flush_interval=0.01)
    sink.start()
    n = 20_000
    records = [rec(i) for i in range(n)]
    with Lock(db):
        t0 = time.perf_counter()
        for r in records:
            sink.append(r)
        spent = time.perf_counter() - t0
        assert wait_for(lambda: sink.spooled > 0, 5)
    assert spent < 1.0, f"{n} appends took {spent:.3f} s"
    assert wait_for(lambda: sink.written == n, 20), sink.last_error
    sink.close()
    assert rows(db) == [r["uid"] for r in records]


def test_outage_spools_then_replays_in_order(store: SQLiteStore, db: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sink = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.02, batch_size=50)
    sink.start()
    for i in range(100):
        sink.append(rec(i))
    assert wait_for(lambda: sink.written == 100, 5)
    lock = Lock(db).__enter__()
    try:
        for i in range(100, 400):
            sink.append(rec(i))
            if i % 100 == 0:
                time.sleep(0.1)
        assert wait_for(lambda: sink.spooled == 300 and not sink.queue, 10)
        assert sink.degraded and sink.write_failures >= 1 and "locked" in sink.last_error
        on_disk = [
            orjson.loads(line)["uid"]
            for f in sorted(spool.glob("spool-*.jsonl"))
            for line in f.read_bytes().splitlines()
        ]
        assert on_disk == [f"uid-{i:05d}" for i in range(100, 400)]
    finally:
        lock.release()
    for i in range(400, 450):
        sink.append(rec(i))
    assert wait_for(lambda: sink.written == 450, 10), sink.last_error
    sink.close()
    assert rows(db) == [f"uid-{i:05d}" for i in range(450)]  # spool first, then new ones
    # the 50 appended right after the unlock may have queued behind the spool too
    assert 300 <= sink.replayed <= 350 and not sink.degraded
    assert list(spool.glob("spool-*.jsonl")) == []


def test_close_is_bounded_and_keeps_the_spool_for_the_next_start(
    store: SQLiteStore, db: Path, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with Lock(db):
        sink = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.02)
        sink.start()
        for i in range(200):
            sink.append(rec(i))
        t0 = time.monotonic()
        sink.close(timeout=1.0)
        assert time.monotonic() - t0 < 3.0
    assert sink.spooled == 200 and sink.written == 0 and sink.dropped == 0
    assert rows(db) == []
    again = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.02)
    assert again.spooled == 0  # not started yet
    again.start()
    assert again.spooled == 200 or again.written == 200
    assert wait_for(lambda: again.written == 200, 10)
    again.close()
    assert rows(db) == [f"uid-{i:05d}" for i in range(200)]
    assert list(spool.glob("spool-*.jsonl")) == []


def test_without_spool_dir_failed_batches_wait_in_memory(
    store: SQLiteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = LogSink("", store=store, flush_interval=0.02)
    sink.start()
    with Lock(db):
        for i in range(100):
            sink.append(rec(i))
        assert wait_for(lambda: sink.spooled == 100, 5)
    assert wait_for(lambda: sink.written == 100, 10)
    with Lock(db):
        for i in range(100, 130):
            sink.append(rec(i))
        with caplog.at_level(logging.ERROR, logger="fastgate.sink"):
            sink.close(timeout=0.5)
    assert sink.dropped == 30 and "lost" in caplog.text
    assert rows(db) == [f"uid-{i:05d}" for i in range(100)]


class CommitThenFail(SQLiteStore):
    """The first write commits and then reports a connection error (the reply was
    lost): the sink must spool it, and the replay must not insert it twice."""

    failed = False

    async def write_usage(self, records: Any, coerce: bool = False) -> int:
        n = await super().write_usage(records, coerce)
        if not self.failed:
            self.failed = True
            raise ConnectionResetError("connection lost after commit")
        return n


def test_ambiguous_failure_is_not_written_twice(db: Path, tmp_path: Path) -> None:
    store = CommitThenFail(str(db), environ={})
    store.start()
    try:
        sink = LogSink("", store=store, spool_dir=str(tmp_path / "s"), flush_interval=0.02)
        sink.start()
        for i in range(300):
            sink.append(rec(i))
        assert wait_for(lambda: sink.written == 300, 10)
        sink.close()
        assert store.failed and sink.replayed > 0
        assert rows(db) == [f"uid-{i:05d}" for i in range(300)]
    finally:
        store.stop()


def test_records_without_uid_get_one_before_any_write(store: SQLiteStore, db: Path) -> None:
    sink = LogSink("", store=store, flush_interval=0.02)
    sink.start()
    records = [rec(i, uid="") for i in range(20)] + [UsageRecord(**rec(20, uid=""))]
    for r in records:
        sink.append(r)
    sink.close()
    uids = [r["uid"] if isinstance(r, dict) else r.uid for r in records]
    assert all(uids) and len(set(uids)) == 21
    assert rows(db) == uids


def test_a_bad_record_does_not_block_the_batch(
    store: SQLiteStore, db: Path, tmp_path: Path
) -> None:
    sink = LogSink("", store=store, spool_dir=str(tmp_path / "s"), flush_interval=0.02)
    sink.start()
    for i in range(10):
        sink.append(rec(i, tag=["not", "text"]) if i == 4 else rec(i))
    assert wait_for(lambda: sink.written == 10, 5)
    sink.close()
    assert rows(db) == [f"uid-{i:05d}" for i in range(10)]
    con = sqlite3.connect(db)
    (tag,) = con.execute("SELECT tag FROM usage_records WHERE uid = 'uid-00004'").fetchone()
    con.close()
    assert tag == str(["not", "text"]) and sink.rejected == 0


class Poison(SQLiteStore):
    """Rejects one record as bad data whatever is done to it."""

    def is_data_error(self, exc: BaseException) -> bool:
        return isinstance(exc, ValueError) or super().is_data_error(exc)

    async def write_usage(self, records: Any, coerce: bool = False) -> int:
        if any(r["uid"] == "uid-00003" for r in records):
            raise ValueError("invalid input for column")
        return await super().write_usage(records, coerce)


def test_rejected_records_are_kept_aside(db: Path, tmp_path: Path) -> None:
    store = Poison(str(db), environ={})
    store.start()
    try:
        spool = tmp_path / "s"
        sink = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.02)
        sink.start()
        for i in range(8):
            sink.append(rec(i))
        assert wait_for(lambda: sink.written + sink.rejected == 8, 5)
        sink.close()
    finally:
        store.stop()
    assert sink.rejected == 1 and sink.written == 7
    assert rows(db) == [f"uid-{i:05d}" for i in range(8) if i != 3]
    (line,) = (spool / "rejected.jsonl").read_bytes().splitlines()
    assert orjson.loads(line)["uid"] == "uid-00003"


def test_two_sinks_can_share_one_spool_dir(store: SQLiteStore, db: Path, tmp_path: Path) -> None:
    """Like two worker processes: each spools, every record lands exactly once."""
    spool = str(tmp_path / "shared")
    a = LogSink("", store=store, spool_dir=spool, flush_interval=0.02, spool_file_records=40)
    b = LogSink("", store=store, spool_dir=spool, flush_interval=0.02, spool_file_records=40)
    a.start()
    b.start()
    with Lock(db):
        for i in range(0, 300, 2):
            a.append(rec(i))
            b.append(rec(i + 1))
        assert wait_for(lambda: a.spooled == 150 and b.spooled == 150, 10)
    assert wait_for(lambda: len(rows(db)) == 300, 15)
    a.close()
    b.close()
    assert sorted(rows(db)) == [f"uid-{i:05d}" for i in range(300)]
    assert not list(Path(spool).glob("spool-*.jsonl"))


class Chunks(SQLiteStore):
    """Records the size of every usage write; the second write fails once as an
    outage (a replay cut in the middle of a spool file)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sizes: list[int] = []

    async def write_usage(self, records: Any, coerce: bool = False) -> int:
        self.sizes.append(len(records))
        if len(self.sizes) == 2:
            raise ConnectionResetError("connection lost")
        return await super().write_usage(records, coerce)


def test_replay_reads_a_spool_file_a_chunk_at_a_time(db: Path, tmp_path: Path) -> None:
    """An outage leaves the writer no bigger: a spool file is parsed and written a
    chunk at a time, not loaded whole; a replay cut in the middle of a file keeps
    the file and loses nothing; every spool file descriptor is closed after."""
    spool = tmp_path / "s"
    spool.mkdir()
    line = {"unpriced": False, "router": "", "service_tier": "", "gateway_ms": 0.0}
    (spool / "spool-00000000000000000001.jsonl").write_bytes(
        b"".join(orjson.dumps(rec(i, **line)) + b"\n" for i in range(600))
        + b"{not json\n"
        + b"".join(orjson.dumps(rec(i, **line)) + b"\n" for i in range(600, 1000))
    )
    store = Chunks(str(db), environ={})
    store.start()
    fds = len(os.listdir("/proc/self/fd"))
    try:
        sink = LogSink("", store=store, spool_dir=str(spool), batch_size=5000)
        sink.open()
        assert sink.spooled == 1001  # lines, counted before parsing
        sink.flush()  # the first chunk is written, the second fails: the file stays
        assert sink.degraded and list(spool.glob("spool-*.jsonl"))
        assert len(os.listdir("/proc/self/fd")) == fds
        sink.flush()
        sink.close()
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        store.stop()
    # 250, 250 (fails), then the whole file again in four (the corrupt line skipped)
    assert store.sizes == [250, 250, 250, 250, 250, 250]
    assert rows(db) == [f"uid-{i:05d}" for i in range(1000)]  # the first chunk once
    assert sink.replayed == 1000 and not sink.degraded and sink.trim_due is False
    assert not list(spool.glob("spool-*.jsonl"))


class Batch(list):  # a list that can be watched with a weak reference
    pass


def test_a_failed_write_frees_its_batch_without_waiting_for_gc(
    store: SQLiteStore, db: Path
) -> None:
    """A write that fails (the database is locked here) must not leave its records
    in a reference cycle (exception -> traceback -> frame -> future -> exception):
    during an outage that kept a batch alive per failure until a full collection."""
    batch = Batch([rec(1)])
    ref = weakref.ref(batch)
    gc.disable()
    try:
        with Lock(db):
            try:
                store.run(store.write_usage(batch), timeout=5)
            except sqlite3.OperationalError:
                pass
            else:
                raise AssertionError("the write should fail while the database is locked")
        del batch
        assert ref() is None
    finally:
        gc.enable()
