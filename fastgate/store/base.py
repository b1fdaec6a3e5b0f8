"""The durable store: one interface, two backends (SQLite, Postgres).

Everything durable lives here: channels, tokens, prices and groups created at
run time (admin API, CLI), usage records, per-token quota usage and a config
version. Nothing in this package runs on the data-plane event loop.

Threading model (why: the data plane must never await a database)
-----------------------------------------------------------------
A `Store` owns one background thread ("fastgate-store") running its own asyncio
event loop (the thread bridge, bridge.py). Every `async def` method of a Store
runs ON THAT LOOP. Callers elsewhere use `store.submit(coro)` (any thread, never
blocks), `await store.call(coro)` (from another event loop) or
`store.run(coro, timeout=None)` / `store.sync.<method>(...)` (threads and CLI).

Lifecycle: `store = store_for(cfg.database)`; `store.start()` starts the thread,
opens the connection(s) and (by default) applies pending migrations;
`store.stop()` closes and joins. `with store_for(...) as store:` does both.

Interface (all async, run on the store loop; ids are integers; `ref` is an id
(int) or a name (str; the model for prices))
--------------------------------------------------------------------------
- `open()`, `close()`: connections (called by start()/stop()).
- `migrate() -> int`: apply pending migrations, return how many were applied.
  `schema_version() -> int`. Safe to run concurrently from several processes.
- `load() -> StoreState`: one consistent read of every store entry as config
  dataclasses (secrets decrypted), the config version and quota used.
- `version() -> int`: the config version (one-row read): poll it, reload on change.
- CRUD, for kind in channel, token, price, group (tables channels, tokens,
  prices, groups):
    `list_<kind>s() -> list[dict]`, `get_<kind>(ref) -> dict`,
    `create_<kind>(spec: dict) -> dict`, `update_<kind>(ref, patch: dict) -> dict`,
    `delete_<kind>(ref) -> dict` (the deleted entry).
  `spec` uses the TOML keys of docs/contract.md section 2 (and is validated by the same
  rules, problems named "channel.base_url: ...", raised as InvalidEntry). A patch
  replaces the keys it names; a key set to None goes back to its default.
  Output dicts are JSON-ready: the TOML keys + "id", "created_at", "updated_at"
  (unix seconds), "source": "store". Never a secret: channels show
  "api_key_set": bool (and "<field>_set" for the bedrock credentials);
  tokens show "key_sha256" and "quota_used_micros", and `create_token` alone
  returns the plaintext "key", once (generated unless the spec gave "key" or
  "key_sha256"). Tokens also accept "quota_micros" (int) instead of "quota_usd",
  and "expires_at" as RFC 3339, a unix number, or ""/None. Prices are stored as
  integer micro-dollars per 1M tokens; output also has "<field>_micros".
  `upsert_prices(specs) -> {"created", "updated"}` creates or replaces many
  prices by model in one transaction (price set / price sync).
  Every write bumps the config version (Postgres: and sends
  `NOTIFY fastgate_config, '<version>'` in the same transaction) and then calls
  the local `listen` callbacks. Errors: NotFound, Conflict (name or key taken),
  InvalidEntry (.problems), SecretKeyMissing (a credential without
  FASTGATE_SECRET_KEY; `api_key_env` needs no key), SecretKeyInvalid.
- `write_usage(records, coerce=False) -> int`: insert records given as tuples in
  `fastgate.vocab.record.RECORD_FIELDS` order (what the data plane builds),
  dicts with those keys (spool files) or UsageRecord objects;
  idempotent by `uid` (existing uids are skipped); returns the number of rows
  inserted. `coerce=True` converts every value to its column type first (slower;
  used to retry a batch the database rejected). Postgres: binary COPY
  into a per-connection staging table, then INSERT ... ON CONFLICT DO NOTHING.
  `is_data_error(exc)` tells a bad record (retrying is useless) from an
  unavailable database (retry later).
- `add_quota_deltas({token_name: micros})`: atomic `used = used + delta` upserts.
  `sync_quota(deltas) -> dict[str, int]`: the same, then every total, in one
  transaction (see QuotaSync). `quota_used() -> dict[str, int]`.
  `reset_quota(token_name)`. Deleting a token deletes its quota row.
- `sync_budgets(deltas, keys) -> dict`: budget spend, keyed by (subject kind
  "key" | "group", name, period, period start): add `deltas` as atomic
  increments, then return the stored totals of `keys`, in one transaction (see
  budget.py BudgetSync). `budget_spent(keys) -> dict` reads them.
- `query_usage(group_by, since=None, until=None, tag=None, bucket=None, key_name=None)
  -> list[dict]`: group_by in "key" | "model" | "channel" | "tag" | "day" | None
  (None: one total); since/until are unix seconds (since <= ts < until); bucket
  "hour" | "day" | None adds "bucket" (unix start of the bucket, UTC) for time
  series. Each dict: {<group_by>: value ("day": "YYYY-MM-DD"), ["bucket": int,]
  "requests", "errors" (status >= 400), "prompt_tokens", "completion_tokens",
  "cached_tokens", "cache_write_tokens", "cost_micros"} (all ints). Order:
  by bucket, then value; without bucket by cost_micros descending. bucket may
  also be "minute".
- `query_stats(group_by=("tag",), since=, until=, tag=, tagged_only=True,
  limit=None) -> list[dict]`: run statistics per group (tag, model, channel,
  key, and at most one of minute/hour/day): counts, errors by code, tokens,
  cost, cache hits, first/last time and the p50/p95/p99 of latency_ms, ttfb_ms
  and gateway_ms, computed by the database (runs.py documents the rule).
- `listen(callback)`: `callback(version: int)` is called ON THE STORE THREAD after
  every write made through this store and, on Postgres, for every NOTIFY from
  any instance (version -1 means "(re)connected or disconnected: changes may
  have been missed, check"); a version may be reported more than once
  (Postgres: by the write itself and by its NOTIFY). It must be quick and thread-safe, e.g.
  `lambda v: data_loop.call_soon_threadsafe(wake.set)`. The Postgres listener
  reconnects by itself (0.5 s .. 5 s backoff); `listening` says whether it is up.
  Polling `version()` every `refresh_interval` is the CALLER's fallback, and is
  the only cross-process signal on SQLite.
- `ping()`: a round trip, for readiness checks.

Merge rule (file vs store)
--------------------------
File entries win on a name clash; see merge.py.

Modules
-------
This module is the interface (`Store`) and the factory (`store_for`), and
re-exports the names callers use. The parts: bridge.py (thread and loop),
errors.py, kinds.py (entity kinds: input <-> row <-> config), usage.py (the
usage schema: columns, coercion, uids), merge.py (StoreState and merge), sql.py
(the SQL both backends share), quota.py (QuotaSync); sqlite.py and postgres.py
are the backends, imported only by `store_for` (lazily: no cycle, and asyncpg
is loaded only for Postgres).

Wiring (server side)
--------------------
Per worker process, AFTER fork (threads do not survive a fork):
`store = store_for(cfg.database); store.start()`; `state = store.run(store.load())`;
serve `merge(cfg, state)`; seed the quota dict from `state.quota_used`; charge
through `QuotaSync(store, app.quota_used)`; usage records go to the worker's
writer process (writer_sink.py), which opens the database itself. A store that
cannot be reached at start is retried in the background (link.py) while the
file's entries serve and the writer spools. A refresh task on the data-plane loop
waits for a listen() wake-up or `refresh_interval`, compares `await
store.call(store.version())` with the last one, and on change loads, merges,
builds and swaps the snapshot; when that fails it keeps the last good snapshot
and reports the error (log and /ready). SIGTERM: drain, `await quota.close()`,
`sink.close()`, `store.stop()`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastgate.config import DatabaseConfig
from fastgate.store.bridge import ThreadBridge
from fastgate.store.errors import (
    Conflict,
    InvalidEntry,
    NotFound,
    SecretKeyInvalid,
    SecretKeyMissing,
    StoreError,
)
from fastgate.store.merge import StoreState, merge
from fastgate.store.quota import QuotaSync
from fastgate.store.secrets import SecretBox
from fastgate.store.usage import USAGE_COLUMNS, new_uid, usage_row

__all__ = [
    "NOTIFY_CHANNEL",
    "USAGE_COLUMNS",
    "Conflict",
    "InvalidEntry",
    "NotFound",
    "QuotaSync",
    "SecretKeyInvalid",
    "SecretKeyMissing",
    "Store",
    "StoreError",
    "StoreState",
    "merge",
    "new_uid",
    "store_for",
    "usage_row",
]

log = logging.getLogger("fastgate.store")

NOTIFY_CHANNEL = "fastgate_config"


class Store(ThreadBridge, abc.ABC):
    """A durable store driven from its own thread and event loop (see module docs)."""

    dialect = ""

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = environ
        self._box: SecretBox | None = None
        self._listeners: list[Callable[[int], None]] = []

    # -- lifecycle --------------------------------------------------------------------

    def start(self, *, migrate: bool = True, timeout: float = 30.0) -> None:
        """Start the store thread, open the database, apply migrations (unless told not to).

        Raises StoreError (or the backend's connection error) when the database
        cannot be opened; the thread is stopped again in that case.
        """
        self.start_thread()
        try:
            self.run(self.open(), timeout=timeout)
            if migrate:
                self.run(self.migrate(), timeout=timeout)
        except BaseException:
            self.stop_thread(timeout=5.0)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Close the database and stop the thread (bounded by `timeout`)."""
        if self._thread is None:
            return
        try:
            self.run(self.close(), timeout=timeout)
        except Exception as exc:
            log.warning("store close failed: %s", exc)
        finally:
            self.stop_thread(timeout)

    def __enter__(self) -> Store:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- notifications --------------------------------------------------------------

    async def listen(self, callback: Callable[[int], None]) -> None:
        """Register `callback(version)`; see the module docs for when it is called."""
        self._listeners.append(callback)

    @property
    def listening(self) -> bool:
        """True while changes made by OTHER processes are pushed to this one."""
        return False

    def _fire(self, version: int) -> None:
        for cb in list(self._listeners):
            try:
                cb(version)
            except Exception:
                log.exception("store listener failed")

    # -- the interface ----------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int: ...

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    @abc.abstractmethod
    async def load(self) -> StoreState: ...

    @abc.abstractmethod
    async def version(self) -> int: ...

    @abc.abstractmethod
    async def write_usage(self, records: Sequence[Any], coerce: bool = False) -> int: ...

    @abc.abstractmethod
    def is_data_error(self, exc: BaseException) -> bool: ...

    @abc.abstractmethod
    async def add_quota_deltas(self, deltas: Mapping[str, int]) -> None: ...

    @abc.abstractmethod
    async def sync_quota(self, deltas: Mapping[str, int]) -> dict[str, int]: ...

    @abc.abstractmethod
    async def quota_used(self) -> dict[str, int]: ...

    @abc.abstractmethod
    async def query_usage(
        self,
        group_by: str | None = "key",
        since: float | None = None,
        until: float | None = None,
        tag: str | None = None,
        bucket: str | None = None,
        key_name: str | None = None,
    ) -> list[dict[str, Any]]: ...


def store_for(
    database: DatabaseConfig | str, *, environ: Mapping[str, str] | None = None, **kw: Any
) -> Store:
    """The store for a [database] config (or URL); not started yet (call start())."""
    url = database.url if isinstance(database, DatabaseConfig) else database
    if url.startswith(("postgresql://", "postgres://")):
        from fastgate.store.postgres import PostgresStore

        return PostgresStore(url, environ=environ, **kw)
    if isinstance(database, DatabaseConfig):
        path = database.sqlite_path or "fastgate.db"
    elif url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif not url:
        path = "fastgate.db"
    else:
        raise StoreError("database url must start with sqlite:/// or postgresql://")
    from fastgate.store.sqlite import SQLiteStore

    return SQLiteStore(path, environ=environ, **kw)
