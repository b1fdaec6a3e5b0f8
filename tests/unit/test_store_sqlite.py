"""The store's threading model and SQLite specifics, against real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import patch

import pytest

from fastgate.config import DatabaseConfig
from fastgate.store.base import StoreError, store_for
from fastgate.store.postgres import PostgresStore, redact_url
from fastgate.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(str(tmp_path / "fg.db"), environ={})
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _records(n: int, prefix: str = "u") -> list[dict]:
    return [
        {"ts": 1.7e9 + i, "key_name": "k", "model": "m", "cost_micros": 1, "uid": f"{prefix}{i}"}
        for i in range(n)
    ]


def test_methods_run_on_the_store_thread(store: SQLiteStore) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert store.run(where()) == "fastgate-store"
    assert store.submit(where()).result(5) == "fastgate-store"


def test_call_from_another_loop_keeps_that_loop_free(store: SQLiteStore) -> None:
    """While the store writes 30k rows, the caller's loop keeps running its tasks."""

    async def main() -> tuple[int, int]:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        before = ticks
        inserted = await store.call(store.write_usage(_records(30_000)))
        during = ticks - before
        stop = True
        await t
        return inserted, during

    inserted, during = asyncio.run(main())
    assert inserted == 30_000
    assert during > 5  # the loop ran while the store worked


def test_run_on_the_store_thread_is_refused(store: SQLiteStore) -> None:
    async def nested() -> None:
        store.run(store.version())

    with pytest.raises(RuntimeError, match="store thread"):
        store.run(nested())


def test_sync_facade(store: SQLiteStore) -> None:
    assert store.sync.version() == store.run(store.version()) == 1
    store.sync.create_group({"name": "g"})
    assert [g["name"] for g in store.sync.list_groups()] == ["g"]


