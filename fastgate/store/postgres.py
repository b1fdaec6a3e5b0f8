"""Postgres backend (asyncpg): shared state for several instances.

Why these choices:
- An asyncpg pool on the store's own loop (base.py): the data plane never waits on it.
- Usage records arrive by binary COPY into a per-connection temporary staging
  table, then one `INSERT ... SELECT ... ON CONFLICT (uid) DO NOTHING`: COPY's
  speed, and a replayed batch never inserts a row twice.
- Every config write sends `NOTIFY fastgate_config, '<version>'` inside its
  transaction (delivered on commit). One dedicated connection LISTENs; when it
  drops it reconnects with backoff and then tells the listeners to re-check,
  since notifications sent meanwhile are lost.
- Migrations take a transaction-scoped advisory lock: instances starting
  together apply each migration once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fastgate.store.base import NOTIFY_CHANNEL
from fastgate.store.errors import StoreError
from fastgate.store.migrations import BOOTSTRAP, latest_version, load_migrations
from fastgate.store.sql import SQLStore, Tx
from fastgate.store.usage import USAGE_COLUMNS, usage_row

__all__ = ["PostgresStore", "redact_url"]

log = logging.getLogger("fastgate.store")

_MIGRATE_LOCK = 0x66617374  # "fast": pg_advisory_xact_lock key for migrations
_STAGE = "fastgate_usage_stage"
_PG_TYPES = {
    "ts": "float8",
    "stream": "boolean",
    "status": "integer",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "cached_tokens": "bigint",
    "cache_write_tokens": "bigint",
    "estimated": "boolean",
    "cost_micros": "bigint",
    "latency_ms": "float8",
    "ttfb_ms": "float8",
    "attempts": "integer",
    "cache_hit": "boolean",
    "unpriced": "boolean",
    "gateway_ms": "float8",
}
_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in USAGE_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COLS = ", ".join(USAGE_COLUMNS)
_INSERT_FROM_STAGE = (
    f"INSERT INTO usage_records ({_COLS}) SELECT {_COLS} FROM {_STAGE} ON CONFLICT (uid) DO NOTHING"
)
# SQLSTATE classes meaning "bad data": retrying the same rows cannot succeed.
_DATA_CLASSES = ("22", "23")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "postgresql://<invalid url>"
    if p.password is None:
        return url
    netloc = f"{p.username or ''}:***@{p.hostname or ''}" + (f":{p.port}" if p.port else "")
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


class _PgTx(Tx):
    __slots__ = ("con",)

    def __init__(self, con: asyncpg.Connection) -> None:
        self.con = con

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self.con.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        return await self.con.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.con.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.con.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.con.executemany(sql, rows)


class PostgresStore(SQLStore):
    """The store in Postgres, shared by every instance that points at it."""

    dialect = "postgres"
    _unique_errors = (asyncpg.UniqueViolationError,)

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 0,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(environ=environ)
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_con: asyncpg.Connection | None = None
        self._listening = False
        self._closing = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    # -- connections --------------------------------------------------------------------

    async def open(self) -> None:
        await super().open()
        self._closing = False
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                init=self._init_connection,
            )
            # min_size 0 keeps asyncpg from logging tracebacks while the database is
            # down (it would keep restoring the floor); check the connection once here.
            await self._pool.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.terminate()
            raise StoreError(f"cannot connect to {redact_url(self.url)}: {exc}") from exc

    @staticmethod
    async def _init_connection(con: asyncpg.Connection) -> None:
        await con.execute(_STAGE_DDL)

    async def close(self) -> None:
        self._closing = True
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("Postgres store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _tx(self, write: bool = True) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as con:
            if write:
                tr = con.transaction()
            else:  # one snapshot for the whole read (load() must be consistent)
                tr = con.transaction(isolation="repeatable_read", readonly=True)
            async with tr:
                yield _PgTx(con)

    def _floor_expr(self, seconds: int) -> str:
        return f"CAST(floor(ts / {seconds}) AS BIGINT)"

    async def _notify(self, tx: Tx, version: int) -> None:
        await tx.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(version))

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def version(self) -> int:
        return int(await self.pool.fetchval("SELECT version FROM config_version WHERE id = 1"))

    # -- migrations -------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self.pool.acquire() as con:
            if await con.fetchval("SELECT to_regclass('schema_migrations')") is None:
                return 0
            return int(
                await con.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            )

    async def migrate(self) -> int:
        applied = 0
        latest = latest_version("postgres")
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await con.execute(BOOTSTRAP)
            current = int(
                await con.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            )
            if current > latest:
                raise StoreError(
                    f"database schema version {current} is newer than this fastgate "
                    f"supports ({latest}): upgrade fastgate"
                )
            for mig in load_migrations("postgres"):
                if mig.version <= current:
                    continue
                await con.execute(mig.sql)
                await con.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    time.time(),
                )
                applied += 1
        return applied

    # -- usage ----------------------------------------------------------------------------

    async def write_usage(self, records: Sequence[Any], coerce: bool = False) -> int:
        """COPY into the staging table, then insert the rows whose uid is new."""
        if not records:
            return 0
        rows = [usage_row(r, coerce) for r in records]
        async with self.pool.acquire() as con, con.transaction():
            await con.copy_records_to_table(_STAGE, records=rows, columns=USAGE_COLUMNS)
            status = await con.execute(_INSERT_FROM_STAGE)
        return int(status.rsplit(" ", 1)[-1])

    def is_data_error(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", "") or ""
            return state[:2] in _DATA_CLASSES
        # asyncpg's client-side "invalid input for query argument" is a ValueError.
        return isinstance(exc, ValueError | TypeError | OverflowError)

    # -- LISTEN ---------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._listening

    async def listen(self, callback: Any) -> None:
        """Register `callback(version)`; start the LISTEN connection on first use."""
        await super().listen(callback)
        if self._listen_task is None and not self._closing:
            self._listen_task = asyncio.get_running_loop().create_task(self._listen_loop())

    def _on_notify(self, con: Any, pid: int, channel: str, payload: str) -> None:
        try:
            version = int(payload)
        except ValueError:
            version = -1
        self._fire(version)

    async def _listen_loop(self) -> None:
        delay = 0.5
        failures = 0  # logged at the first failure of an outage and when it ends
        while not self._closing:
            con: asyncpg.Connection | None = None
            try:
                con = await asyncpg.connect(self.url, timeout=self.connect_timeout)
                lost = asyncio.Event()
                con.add_termination_listener(lambda _c, ev=lost: ev.set())
                await con.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self._listen_con = con
                self._listening = True
                delay = 0.5
                if failures:
                    log.info("LISTEN on %s restored", redact_url(self.url))
                failures = 0
                self._fire(-1)  # notifications may have been missed while not listening
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 5.0)
                    except TimeoutError:
                        # A half-open connection shows no termination: probe it.
                        await con.fetchval("SELECT 1", timeout=self.connect_timeout)
                log.warning("LISTEN connection to %s lost; reconnecting", redact_url(self.url))
                failures = 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "LISTEN on %s failed (%s); retrying in %.1f s",
                    redact_url(self.url),
                    exc,
                    delay,
                )
            finally:
                was_listening, self._listening = self._listening, False
                self._listen_con = None
                if con is not None and not con.is_closed():
                    con.terminate()
                if was_listening and not self._closing:
                    self._fire(-1)  # lost: let the caller check the database now
            if self._closing:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
