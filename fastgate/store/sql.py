"""The SQL both backends share: CRUD over the entity kinds, load, quotas and
usage queries.

Why shared: SQLite and Postgres differ only in transactions, unique-violation
types, a time-bucket expression, usage writes and notification; everything else
is one SQL text with $1-style placeholders (rewritten for SQLite).
"""

from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson

from fastgate.config import generate_key
from fastgate.store.base import Store
from fastgate.store.batches import BatchQueries
from fastgate.store.errors import Conflict, InvalidEntry, NotFound, SecretKeyMissing
from fastgate.store.kinds import (
    CHANNEL_SECRETS,
    CHANNELS,
    GROUPS,
    PRICES,
    TOKENS,
    Kind,
    apply_patch,
    channel_config,
    clean_input,
)
from fastgate.store.merge import StoreState
from fastgate.store.runs import RunQueries
from fastgate.store.secrets import SecretBox, SecretDecryptError, load_secret_box
from fastgate.store.spend import SpendQueries
from fastgate.store.unpriced import UnpricedQueries

__all__ = ["BUCKETS", "GROUP_BY", "SQLStore", "Tx"]

log = logging.getLogger("fastgate.store")

GROUP_BY = ("key", "model", "channel", "tag", "day")
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}


def _budget_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """Removing a budget (budget_usd -1 or None) also removes its period, unless
    the patch names one (which the validator then refuses: a period needs a budget)."""
    if "budget_usd" in patch and patch["budget_usd"] in (None, -1) and "budget_period" not in patch:
        patch = {**patch, "budget_usd": None, "budget_period": None}
    return patch


