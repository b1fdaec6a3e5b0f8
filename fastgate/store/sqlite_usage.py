"""Usage records into SQLite: the one insert path, with as few imports as it can.

Both the full store (`SQLiteStore.write_usage`) and the usage writer process's
lean store (`UsageOnlySQLite`, below) write through `insert_usage`. The lean store
opens the file and inserts usage rows, nothing else: the writer process loads no
config, no event loop and no store thread for it (it is a small process that
does one thing; its resident memory counts against the gateway's).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from typing import Any

import orjson

from fastgate.store.usage import USAGE_COLUMNS, usage_row
from fastgate.vocab.record import FIELD_INDEX, RECORD_FIELDS

# A record's four booleans (stream, estimated, cache_hit, unpriced) bind as the
# integers they already were in SQLite, through an adapter found in one dict
# lookup. Without it, sqlite3 (3.11) looks for `__adapt__` on its PrepareProtocol
# type and for `__conform__` on the bool before it binds it as an int anyway, and
# the first lookup formats and clears an AttributeError: ~0.35 us a value, ~1.4
# of the usage writer's ~10 us a row. The stored values are the same (0/1).
sqlite3.register_adapter(bool, int)


def rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        con.execute("ROLLBACK")


def commit(con: sqlite3.Connection) -> None:
    try:
        con.execute("COMMIT")
    except BaseException:
        rollback(con)  # never leave a transaction open for the next caller
        raise


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """The connection fastgate uses: WAL, synchronous=NORMAL, foreign keys, our own
    transactions. Raises sqlite3.Error subclasses as StoreError's cause upstream."""
    if path != ":memory:":
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:  # a directory that cannot be made (yet): unavailable
            raise ConnectionError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        con = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # opened and used on one thread at a time
        )
    except sqlite3.Error as exc:
        raise ConnectionError(f"cannot open SQLite database {path}: {exc}") from exc
    if path != ":memory:":
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            con.close()
            raise ConnectionError(f"cannot switch {path} to WAL mode (got {mode})")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    con.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return con


INSERT_USAGE = (
    f"INSERT INTO usage_records ({', '.join(USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in USAGE_COLUMNS)}) ON CONFLICT (uid) DO NOTHING"
)
# A whole batch as ONE statement over a JSON array of rows, for a store that shares
# its process with the data plane. Why: sqlite3 drops the GIL around every step,
# and under load the data-plane thread holds it for up to the switch interval each
# time, so executemany could write only a few hundred rows a second while the
# gateway was busy; one step per batch needs one hand-off. In the usage writer
# process (nothing competes for its GIL) executemany is cheaper: ~6 us a row
# against ~13 us (SQLite parses the JSON array once per column).
INSERT_USAGE_JSON = (
    f"INSERT INTO usage_records ({', '.join(USAGE_COLUMNS)}) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(USAGE_COLUMNS)))
    + " FROM json_each(?) WHERE true ON CONFLICT (uid) DO NOTHING"
)


_NFIELDS = len(RECORD_FIELDS)
# The same insert with the columns in RECORD_FIELDS order (`group` is `group_name`).
_RECORD_COLUMNS = tuple("group_name" if f == "group" else f for f in RECORD_FIELDS)
assert sorted(_RECORD_COLUMNS) == sorted(USAGE_COLUMNS)
INSERT_RECORD = (
    f"INSERT INTO usage_records ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _RECORD_COLUMNS)}) ON CONFLICT (uid) DO NOTHING"
)
_SCALAR = frozenset({str, int, float, bool, type(None)})

# Rows bound per statement: `INSERT ... VALUES (...), (...), ...` with this many
# rows takes one step for all of them, where executemany steps, resets and halts
# the one-row statement once a row. callgrind of 29-column rows into the migrated
# schema: ~66,600 -> ~46,400 instructions a row (bench/RESULTS.md, "Stop 24").
# 32 x 29 columns = 928 variables, under SQLite's oldest limit (999).
MANY_ROWS = 32


