"""SQLite backend: the embedded default (a file beside the config, WAL mode).

Why it is safe to call sqlite3 synchronously here: every method runs on the
store's own thread and loop (see base.py), never on the data plane's. One
connection, WAL journal (readers never block the writer, several worker
processes can share the file), `synchronous=NORMAL` (durable at checkpoints,
never corrupt), a busy timeout for the moments another process holds the
write lock, and `BEGIN IMMEDIATE` for writes so two writers queue instead of
deadlocking on a lock upgrade.

There is no cross-process notification in SQLite: other processes see changes
by polling `version()` (a one-row read).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson

from fastgate.store.errors import StoreError
from fastgate.store.migrations import BOOTSTRAP, latest_version, load_migrations
from fastgate.store.sql import SQLStore, Tx
from fastgate.store.usage import USAGE_COLUMNS, usage_row
from fastgate.vocab.record import RECORD_FIELDS

__all__ = ["SQLiteStore"]

_PLACEHOLDER = re.compile(r"\$(\d+)")
_SQL_CACHE: dict[str, str] = {}


def _sql(text: str) -> str:
    """$1-style placeholders -> SQLite's ?1 (same numbering)."""
    out = _SQL_CACHE.get(text)
    if out is None:
        out = _SQL_CACHE[text] = _PLACEHOLDER.sub(r"?\1", text)
    return out


def _split_script(script: str) -> list[str]:
    """A migration file as separate statements (executescript would COMMIT on its own)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt and not all(
                part.strip().startswith("--") or not part.strip() for part in stmt.splitlines()
            ):
                statements.append(stmt)
            buf = ""
    if buf.strip() and not all(
        p.strip().startswith("--") or not p.strip() for p in buf.splitlines()
    ):
        raise StoreError("migration ends with an incomplete SQL statement")
    return statements


def _rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        con.execute("ROLLBACK")


def _commit(con: sqlite3.Connection) -> None:
    try:
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)  # never leave a transaction open for the next caller
        raise


class _SqliteTx(Tx):
    __slots__ = ("con",)

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return self.con.execute(_sql(sql), args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        return self.con.execute(_sql(sql), args).fetchone()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = self.con.execute(_sql(sql), args).fetchone()
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> None:
        self.con.execute(_sql(sql), args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.con.executemany(_sql(sql), rows)


_INSERT_USAGE = (
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
_INSERT_USAGE_JSON = (
    f"INSERT INTO usage_records ({', '.join(USAGE_COLUMNS)}) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(USAGE_COLUMNS)))
    + " FROM json_each(?) WHERE true ON CONFLICT (uid) DO NOTHING"
)


_NFIELDS = len(RECORD_FIELDS)
# The same insert with the columns in RECORD_FIELDS order (`group` is `group_name`).
_RECORD_COLUMNS = tuple("group_name" if f == "group" else f for f in RECORD_FIELDS)
assert sorted(_RECORD_COLUMNS) == sorted(USAGE_COLUMNS)
_INSERT_RECORD = (
    f"INSERT INTO usage_records ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _RECORD_COLUMNS)}) ON CONFLICT (uid) DO NOTHING"
)
_SCALAR = frozenset({str, int, float, bool, type(None)})


def _scalars(rows: list[tuple[Any, ...]]) -> bool:
    """Every value binds as it is (else executemany raises and the sink isolates it)."""
    scalar = _SCALAR
    return all(type(v) in scalar for row in rows for v in row)


class SQLiteStore(SQLStore):
    """The store in one SQLite file (or ":memory:", for tests)."""

    dialect = "sqlite"
    _unique_errors = (sqlite3.IntegrityError,)

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(environ=environ)
        self.path = path
        self.busy_timeout = busy_timeout
        # Usage batches as one JSON statement (see _INSERT_USAGE_JSON); the writer
        # process, alone with its GIL, turns this off.
        self.one_statement_batches = True
        self._con: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def open(self) -> None:
        await super().open()
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        try:
            con = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # opened and used on the store thread only
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        con.row_factory = sqlite3.Row
        if self.path != ":memory:":
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                con.close()
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        self._con = con

    async def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            raise StoreError("SQLite store is not open")
        return self._con

    @contextlib.asynccontextmanager
    async def _tx(self, write: bool = True) -> AsyncIterator[Tx]:
        con = self.con
        # Reads get a snapshot too (WAL): load() sees one consistent state.
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield _SqliteTx(con)
        except BaseException:
            _rollback(con)
            raise
        _commit(con)

    def _floor_expr(self, seconds: int) -> str:
        return f"CAST(ts / {seconds} AS INTEGER)"  # ts > 0: truncation is floor

    async def ping(self) -> None:
        self.con.execute("SELECT 1").fetchone()

    # -- migrations -------------------------------------------------------------------

    async def schema_version(self) -> int:
        con = self.con
        con.execute(BOOTSTRAP)
        row = con.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    async def migrate(self) -> int:
        con = self.con
        con.execute(BOOTSTRAP)
        migrations = load_migrations("sqlite")
        applied = 0
        con.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
        try:
            row = con.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            current = int(row[0] or 0)
            if current > latest_version("sqlite"):
                raise StoreError(
                    f"database schema version {current} is newer than this fastgate "
                    f"supports ({latest_version('sqlite')}): upgrade fastgate"
                )
            for mig in migrations:
                if mig.version <= current:
                    continue
                for stmt in _split_script(mig.sql):
                    con.execute(stmt)
                con.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, time.time()),
                )
                applied += 1
        except BaseException:
            _rollback(con)
            raise
        _commit(con)
        return applied

    # -- usage ----------------------------------------------------------------------------

    async def write_usage(self, records: Sequence[Any], coerce: bool = False) -> int:
        """Insert records in one transaction; rows whose uid exists are skipped."""
        if not records:
            return 0
        con = self.con
        if not coerce and all(type(r) is list and len(r) == _NFIELDS for r in records):
            # As the writer process gets them (record tuples through JSON): bound
            # as they are, in the record's own field order.
            before = con.total_changes
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(_INSERT_RECORD, records)
            except BaseException:
                _rollback(con)
                raise
            _commit(con)
            return con.total_changes - before
        rows = [usage_row(r, coerce) for r in records]
        before = con.total_changes
        con.execute("BEGIN IMMEDIATE")
        try:
            if coerce or not self.one_statement_batches or not _scalars(rows):
                con.executemany(_INSERT_USAGE, rows)  # row by row: bad values raise here
            else:
                con.execute(_INSERT_USAGE_JSON, (orjson.dumps(rows).decode(),))
        except BaseException:
            _rollback(con)
            raise
        _commit(con)
        return con.total_changes - before

    def is_data_error(self, exc: BaseException) -> bool:
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
