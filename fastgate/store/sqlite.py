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
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from fastgate.store.errors import StoreError
from fastgate.store.migrations import BOOTSTRAP, latest_version, load_migrations
from fastgate.store.sql import SQLStore, Tx
from fastgate.store.sqlite_usage import commit, connect, insert_usage, is_data_error, rollback

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
        self._con: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def open(self) -> None:
        await super().open()
        try:
            con = connect(self.path, self.busy_timeout)
        except ConnectionError as exc:
            raise StoreError(str(exc)) from exc.__cause__
        con.row_factory = sqlite3.Row
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
            rollback(con)
            raise
        commit(con)

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
            rollback(con)
            raise
        commit(con)
        return applied

    # -- usage ----------------------------------------------------------------------------

    async def write_usage(self, records: Sequence[Any], coerce: bool = False) -> int:
        """Insert records in one transaction; rows whose uid exists are skipped."""
        # one JSON statement a batch: this store shares its process's GIL (sqlite_usage)
        return insert_usage(self.con, records, coerce, True)

    def is_data_error(self, exc: BaseException) -> bool:
        return is_data_error(exc)