def _values_sql(sql: str) -> str:
    """`sql` (a one-row INSERT ... VALUES (?, ...) ON CONFLICT (uid) DO NOTHING) for
    MANY_ROWS rows, as `INSERT OR IGNORE`.

    Why not the same conflict clause: a statement that writes many rows and may
    abort half-way (a NOT NULL column's conflict is ABORT) needs a statement
    journal, the original of every page it changes, so that it can undo its own
    rows. SQLite keeps that journal in a temporary file, and the right edges of
    the six B-trees (the table's, its five indexes') went there every statement:
    ~2 KB and 0.9 write calls a row on top of the ~1 KB of WAL and checkpoint,
    ~1 us of the writer's CPU (bench/RESULTS.md, "Stop 28"). With OR IGNORE no
    conflict aborts, so no journal; a row it skipped (a uid already stored, or a
    NULL where none may be) is seen in the count of changes, and `insert_usage`
    then does the transaction again with the one-row statement, which decides as
    it always did."""
    head, _, rest = sql.partition("VALUES (")
    params, _, tail = rest.partition(")")
    assert head.startswith("INSERT INTO ") and tail == " ON CONFLICT (uid) DO NOTHING", sql
    head = "INSERT OR IGNORE INTO " + head.removeprefix("INSERT INTO ")
    return f"{head}VALUES {', '.join(['(' + params + ')'] * MANY_ROWS)}"


# True/False -> 1/0 (`_insert_rows`); 1, 0, 1.0 and 0.0 find themselves equal and
# become 1 or 0, which an INTEGER column stores anyway.
_AS_INT = {True: 1, False: 0}


def _insert_rows(
    con: sqlite3.Connection, sql: str, many: str, flags: tuple[int, ...], rows: Sequence[Any]
) -> None:
    """Bind `rows` MANY_ROWS at a time with `many`, the rest one by one with `sql`.
    `flags`: the columns of the record's booleans, bound as the 0/1 they are stored
    as (`_AS_INT.get`, a C call a value: the `bool -> int` adapter costs sqlite3 a
    formatted key and a call per value, ~1,400 instructions; a record has four).
    `many` skips a row it cannot store (`_values_sql`): the caller counts."""
    n = len(rows)
    full = n - n % MANY_ROWS
    width = len(rows[0]) if n else 0
    as_int = _AS_INT.get
    for j in range(0, full, MANY_ROWS):
        values = list(chain.from_iterable(rows[j : j + MANY_ROWS]))
        for k in flags:
            col = values[k::width]
            values[k::width] = map(as_int, col, col)  # anything but a bool as it is
        con.execute(many, values)
    if full < n:
        con.executemany(sql, rows[full:])


INSERT_USAGES = _values_sql(INSERT_USAGE)
INSERT_RECORDS = _values_sql(INSERT_RECORD)
_FLAGS = ("stream", "estimated", "cache_hit", "unpriced")  # the boolean columns
_RECORD_FLAGS = tuple(FIELD_INDEX[f] for f in _FLAGS)
_USAGE_FLAGS = tuple(USAGE_COLUMNS.index(f) for f in _FLAGS)


def _scalars(rows: list[tuple[Any, ...]]) -> bool:
    """Every value binds as it is (else executemany raises and the sink isolates it)."""
    scalar = _SCALAR
    return all(type(v) in scalar for row in rows for v in row)


# The usage writer's SQLite page cache, KiB (see UsageOnlySQLite.start).
WRITER_CACHE_KIB = 256
# The usage writer process gives its CPU back every this many rows (see `insert_usage`).
YIELD_ROWS = 32