class Tx(abc.ABC):
    """One transaction; SQL uses $1, $2... placeholders (rewritten for SQLite)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...

    @abc.abstractmethod
    async def fetchrow(self, sql: str, *args: Any) -> Any | None: ...

    @abc.abstractmethod
    async def fetchval(self, sql: str, *args: Any) -> Any: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class SQLStore(BatchQueries, UnpricedQueries, RunQueries, SpendQueries, Store):
    """The SQL both backends share: CRUD, load, quotas, usage queries (run
    statistics: runs.py).

    A backend provides transactions (`_tx`), the unique-violation exception
    types, the time-bucket expression, usage writes and its notify hook.
    """

    _unique_errors: tuple[type[BaseException], ...] = ()

    # -- backend hooks ----------------------------------------------------------------

    @abc.abstractmethod
    def _tx(self, write: bool = True) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    @abc.abstractmethod
    def _floor_expr(self, seconds: int) -> str:
        """SQL for floor(ts / seconds) as an integer."""

    async def _notify(self, tx: Tx, version: int) -> None:
        """Tell other processes (Postgres NOTIFY); runs inside the write transaction."""

    async def open(self) -> None:
        self._box = load_secret_box(self._environ)

    # -- version ----------------------------------------------------------------------

    async def version(self) -> int:
        async with self._tx(write=False) as tx:
            return int(await tx.fetchval("SELECT version FROM config_version WHERE id = 1"))

    async def _bump(self, tx: Tx) -> int:
        v = int(
            await tx.fetchval(
                "UPDATE config_version SET version = version + 1, updated_at = $1 "
                "WHERE id = 1 RETURNING version",
                time.time(),
            )
        )
        await self._notify(tx, v)
        return v

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[tuple[Tx, list[int]]]:
        """A config write: transaction + version bump; listeners hear about it after commit."""
        done: list[int] = []
        async with self._tx(write=True) as tx:
            yield tx, done
            done.append(await self._bump(tx))
        self._fire(done[0])

    # -- generic CRUD -------------------------------------------------------------------

    def _where(self, kind: Kind, ref: int | str) -> tuple[str, Any]:
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise NotFound(f"{kind.kind} {ref!r} not found")
        if isinstance(ref, int):
            return "id = $1", ref
        return f"{kind.key} = $1", ref

    async def _row(self, tx: Tx, kind: Kind, ref: int | str) -> Any:
        cond, arg = self._where(kind, ref)
        row = await tx.fetchrow(f"SELECT * FROM {kind.table} WHERE {cond}", arg)
        if row is None:
            raise NotFound(f'{kind.kind} "{ref}" not found')
        return row

    def _conflict(self, kind: Kind, name: str, exc: BaseException) -> Conflict:
        if kind is TOKENS and "sha256" in str(exc) + str(getattr(exc, "constraint_name", "")):
            return Conflict("another token already uses this key")
        return Conflict(f'a {kind.kind} named "{name}" already exists')

    async def _insert(self, tx: Tx, kind: Kind, values: dict[str, Any]) -> Any:
        now = time.time()
        cols = [*values, "created_at", "updated_at"]
        args = [*values.values(), now, now]
        marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        sql = f"INSERT INTO {kind.table} ({', '.join(cols)}) VALUES ({marks}) RETURNING *"
        try:
            return await tx.fetchrow(sql, *args)
        except self._unique_errors as exc:
            raise self._conflict(kind, values.get(kind.key, ""), exc) from None

    async def _update(self, tx: Tx, kind: Kind, row_id: int, values: dict[str, Any]) -> Any:
        values = {**values, "updated_at": time.time()}
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=1))
        sql = f"UPDATE {kind.table} SET {sets} WHERE id = ${len(values) + 1} RETURNING *"
        try:
            return await tx.fetchrow(sql, *values.values(), row_id)
        except self._unique_errors as exc:
            raise self._conflict(kind, values.get(kind.key, ""), exc) from None

    async def _list(self, kind: Kind) -> list[dict[str, Any]]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM {kind.table} ORDER BY id")
        return [kind.public(r) for r in rows]

    async def _get(self, kind: Kind, ref: int | str) -> dict[str, Any]:
        async with self._tx(write=False) as tx:
            return kind.public(await self._row(tx, kind, ref))

    async def _create(self, kind: Kind, spec: Mapping[str, Any]) -> dict[str, Any]:
        obj, kw = kind.validate(clean_input(kind.kind, spec))
        async with self._write() as (tx, _):
            row = await self._insert(tx, kind, kind.values(obj, kw))
        return kind.public(row)

    async def _patch(self, kind: Kind, ref: int | str, patch: Mapping[str, Any]) -> dict:
        patch = clean_input(kind.kind, patch)
        async with self._write() as (tx, _):
            row = await self._row(tx, kind, ref)
            obj, kw = kind.validate(apply_patch(kind.doc(row), patch))
            row = await self._update(tx, kind, int(row["id"]), kind.values(obj, kw))
        return kind.public(row)

    async def _delete(self, kind: Kind, ref: int | str) -> dict[str, Any]:
        async with self._write() as (tx, _):
            row = await self._row(tx, kind, ref)
            await tx.execute(f"DELETE FROM {kind.table} WHERE id = $1", int(row["id"]))
            if kind is TOKENS:
                await tx.execute("DELETE FROM quota_usage WHERE token_name = $1", row["name"])
        return kind.public(row)

    # -- channels (credentials sealed) ------------------------------------------------

    def _need_box(self, what: str) -> SecretBox:
        if self._box is None:
            raise SecretKeyMissing(what)
        return self._box

    def _seal(self, row_id: int, secrets: Mapping[str, str]) -> tuple[bytes | None, str]:
        secrets = {k: v for k, v in secrets.items() if v}
        if not secrets:
            return None, ""
        box = self._need_box(" and ".join(sorted(secrets)))
        sealed = box.seal(orjson.dumps(secrets), b"channel:%d" % row_id)
        return sealed, ",".join(k for k in CHANNEL_SECRETS if k in secrets)

    def _unseal(self, row: Mapping[str, Any]) -> dict[str, str]:
        blob = row["secret"]
        if blob is None:
            return {}
        box = self._box
        if box is None:
            raise SecretDecryptError("FASTGATE_SECRET_KEY is not set")
        data = orjson.loads(box.open(bytes(blob), b"channel:%d" % int(row["id"])))
        return {k: v for k, v in data.items() if k in CHANNEL_SECRETS and isinstance(v, str)}

    async def list_channels(self) -> list[dict[str, Any]]:
        return await self._list(CHANNELS)

    async def get_channel(self, ref: int | str) -> dict[str, Any]:
        return await self._get(CHANNELS, ref)

    async def create_channel(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        obj, kw = CHANNELS.validate(clean_input("channel", spec))
        secrets = {k: kw[k] for k in CHANNEL_SECRETS if kw.get(k)}
        if secrets:
            self._need_box(" and ".join(sorted(secrets)))  # refuse before writing anything
        async with self._write() as (tx, _):
            row = await self._insert(tx, CHANNELS, CHANNELS.values(obj, kw))
            if secrets:
                sealed, fields = self._seal(int(row["id"]), secrets)
                row = await tx.fetchrow(
                    "UPDATE channels SET secret = $1, secret_fields = $2 WHERE id = $3 RETURNING *",
                    sealed,
                    fields,
                    int(row["id"]),
                )
        return CHANNELS.public(row)

    async def update_channel(self, ref: int | str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patch = clean_input("channel", patch)
        touched = {k: patch[k] for k in CHANNEL_SECRETS if k in patch}
        if any(touched.values()):
            self._need_box(" and ".join(sorted(k for k, v in touched.items() if v)))
        async with self._write() as (tx, _):
            row = await self._row(tx, CHANNELS, ref)
            doc = apply_patch(CHANNELS.doc(row), patch)
            obj, kw = CHANNELS.validate(doc)
            values = CHANNELS.values(obj, kw)
            if touched:
                kept = [
                    f for f in (row["secret_fields"] or "").split(",") if f and f not in touched
                ]
                if kept and self._box is None:
                    raise SecretKeyMissing("the channel's remaining credentials")
                secrets = self._unseal(row) if kept else {}
                secrets = {k: v for k, v in secrets.items() if k in kept}
                secrets.update({k: str(v) for k, v in touched.items() if v})
                values["secret"], values["secret_fields"] = self._seal(int(row["id"]), secrets)
            row = await self._update(tx, CHANNELS, int(row["id"]), values)
        return CHANNELS.public(row)

    async def delete_channel(self, ref: int | str) -> dict[str, Any]:
        return await self._delete(CHANNELS, ref)

    # -- tokens ---------------------------------------------------------------------------

    async def list_tokens(self) -> list[dict[str, Any]]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(
                "SELECT t.*, q.used_micros FROM tokens t "
                "LEFT JOIN quota_usage q ON q.token_name = t.name ORDER BY t.id"
            )
        return [TOKENS.public(r) for r in rows]

    async def get_token(self, ref: int | str) -> dict[str, Any]:
        cond, arg = self._where(TOKENS, ref)
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow(
                "SELECT t.*, q.used_micros FROM tokens t "
                f"LEFT JOIN quota_usage q ON q.token_name = t.name WHERE t.{cond}",
                arg,
            )
        if row is None:
            raise NotFound(f'token "{ref}" not found')
        return TOKENS.public(row)

    async def create_token(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create a token; the result's "key" is the plaintext key, shown this once."""
        doc = clean_input("token", spec)
        key = doc.get("key") or ""
        if not key and not doc.get("key_sha256"):
            key = generate_key()
            doc["key"] = key
        out = await self._create(TOKENS, doc)
        if key:
            out["key"] = key
        return out

    async def update_token(self, ref: int | str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patch = dict(clean_input("token", patch))
        if patch.get("key"):
            patch["key_sha256"] = None  # a new key replaces the stored hash
        if "quota_usd" in patch or "quota_micros" in patch:
            # Either form replaces the stored quota; None means unlimited again.
            patch.setdefault("quota_usd", None)
            patch.setdefault("quota_micros", None)
            if patch["quota_usd"] is None and patch["quota_micros"] is None:
                patch["quota_micros"] = -1
        return await self._patch(TOKENS, ref, _budget_patch(patch))

    async def delete_token(self, ref: int | str) -> dict[str, Any]:
        return await self._delete(TOKENS, ref)

    # -- prices, groups -----------------------------------------------------------------

    async def list_prices(self) -> list[dict[str, Any]]:
        return await self._list(PRICES)

    async def get_price(self, ref: int | str) -> dict[str, Any]:
        return await self._get(PRICES, ref)

    async def create_price(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await self._create(PRICES, spec)

    async def update_price(self, ref: int | str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._patch(PRICES, ref, patch)

    async def delete_price(self, ref: int | str) -> dict[str, Any]:
        return await self._delete(PRICES, ref)

    async def upsert_prices(self, specs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Create or replace prices by model, all in one transaction and one version
        bump (`fastgate price set` / `price sync`). Every spec is validated first;
        any problem rejects the whole set. Returns {"created": n, "updated": m}."""
        checked = []
        problems: list[str] = []
        for i, spec in enumerate(specs):
            try:
                checked.append(PRICES.validate(clean_input("price", spec)))
            except InvalidEntry as exc:
                problems += [f"[{i}] {p}" for p in exc.problems]
        if problems:
            raise InvalidEntry(problems)
        counts = {"created": 0, "updated": 0}
        if not checked:
            return counts
        async with self._write() as (tx, _):
            for obj, kw in checked:
                values = PRICES.values(obj, kw)
                row = await tx.fetchrow("SELECT id FROM prices WHERE model = $1", obj.model)
                if row is None:
                    await self._insert(tx, PRICES, values)
                    counts["created"] += 1
                else:
                    await self._update(tx, PRICES, int(row["id"]), values)
                    counts["updated"] += 1
        return counts

    async def list_groups(self) -> list[dict[str, Any]]:
        return await self._list(GROUPS)

    async def get_group(self, ref: int | str) -> dict[str, Any]:
        return await self._get(GROUPS, ref)

    async def create_group(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await self._create(GROUPS, spec)

    async def update_group(self, ref: int | str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._patch(GROUPS, ref, _budget_patch(clean_input("group", patch)))

    async def delete_group(self, ref: int | str) -> dict[str, Any]:
        return await self._delete(GROUPS, ref)

    # -- load -----------------------------------------------------------------------------

    async def load(self) -> StoreState:
        async with self._tx(write=False) as tx:
            version = int(await tx.fetchval("SELECT version FROM config_version WHERE id = 1"))
            ch_rows = await tx.fetch("SELECT * FROM channels ORDER BY id")
            tok_rows = await tx.fetch("SELECT * FROM tokens ORDER BY id")
            price_rows = await tx.fetch("SELECT * FROM prices ORDER BY id")
            group_rows = await tx.fetch("SELECT * FROM groups ORDER BY id")
            quota_rows = await tx.fetch("SELECT token_name, used_micros FROM quota_usage")
        state = StoreState(version=version)
        for row in ch_rows:
            stored = CHANNELS.doc(row)
            try:
                secrets = self._unseal(row)
            except (SecretDecryptError, ValueError) as exc:
                state.problems.append(
                    f'store channel "{row["name"]}" (id {row["id"]}) is disabled: its '
                    f"credentials cannot be decrypted: {exc}"
                )
                stored["enabled"] = False
                secrets = {}
            try:
                state.channels.append(channel_config(stored, secrets))
            except (TypeError, ValueError) as exc:
                state.problems.append(f'store channel "{row["name"]}" skipped: {exc}')
        for row in tok_rows:
            try:
                state.tokens.append(TOKENS.config(row))
            except (TypeError, ValueError) as exc:
                state.problems.append(f'store token "{row["name"]}" skipped: {exc}')
        for row in price_rows:
            try:
                state.prices.append(PRICES.config(row))
            except (TypeError, ValueError) as exc:
                state.problems.append(f'store price "{row["model"]}" skipped: {exc}')
        for row in group_rows:
            try:
                state.groups.append(GROUPS.config(row))
            except (TypeError, ValueError) as exc:
                state.problems.append(f'store group "{row["name"]}" skipped: {exc}')
        state.quota_used = {r["token_name"]: int(r["used_micros"]) for r in quota_rows}
        for p in state.problems:
            log.error("%s", p)
        return state

    # -- usage queries --------------------------------------------------------------------

    async def query_usage(
        self,
        group_by: str | None = "key",
        since: float | None = None,
        until: float | None = None,
        tag: str | None = None,
        bucket: str | None = None,
        key_name: str | None = None,
    ) -> list[dict[str, Any]]:
        if group_by is not None and group_by not in GROUP_BY:
            raise InvalidEntry([f"usage.group_by: must be one of {', '.join(GROUP_BY)}"])
        if bucket is not None and bucket not in BUCKETS:
            raise InvalidEntry(["usage.bucket: must be minute, hour or day"])
        cols = {"key": "key_name", "model": "model", "channel": "channel", "tag": "tag"}
        select: list[str] = []
        groups: list[str] = []
        if group_by == "day":
            select.append(f"{self._floor_expr(86400)} AS g")
            groups.append("g")
        elif group_by is not None:
            select.append(f"{cols[group_by]} AS g")
            groups.append("g")
        if bucket is not None:
            select.append(f"{self._floor_expr(BUCKETS[bucket])} AS b")
            groups.append("b")
        where: list[str] = []
        args: list[Any] = []
        for cond, val in (
            ("ts >= ", since),
            ("ts < ", until),
            ("tag = ", tag),
            ("key_name = ", key_name),
        ):
            if val is not None:
                args.append(float(val) if cond.startswith("ts") else val)
                where.append(f"{cond}${len(args)}")
        sums = ", ".join(
            f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"
            for c in (
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cache_write_tokens",
                "cost_micros",
            )
        )
        sql = (
            f"SELECT {''.join(s + ', ' for s in select)}COUNT(*) AS requests, "
            f"CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) "
            f"AS errors, {sums} FROM usage_records"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        if groups:
            sql += " GROUP BY " + ", ".join(groups)
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(sql, *args)
        out: list[dict[str, Any]] = []
        for r in rows:
            d: dict[str, Any] = {}
            if group_by == "day":
                d["day"] = _dt.datetime.fromtimestamp(int(r["g"]) * 86400, _dt.UTC).strftime(
                    "%Y-%m-%d"
                )
            elif group_by is not None:
                d[group_by] = r["g"]
            if bucket is not None:
                d["bucket"] = int(r["b"]) * BUCKETS[bucket]
            for c in (
                "requests",
                "errors",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cache_write_tokens",
                "cost_micros",
            ):
                d[c] = int(r[c])
            if not groups and d["requests"] == 0:
                continue  # no rows at all: no total line
            out.append(d)
        if bucket is not None:
            out.sort(key=lambda d: (d["bucket"], str(d.get(group_by or "", ""))))
        else:
            out.sort(key=lambda d: (-d["cost_micros"], str(d.get(group_by or "", ""))))
        return out