def test_start_failure_is_a_store_error_and_stops_the_thread(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    s = SQLiteStore(str(tmp_path / "adir"), environ={})
    with pytest.raises(StoreError):
        s.start()
    assert not s.started
    with pytest.raises(StoreError, match="not started"):
        s.run(s.version())


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fg.db"
    with store_for("sqlite:///" + str(path), environ={}):
        pass
    con = sqlite3.connect(path)
    con.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    con.commit()
    con.close()
    s = store_for("sqlite:///" + str(path), environ={})
    with pytest.raises(StoreError, match="newer"):
        s.start()
    assert not s.started


def test_start_without_migrate_leaves_the_file_empty(tmp_path: Path) -> None:
    s = SQLiteStore(str(tmp_path / "fg.db"), environ={})
    s.start(migrate=False)
    try:
        assert s.sync.schema_version() == 0
        assert s.sync.migrate() >= 1
        assert s.sync.migrate() == 0
    finally:
        s.stop()


def test_store_for_picks_the_backend(tmp_path: Path) -> None:
    s = store_for(DatabaseConfig(url="sqlite:///" + str(tmp_path / "x.db")))
    assert isinstance(s, SQLiteStore) and s.path == str(tmp_path / "x.db")
    assert isinstance(store_for(DatabaseConfig()), SQLiteStore)
    pg = store_for("postgresql://u:pw@db.example:5433/fg")
    assert isinstance(pg, PostgresStore) and "pw" not in repr(pg)
    with pytest.raises(StoreError):
        store_for("mysql://x")


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_another_process_write_is_seen_by_polling(store: SQLiteStore) -> None:
    """Workers are processes: a write in one shows up in the others' version poll."""
    v0 = store.sync.version()
    code = (
        "from fastgate.store.base import store_for\n"
        f"with store_for({('sqlite:///' + store.path)!r}, environ={{}}) as s:\n"
        "    s.sync.create_channel({'name': 'from-child', 'type': 'mock'})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    assert store.sync.version() == v0 + 1
    assert [c.name for c in store.sync.load().channels] == ["from-child"]


def test_writers_in_two_processes_do_not_fail(store: SQLiteStore) -> None:
    """A second process writing usage at the same time waits for the lock, it does not fail."""
    code = (
        "from fastgate.store.base import store_for\n"
        f"with store_for({('sqlite:///' + store.path)!r}, environ={{}}) as s:\n"
        "    for b in range(20):\n"
        "        s.sync.write_usage([{'ts': 1.0, 'uid': f'c{b}-{i}'} for i in range(500)])\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        for b in range(20):
            store.sync.write_usage(_records(500, prefix=f"p{b}-"))
            time.sleep(0.005)
    finally:
        assert child.wait(60) == 0
    (total,) = store.sync.query_usage(None)
    assert total["requests"] == 20_000


def _migrate(path: str) -> None:
    """The schema, as the worker creates it before it starts its usage writer."""
    s = SQLiteStore(path, environ={})
    s.start()
    s.stop()


def _wchar() -> int:
    """Bytes this process has written (any file), from /proc."""
    with open("/proc/self/io") as fh:
        return int(next(ln for ln in fh if ln.startswith("wchar:")).split()[1])


def _record_lists(n: int, bad_at: int = -1, start: int = 0) -> list[list]:
    """Records as the usage writer process receives them: the unit tests' record
    (`test_store_logsink.rec`) as a list in RECORD_FIELDS order, as JSON brings
    the data plane's tuples back."""
    from fastgate.vocab.record import RECORD_FIELDS
    from tests.unit.test_store_logsink import rec

    later = {"unpriced": False, "router": "", "service_tier": "", "gateway_ms": 0.0}
    bad = {"model": {"not": "bindable"}}
    return [
        [d[f] for f in RECORD_FIELDS]
        for d in (
            rec(i, uid=f"w{i}", **later, **(bad if i == bad_at else {}))
            for i in range(start, start + n)
        )
    ]


def test_writer_insert_gives_the_cpu_back_between_chunks(tmp_path: Path, monkeypatch) -> None:
    """The usage writer process binds YIELD_ROWS rows at a time and yields between
    them (and before its commit), in ONE transaction: every row lands, a replay of
    the same uids adds nothing."""
    from fastgate.store import sqlite_usage
    from fastgate.store.sqlite_usage import WRITER_CACHE_KIB, YIELD_ROWS, UsageOnlySQLite

    path = str(tmp_path / "fg.db")
    _migrate(path)
    yields = []
    monkeypatch.setattr(sqlite_usage.os, "sched_yield", lambda: yields.append(1))
    st = UsageOnlySQLite(path)
    st.start()
    try:
        # a small page cache: appends need the right edge of each B-tree only
        assert st.con.execute("PRAGMA cache_size").fetchone() == (-WRITER_CACHE_KIB,)
        n = YIELD_ROWS * 3 + 5
        assert st.write_usage(_record_lists(n)) == n
        assert len(yields) == 4  # between the 4 chunks (3), and before the commit (1)
        assert st.write_usage(_record_lists(n)) == 0  # same uids: nothing twice
        assert not st.con.in_transaction
    finally:
        st.stop()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*), count(DISTINCT uid) FROM usage_records").fetchone() == (
        n,
        n,
    )


def _stored(path: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM usage_records ORDER BY uid").fetchall()
    finally:
        con.close()


def test_writer_binds_many_rows_a_statement_and_stores_what_one_row_a_statement_did(
    tmp_path: Path,
) -> None:
    """The writer binds MANY_ROWS rows per INSERT (one step for all of them) and the
    rest of a chunk one by one. Every stored value is what the one-row statement
    stores (the booleans too, which the many-row path binds as 0/1 itself), and a
    uid seen twice, inside one many-row statement or across two, lands once (the
    many-row statement skips it; the batch is then written again row by row)."""
    from fastgate.store.sqlite_usage import INSERT_RECORD, MANY_ROWS, UsageOnlySQLite
    from fastgate.vocab.record import FIELD_INDEX

    uid, ts = FIELD_INDEX["uid"], FIELD_INDEX["ts"]
    rows = _record_lists(MANY_ROWS * 2 + 7)
    flags = [FIELD_INDEX[f] for f in ("stream", "estimated", "cache_hit", "unpriced")]
    for i, r in enumerate(rows):
        r[ts] = 1.7e9 + i / 7  # distinct floats
        for k, f in enumerate(flags):
            r[f] = bool((i >> k) & 1)  # every mix of the four booleans
    dups = [list(r) for r in rows]
    dups[3][uid] = dups[5][uid]  # a duplicate inside the first many-row statement
    dups[MANY_ROWS + 1][uid] = dups[2][uid]  # ... and one in the second, of the first's
    for name, batch, stored in (("clean", rows, len(rows)), ("dups", dups, len(rows) - 2)):
        many, one = str(tmp_path / f"{name}-many.db"), str(tmp_path / f"{name}-one.db")
        _migrate(many)
        _migrate(one)
        adapted = []  # what reaches sqlite3's bool adapter: rows bound one by one only

        def counting(v: bool, adapted: list = adapted) -> int:
            adapted.append(v)
            return int(v)

        st = UsageOnlySQLite(many)
        st.start()
        sqlite3.register_adapter(bool, counting)
        try:
            assert st.write_usage(batch) == stored
            if batch is rows:  # the many-row statements bound 0/1 themselves
                assert len(adapted) == 4 * (len(rows) % MANY_ROWS)
            assert st.write_usage(batch) == 0
        finally:
            sqlite3.register_adapter(bool, int)
            st.stop()
        con = sqlite3.connect(one)
        with con:
            con.executemany(INSERT_RECORD, batch)
        con.close()
        expected = _stored(one)
        assert len(expected) == stored
        assert _stored(many) == expected
        con = sqlite3.connect(many)
        kinds = con.execute(
            "SELECT DISTINCT typeof(stream), typeof(estimated), typeof(cache_hit), "
            "typeof(unpriced), stream, estimated, cache_hit, unpriced FROM usage_records"
        ).fetchall()
        con.close()
        assert {k[:4] for k in kinds} == {("integer",) * 4}  # booleans as 0/1, as always
        assert {k[4:] for k in kinds} == {tuple((i >> k) & 1 for k in range(4)) for i in range(16)}


def test_writer_many_row_statement_keeps_no_statement_journal(tmp_path: Path) -> None:
    """The many-row INSERT writes no statement journal (SQLite's temporary file of
    the pages each statement changes, needed only by a statement that can abort
    half-way): the writer's bytes written for a batch are a third of what the same
    batch cost with `ON CONFLICT (uid) DO NOTHING` on the many-row statement."""
    from fastgate.store import sqlite_usage
    from fastgate.store.sqlite_usage import MANY_ROWS, UsageOnlySQLite

    def written(path: str, many: str) -> tuple[int, int]:
        _migrate(path)
        st = UsageOnlySQLite(path)
        st.start()
        try:
            st.write_usage(_record_lists(MANY_ROWS * 8))  # the journal's file exists now
            before = _wchar()
            with patch.object(sqlite_usage, "INSERT_RECORDS", many):
                n = sum(
                    st.write_usage(_record_lists(MANY_ROWS * 8, start=MANY_ROWS * 8 * (k + 1)))
                    for k in range(20)
                )
            return _wchar() - before, n
        finally:
            st.stop()

    abortable = sqlite_usage.INSERT_RECORDS.replace("INSERT OR IGNORE INTO", "INSERT INTO")
    abortable += " ON CONFLICT (uid) DO NOTHING"
    assert abortable != sqlite_usage.INSERT_RECORDS
    with_journal, n1 = written(str(tmp_path / "journal.db"), abortable)
    without, n2 = written(str(tmp_path / "plain.db"), sqlite_usage.INSERT_RECORDS)
    assert n1 == n2 == MANY_ROWS * 8 * 20
    assert without * 2 < with_journal, (without, with_journal)


def test_writer_many_row_statement_does_not_skip_a_null(tmp_path: Path) -> None:
    """A NULL where the schema has NOT NULL, in a row the many-row statement binds:
    that statement would skip the row (OR IGNORE), so the batch is written again
    with the one-row statement, which raises as before. Nothing is stored and the
    error is a data error (the sink sets the record aside)."""
    from fastgate.store.sqlite_usage import MANY_ROWS, UsageOnlySQLite
    from fastgate.vocab.record import FIELD_INDEX

    path = str(tmp_path / "fg.db")
    _migrate(path)
    rows = _record_lists(MANY_ROWS * 2)
    rows[MANY_ROWS + 3][FIELD_INDEX["model"]] = None
    st = UsageOnlySQLite(path)
    st.start()
    try:
        with pytest.raises(sqlite3.IntegrityError) as info:
            st.write_usage(rows)
        assert "NOT NULL" in str(info.value)
        assert st.is_data_error(info.value)
        assert not st.con.in_transaction
        assert st.write_usage(rows[:MANY_ROWS]) == MANY_ROWS  # the rest is fine
    finally:
        st.stop()
    assert len(_stored(path)) == MANY_ROWS


def test_writer_insert_chunks_are_one_transaction(tmp_path: Path) -> None:
    """A value SQLite cannot bind in the third chunk rolls back the first two: the
    sink sees one failed batch (and isolates the bad record), never half of it."""
    from fastgate.store.sqlite_usage import YIELD_ROWS, UsageOnlySQLite

    path = str(tmp_path / "fg.db")
    _migrate(path)
    st = UsageOnlySQLite(path)
    st.start()
    try:
        with pytest.raises(Exception) as info:
            st.write_usage(_record_lists(YIELD_ROWS * 3, bad_at=YIELD_ROWS * 2 + 1))
        assert st.is_data_error(info.value)
        assert not st.con.in_transaction
    finally:
        st.stop()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM usage_records").fetchone() == (0,)


def test_writer_binds_record_booleans_as_integers_through_the_adapter(tmp_path: Path) -> None:
    """The record's booleans land as SQLite integers 0/1 (as they always did), bound
    through the `bool -> int` adapter: sqlite3 finds it in its adapter table and
    does not go looking for `__adapt__`/`__conform__` (which formats and clears an
    AttributeError per value, ~1.4 us of a ~10 us row in the usage writer)."""
    from fastgate.store import sqlite_usage
    from fastgate.store.sqlite_usage import UsageOnlySQLite
    from fastgate.vocab.record import FIELD_INDEX

    assert sqlite3.adapters.get((bool, sqlite3.PrepareProtocol)) is int
    assert sqlite_usage.sqlite3 is sqlite3
    path = str(tmp_path / "fg.db")
    _migrate(path)
    rows = _record_lists(2)
    flags = ("stream", "estimated", "cache_hit", "unpriced")
    for f in flags:
        rows[0][FIELD_INDEX[f]] = True
        rows[1][FIELD_INDEX[f]] = False
    st = UsageOnlySQLite(path)
    st.start()
    try:
        assert st.write_usage(rows) == 2
    finally:
        st.stop()
    con = sqlite3.connect(path)
    cols = ", ".join(f"{f}, typeof({f})" for f in flags)
    got = con.execute(f"SELECT {cols} FROM usage_records ORDER BY uid").fetchall()
    assert got == [(1, "integer") * 4, (0, "integer") * 4]