def insert_usage(
    con: sqlite3.Connection,
    records: Sequence[Any],
    coerce: bool,
    one_statement: bool,
    yield_every: int = 0,
) -> int:
    """Insert records in one transaction; rows whose uid exists are skipped.
    Returns the number of rows inserted.

    `yield_every` (the usage writer process): rows are bound that many at a time,
    with `os.sched_yield()` between. Why: the writer wakes every `flush_interval`
    with a few hundred rows (~10 us each), and Linux's scheduler lets a task that
    woke run out its slice (3-4 ms seen) before the worker it woke next to, which
    then waits with its requests although the other core is idle: a p99 of ~2.8 ms
    at one connection, every 100 ms (`perf sched timehist`). Yielding bounds that
    wait to one chunk (~0.3 ms); when nothing else is runnable it returns at once."""
    if not records:
        return 0
    if not coerce and all(type(r) is list and len(r) == _NFIELDS for r in records):
        # As the writer process gets them (record tuples through JSON): bound as
        # they are, in the record's own field order.
        rows: Sequence[Any] = records
        sql, many, flags = INSERT_RECORD, INSERT_RECORDS, _RECORD_FLAGS
        one_statement = False
    else:
        rows = [usage_row(r, coerce) for r in records]
        sql, many, flags = INSERT_USAGE, INSERT_USAGES, _USAGE_FLAGS
    before = con.total_changes
    con.execute("BEGIN IMMEDIATE")
    try:
        if one_statement and not coerce and _scalars(rows):
            con.execute(INSERT_USAGE_JSON, (orjson.dumps(rows).decode(),))
        else:  # row by row (bad values raise here), `yield_every` rows a call
            step = yield_every or len(rows)
            _chunked(rows, step, lambda part: _insert_rows(con, sql, many, flags, part))
            if con.total_changes - before != len(rows) and len(rows) >= MANY_ROWS:
                # A row skipped: a replay's uid, or a value the many-row statement
                # ignored (`_values_sql`). Again with the one-row statement, which
                # skips the uid and raises on the value, as it always did (fewer
                # rows than MANY_ROWS: they went through it already).
                rollback(con)
                before = con.total_changes
                con.execute("BEGIN IMMEDIATE")
                _chunked(rows, step, partial(con.executemany, sql))
            if yield_every:
                os.sched_yield()  # the commit writes the WAL: its own slice
    except BaseException:
        rollback(con)
        raise
    commit(con)
    return con.total_changes - before


def _chunked(rows: Sequence[Any], step: int, bind: Callable[[Sequence[Any]], Any]) -> None:
    """`bind` over `rows`, `step` at a time, giving the CPU back between (`insert_usage`)."""
    for i in range(0, len(rows), step):
        if i:
            os.sched_yield()
        bind(rows[i : i + step])


def is_data_error(exc: BaseException) -> bool:
    """Bad data (set the record aside) rather than an unavailable database (spool)."""
    # OperationalError (locked, I/O, disk full) means the database is unavailable;
    # a value SQLite cannot bind is bad data.
    if isinstance(exc, sqlite3.ProgrammingError):
        return "binding parameter" in str(exc)
    return isinstance(
        exc,
        sqlite3.IntegrityError
        | sqlite3.InterfaceError
        | sqlite3.DataError
        | OverflowError
        | TypeError
        | ValueError,
    )


class UsageOnlySQLite:
    """What the usage sink needs of a store, for SQLite, in the calling thread.

    The interface of `Store` that `LogSink` uses: `started`, `start`, `stop`,
    `run`, `write_usage`, `is_data_error`. `write_usage` runs synchronously (so
    `run` just hands its result back). The schema is the full store's: the worker
    migrated the file before it started the writer.
    """

    def __init__(self, path: str, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.con: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"UsageOnlySQLite({self.path!r})"

    @property
    def started(self) -> bool:
        return self.con is not None

    def start(self, *, migrate: bool = False, timeout: float = 30.0) -> None:
        if self.con is None:
            con = connect(self.path, self.busy_timeout)
            # Appends touch the right edge of each B-tree only: a small page cache
            # serves them (SQLite's default, 2 MB, was resident memory of the writer).
            con.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self.con = con

    def stop(self, timeout: float = 10.0) -> None:
        con, self.con = self.con, None
        if con is not None:
            con.close()

    def run(self, result: Any, timeout: float | None = None) -> Any:
        return result

    def write_usage(self, records: Sequence[Any], coerce: bool = False) -> int:
        con = self.con
        if con is None:
            raise ConnectionError("the usage database is not open")
        return insert_usage(con, records, coerce, False, YIELD_ROWS)  # alone with its GIL

    def is_data_error(self, exc: BaseException) -> bool:
        return is_data_error(exc)
