"""The durable store: one interface, two backends (SQLite, Postgres).

Everything durable lives here: channels, tokens, prices and groups created at
run time (admin API, CLI), usage records, per-token quota usage and a config
version. Nothing in this package runs on the data-plane event loop.

Threading model (why: the data plane must never await a database)
-----------------------------------------------------------------
A `Store` owns one background thread ("fastgate-store") running its own asyncio
event loop. Every `async def` method of a Store runs ON THAT LOOP. Callers elsewhere
use one of three bridges:

- `store.submit(coro) -> concurrent.futures.Future`: from any thread, never blocks.
- `await store.call(coro)`: from another event loop (data plane, admin API); the
  awaiting loop is free while the store works.
- `store.run(coro, timeout=None)`: blocking, for threads and the CLI (never from
  the store thread itself). `store.sync.<method>(...)` is the same as
  `store.run(store.<method>(...))`.

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
  `spec` uses the TOML keys of SPEC section 2 (and is validated by the same
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
- `write_usage(records, coerce=False) -> int`: insert UsageRecord objects or
  dicts with the same keys (what the gateway appends and spool files hold);
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
- `query_usage(group_by, since=None, until=None, tag=None, bucket=None, key_name=None)
  -> list[dict]`: group_by in "key" | "model" | "channel" | "tag" | "day" | None
  (None: one total); since/until are unix seconds (since <= ts < until); bucket
  "hour" | "day" | None adds "bucket" (unix start of the bucket, UTC) for time
  series. Each dict: {<group_by>: value ("day": "YYYY-MM-DD"), ["bucket": int,]
  "requests", "errors" (status >= 400), "prompt_tokens", "completion_tokens",
  "cached_tokens", "cache_write_tokens", "cost_micros"} (all ints). Order:
  by bucket, then value; without bucket by cost_micros descending.
- `listen(callback)`: `callback(version: int)` is called ON THE STORE THREAD after
  every write made through this store and, on Postgres, for every NOTIFY from
  any instance (version -1 means "(re)connected: changes may have been missed,
  check"); a version may be reported more than once (Postgres: by the write
  itself and by its NOTIFY). It must be quick and thread-safe, e.g.
  `lambda v: data_loop.call_soon_threadsafe(wake.set)`. The Postgres listener
  reconnects by itself (0.5 s .. 5 s backoff); `listening` says whether it is up.
  Polling `version()` every `refresh_interval` is the CALLER's fallback, and is
  the only cross-process signal on SQLite.
- `ping()`: a round trip, for readiness checks.

Merge rule (file vs store)
--------------------------
The TOML file's entries are read-only; store entries are managed (CRUD). The
running config is the file's entries plus the store's; on a name clash
(channel name, token name or key, price model, group name) the FILE entry wins
and the store entry is ignored with a warning. See `merge()`. The admin API and
CLI should refuse to create a store entry whose name the file already uses.

Wiring (server side)
--------------------
Per worker process, AFTER fork (threads do not survive a fork):
`store = store_for(cfg.database); store.start()`; `state = store.run(store.load())`;
serve `merge(cfg, state)`; seed the quota dict from `state.quota_used`; charge
through `QuotaSync(store, app.quota_used)`; hand the store to
`LogSink(..., store=store, spool_dir=...)`. A refresh task on the data-plane loop
waits for a listen() wake-up or `refresh_interval`, compares `await
store.call(store.version())` with the last one, and on change loads, merges,
builds and swaps the snapshot; when that fails it keeps the last good snapshot
and reports the error (log and /ready). SIGTERM: drain, `await quota.close()`,
`sink.close()`, `store.stop()`.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any, TypeVar

import orjson

from fastgate.config import (
    ChannelConfig,
    Config,
    DatabaseConfig,
    GroupConfig,
    PriceConfig,
    PriceTier,
    TokenConfig,
    _parse_channel,
    _parse_group,
    _parse_price,
    _parse_token,
    _Problems,
    _Table,
    generate_key,
)
from fastgate.store.secrets import (
    SecretBox,
    SecretDecryptError,
    SecretKeyInvalid,
    SecretKeyMissing,
    load_secret_box,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "USAGE_COLUMNS",
    "Conflict",
    "InvalidEntry",
    "NotFound",
    "QuotaSync",
    "SQLStore",
    "SecretKeyInvalid",
    "SecretKeyMissing",
    "Store",
    "StoreError",
    "StoreState",
    "merge",
    "store_for",
    "usage_row",
]

log = logging.getLogger("fastgate.store")
T = TypeVar("T")

NOTIFY_CHANNEL = "fastgate_config"
GROUP_BY = ("key", "model", "channel", "tag", "day")
BUCKETS = {"hour": 3600, "day": 86400}


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """A store operation failed in a way the caller should report (not a bug)."""


class NotFound(StoreError):
    """No entry with that id or name (admin API: 404)."""


class Conflict(StoreError):
    """The name (or token key) is already taken (admin API: 409)."""


class InvalidEntry(StoreError):
    """The entry breaks a config rule; `problems` lists "kind.key: message" (admin API: 400)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# --------------------------------------------------------------------------- state and merge


@dataclass(slots=True)
class StoreState:
    """What `Store.load()` returns: store entries as config dataclasses.

    `problems` names entries that could not be used as stored (for example a
    channel whose credentials cannot be decrypted: it is loaded disabled).
    """

    version: int
    channels: list[ChannelConfig] = field(default_factory=list)
    tokens: list[TokenConfig] = field(default_factory=list)
    prices: list[PriceConfig] = field(default_factory=list)
    groups: list[GroupConfig] = field(default_factory=list)
    quota_used: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def merge(config: Config, state: StoreState, *, warnings: list[str] | None = None) -> Config:
    """The running config: the file's entries plus the store's (file wins on a clash).

    Clashes: same channel name, same token name or same key hash, same price
    model, same group name. Each ignored store entry produces one message; with
    `warnings` given the messages are appended there (callers that refresh often
    can de-duplicate), otherwise they are logged.
    """
    msgs: list[str] = []

    def pick(file_entries: Sequence[Any], store_entries: Sequence[Any], attr: str, what: str):
        taken = {getattr(e, attr) for e in file_entries}
        out = list(file_entries)
        for e in store_entries:
            name = getattr(e, attr)
            if name in taken:
                msgs.append(
                    f'store {what} "{name}" ignored: the config file defines one with '
                    "the same name (file entries win and are read-only)"
                )
                continue
            taken.add(name)
            out.append(e)
        return tuple(out)

    channels = pick(config.channels, state.channels, "name", "channel")
    tokens_by_name = pick(config.tokens, state.tokens, "name", "token")
    shas: set[str] = set()
    tokens = []
    for t in tokens_by_name:
        if t.sha256 in shas:
            msgs.append(f'store token "{t.name}" ignored: its key is already used by another token')
            continue
        shas.add(t.sha256)
        tokens.append(t)
    prices = pick(config.prices, state.prices, "model", "price")
    groups = pick(config.groups, state.groups, "name", "group")
    if warnings is not None:
        warnings.extend(msgs)
    else:
        for m in msgs:
            log.warning("%s", m)
    return dataclasses.replace(
        config, channels=channels, tokens=tuple(tokens), prices=prices, groups=groups
    )


# --------------------------------------------------------------------------- usage rows

# Table column order; `group_name` holds UsageRecord.group.
USAGE_COLUMNS: tuple[str, ...] = (
    "uid",
    "ts",
    "request_id",
    "key_name",
    "group_name",
    "ingress",
    "channel",
    "provider",
    "model",
    "upstream_model",
    "stream",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "estimated",
    "cost_micros",
    "latency_ms",
    "ttfb_ms",
    "attempts",
    "client_ip",
    "tag",
    "cache_hit",
)
_RECORD_ATTRS = tuple("group" if c == "group_name" else c for c in USAGE_COLUMNS)
_get_row = attrgetter(*_RECORD_ATTRS)
_get_dict_row = itemgetter(*_RECORD_ATTRS)
_INT64 = (1 << 63) - 1
_KINDS_OF_COLUMN: dict[str, type] = {
    "ts": float,
    "stream": bool,
    "status": int,
    "prompt_tokens": int,
    "completion_tokens": int,
    "cached_tokens": int,
    "cache_write_tokens": int,
    "estimated": bool,
    "cost_micros": int,
    "latency_ms": float,
    "ttfb_ms": float,
    "attempts": int,
    "cache_hit": bool,
}
_COLUMN_TYPES = tuple(_KINDS_OF_COLUMN.get(c, str) for c in USAGE_COLUMNS)
_ATTR_TYPES = tuple(zip(_RECORD_ATTRS, _COLUMN_TYPES, strict=True))


def new_uid() -> str:
    """A fresh record uid (for records that arrive without one)."""
    return os.urandom(12).hex()


def _coerce(kind: type, value: Any) -> Any:
    if kind is str:
        return value if type(value) is str else ("" if value is None else str(value))
    if kind is bool:
        return bool(value)
    if kind is int:
        try:
            v = int(value)
        except (TypeError, ValueError, OverflowError):
            return 0
        return v if -_INT64 <= v <= _INT64 else (_INT64 if v > 0 else -_INT64)
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def usage_row(record: Any, coerce: bool = False) -> tuple[Any, ...]:
    """A usage record as a row tuple in USAGE_COLUMNS order.

    `record` is a UsageRecord or a dict with its field names (what the gateway
    appends, and what a spool file holds). Values are taken as they are (the
    gateway builds them with the right types) unless `coerce` is set or a field
    is missing: then each value is converted to its column's type (missing or
    unusable -> "", 0, False). A missing uid gets a fresh one, which makes that
    record non-idempotent: the log sink assigns uids before anything is written.
    """
    row: tuple[Any, ...] | None = None
    if not coerce:
        try:
            row = _get_dict_row(record) if type(record) is dict else _get_row(record)
        except (KeyError, AttributeError, TypeError):
            row = None
    if row is None:
        if isinstance(record, Mapping):
            get = record.get
        else:

            def get(name: str) -> Any:
                return getattr(record, name, None)

        values = []
        for attr, kind in _ATTR_TYPES:
            v = get(attr)
            ok = type(v) is kind and (kind is not int or -_INT64 <= v <= _INT64)
            values.append(v if ok else _coerce(kind, v))
        row = tuple(values)
    if not row[0]:
        row = (new_uid(), *row[1:])
    return row


# --------------------------------------------------------------------------- entry kinds

_READONLY_KEYS = frozenset(
    {"id", "created_at", "updated_at", "source", "quota_used_micros", "key_sha256_prefix"}
)
CHANNEL_SECRETS = ("api_key", "access_key_id", "secret_access_key", "session_token")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _loads(v: Any) -> dict[str, Any]:
    if v is None or v == "":
        return {}
    if isinstance(v, dict):
        return v
    out = orjson.loads(v)
    return out if isinstance(out, dict) else {}


def _apply_patch(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _clean_input(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise InvalidEntry([f"{kind}: expected an object"])
    return {k: v for k, v in doc.items() if k not in _READONLY_KEYS and not str(k).endswith("_set")}


def _validate(kind: str, parse: Callable[[_Table], Any], doc: dict[str, Any]) -> tuple[Any, dict]:
    probs = _Problems()
    t = _Table(probs, kind, doc)
    result = parse(t)
    if isinstance(result, tuple):
        result = result[0]
    if probs.items or result is None:
        raise InvalidEntry(probs.items or [f"{kind}: invalid"])
    return result, dict(t.kw)


def _rfc3339(ts: float | None) -> str:
    if ts is None:
        return ""
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    text = moment.isoformat()
    return text.replace("+00:00", "Z")


def _micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * 1_000_000)


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


def _channel_config(stored: Mapping[str, Any], secrets: Mapping[str, str]) -> ChannelConfig:
    kw: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(ChannelConfig)}
    for k, v in stored.items():
        if k not in names or k in CHANNEL_SECRETS:
            continue
        if k in ("models", "groups"):
            v = tuple(v)
        elif k in ("model_map", "headers", "deployments"):
            v = MappingProxyType(dict(v))
        kw[k] = v
    for k, v in secrets.items():
        if k in CHANNEL_SECRETS:
            kw[k] = v
    return ChannelConfig(**kw)


def _token_toml(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Token input (admin/store shape) -> the TOML shape the config validator reads."""
    d = dict(doc)
    probs: list[str] = []
    if "quota_micros" in d:
        q = d.pop("quota_micros")
        if "quota_usd" in d:
            probs.append("token.quota_micros: set either quota_usd or quota_micros, not both")
        elif isinstance(q, bool) or not isinstance(q, int):
            probs.append("token.quota_micros: expected integer micro-dollars")
        elif q < -1:
            probs.append("token.quota_micros: must be -1 (unlimited) or >= 0")
        else:
            d["quota_usd"] = -1 if q < 0 else q / 1_000_000
    exp = d.get("expires_at")
    if exp is not None and not isinstance(exp, str | bool):
        if isinstance(exp, int | float) and math.isfinite(exp) and exp > 0:
            d["expires_at"] = _rfc3339(float(exp))
        else:
            probs.append("token.expires_at: expected RFC 3339 text or a unix time")
    if probs:
        raise InvalidEntry(probs)
    return d


class _Kind:
    """How one kind of entry maps between input dicts, table rows and dataclasses."""

    kind = ""
    table = ""
    key = "name"  # the unique name column
    columns: tuple[str, ...] = ()

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def values(self, obj: Any, kw: dict[str, Any]) -> dict[str, Any]:
        """Column -> value for a validated entry (spec as JSON text)."""
        raise NotImplementedError

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The stored entry in input shape (what a patch is applied to)."""
        raise NotImplementedError

    def public(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = self.doc(row)
        out["id"] = int(row["id"])
        out["created_at"] = float(row["created_at"])
        out["updated_at"] = float(row["updated_at"])
        out["source"] = "store"
        return out


class _ChannelKind(_Kind):
    kind = "channel"
    table = "channels"
    columns = ("name", "type", "enabled", "priority", "weight", "spec")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("channel", _parse_channel, doc)

    def values(self, obj: ChannelConfig, kw: dict[str, Any]) -> dict[str, Any]:
        spec = {
            k: _jsonable(v)
            for k, v in kw.items()
            if k not in self.columns and k not in CHANNEL_SECRETS
        }
        return {
            "name": obj.name,
            "type": obj.type,
            "enabled": obj.enabled,
            "priority": obj.priority,
            "weight": obj.weight,
            "spec": orjson.dumps(spec).decode(),
        }

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": row["name"],
            "type": row["type"],
            "enabled": bool(row["enabled"]),
            "priority": int(row["priority"]),
            "weight": int(row["weight"]),
        }
        out.update(_loads(row["spec"]))
        return out

    def public(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = super().public(row)
        fields = [f for f in (row["secret_fields"] or "").split(",") if f]
        out["api_key_set"] = "api_key" in fields
        for f in fields:
            if f != "api_key":
                out[f + "_set"] = True
        return out


class _TokenKind(_Kind):
    kind = "token"
    table = "tokens"
    columns = ("name", "key_sha256", "group_name", "quota_micros", "expires_at", "enabled", "spec")
    _spec_keys = ("models", "rpm", "tpm", "max_concurrency", "cache")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("token", lambda t: _parse_token(t)[0], _token_toml(doc))

    def values(self, obj: TokenConfig, kw: dict[str, Any]) -> dict[str, Any]:
        spec = {k: _jsonable(kw[k]) for k in self._spec_keys if k in kw}
        return {
            "name": obj.name,
            "key_sha256": obj.sha256,
            "group_name": obj.group,
            "quota_micros": obj.quota_micros,
            "expires_at": obj.expires_at,
            "enabled": obj.enabled,
            "spec": orjson.dumps(spec).decode(),
        }

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": row["name"],
            "key_sha256": row["key_sha256"],
            "group": row["group_name"],
            "quota_micros": int(row["quota_micros"]),
            "enabled": bool(row["enabled"]),
        }
        if row["expires_at"] is not None:
            out["expires_at"] = float(row["expires_at"])
        out.update(_loads(row["spec"]))
        return out

    def public(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = super().public(row)
        q = out["quota_micros"]
        out["quota_usd"] = -1.0 if q < 0 else q / 1_000_000
        exp = row["expires_at"]
        out["expires_at"] = _rfc3339(None if exp is None else float(exp))
        keys = row.keys() if hasattr(row, "keys") else ()
        out["quota_used_micros"] = int(row["used_micros"] or 0) if "used_micros" in keys else 0
        return out

    def config(self, row: Mapping[str, Any]) -> TokenConfig:
        spec = _loads(row["spec"])
        q = int(row["quota_micros"])
        tc = TokenConfig(
            name=row["name"],
            sha256=row["key_sha256"],
            group=row["group_name"],
            quota_usd=-1.0 if q < 0 else q / 1_000_000,
            expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
            models=tuple(spec.get("models", ())),
            rpm=int(spec.get("rpm", 0)),
            tpm=int(spec.get("tpm", 0)),
            max_concurrency=int(spec.get("max_concurrency", 0)),
            enabled=bool(row["enabled"]),
            cache=bool(spec.get("cache", False)),
        )
        object.__setattr__(tc, "quota_micros", q)  # exact, whatever the float did
        return tc


_PRICE_MONEY = ("input", "output", "cache_read", "cache_write")


class _PriceKind(_Kind):
    kind = "price"
    table = "prices"
    key = "model"
    columns = (
        "model",
        "input_micros",
        "output_micros",
        "cache_read_micros",
        "cache_write_micros",
        "alias_of",
        "spec",
    )

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("price", _parse_price, doc)

    def values(self, obj: PriceConfig, kw: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if "tiers" in kw:
            tiers = []
            for tier in obj.tiers:
                t: dict[str, Any] = {"up_to": tier.up_to}
                for m in _PRICE_MONEY:
                    v = getattr(tier, m)
                    if v is not None:
                        t[m + "_micros"] = _micros(v)
                tiers.append(t)
            spec["tiers"] = tiers
        for k in ("tier_mode", "batch_multiplier", "priority_multiplier"):
            if k in kw:
                spec[k] = kw[k]
        out: dict[str, Any] = {"model": obj.model, "alias_of": obj.alias_of}
        for m in _PRICE_MONEY:
            out[m + "_micros"] = _micros(kw[m]) if m in kw else None
        out["spec"] = orjson.dumps(spec).decode()
        return out

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": row["model"]}
        for m in _PRICE_MONEY:
            v = row[m + "_micros"]
            if v is not None:
                out[m] = _usd(int(v))
        if row["alias_of"]:
            out["alias_of"] = row["alias_of"]
        spec = _loads(row["spec"])
        if "tiers" in spec:
            tiers = []
            for t in spec.pop("tiers"):
                d: dict[str, Any] = {}
                if t.get("up_to") is not None:
                    d["up_to"] = t["up_to"]
                for m in _PRICE_MONEY:
                    if t.get(m + "_micros") is not None:
                        d[m] = _usd(t[m + "_micros"])
                tiers.append(d)
            out["tiers"] = tiers
        out.update(spec)
        return out

    def public(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = super().public(row)
        for m in _PRICE_MONEY:
            v = row[m + "_micros"]
            out[m + "_micros"] = None if v is None else int(v)
        return out

    def config(self, row: Mapping[str, Any]) -> PriceConfig:
        d = self.doc(row)
        tiers = tuple(PriceTier(**t) for t in d.pop("tiers", ()))
        return PriceConfig(**d, tiers=tiers)


class _GroupKind(_Kind):
    kind = "group"
    table = "groups"
    columns = ("name", "ratio")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("group", _parse_group, doc)

    def values(self, obj: GroupConfig, kw: dict[str, Any]) -> dict[str, Any]:
        return {"name": obj.name, "ratio": obj.ratio}

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"name": row["name"], "ratio": float(row["ratio"])}


CHANNELS = _ChannelKind()
TOKENS = _TokenKind()
PRICES = _PriceKind()
GROUPS = _GroupKind()


# --------------------------------------------------------------------------- store + thread


class _SyncFacade:
    """`store.sync.list_tokens()` == `store.run(store.list_tokens())` (for the CLI)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._store.run(method(*args, **kwargs))

        call.__name__ = name
        return call


class Store(abc.ABC):
    """A durable store driven from its own thread and event loop (see module docs)."""

    dialect = ""

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._box: SecretBox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[int], None]] = []

    # -- thread and loop ------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise StoreError("store is not started")
        return self._loop

    @property
    def started(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, migrate: bool = True, timeout: float = 30.0) -> None:
        """Start the store thread, open the database, apply migrations (unless told not to).

        Raises StoreError (or the backend's connection error) when the database
        cannot be opened; the thread is stopped again in that case.
        """
        if self._thread is not None:
            raise StoreError("store already started")
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=main, name="fastgate-store", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self.run(self.open(), timeout=timeout)
            if migrate:
                self.run(self.migrate(), timeout=timeout)
        except BaseException:
            self._stop_thread(timeout=5.0)
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
            self._stop_thread(timeout)

    def _stop_thread(self, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        self._thread = None
        self._loop = None

    def __enter__(self) -> Store:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the store loop from any thread; never blocks."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise StoreError("store is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` from another event loop (it runs on the store loop)."""
        return await asyncio.wrap_future(self.submit(coro))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the store loop and wait for it (threads and CLI only).

        On timeout the operation is cancelled and TimeoutError raised.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Store.run() called on the store thread: await it instead")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"store operation timed out after {timeout} s") from None

    @property
    def sync(self) -> Any:
        return _SyncFacade(self)

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


# --------------------------------------------------------------------------- shared SQL


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


class SQLStore(Store):
    """The SQL both backends share: CRUD, load, quotas, usage queries.

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

    def _where(self, kind: _Kind, ref: int | str) -> tuple[str, Any]:
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise NotFound(f"{kind.kind} {ref!r} not found")
        if isinstance(ref, int):
            return "id = $1", ref
        return f"{kind.key} = $1", ref

    async def _row(self, tx: Tx, kind: _Kind, ref: int | str) -> Any:
        cond, arg = self._where(kind, ref)
        row = await tx.fetchrow(f"SELECT * FROM {kind.table} WHERE {cond}", arg)
        if row is None:
            raise NotFound(f'{kind.kind} "{ref}" not found')
        return row

    def _conflict(self, kind: _Kind, name: str, exc: BaseException) -> Conflict:
        if kind is TOKENS and "sha256" in str(exc) + str(getattr(exc, "constraint_name", "")):
            return Conflict("another token already uses this key")
        return Conflict(f'a {kind.kind} named "{name}" already exists')

    async def _insert(self, tx: Tx, kind: _Kind, values: dict[str, Any]) -> Any:
        now = time.time()
        cols = [*values, "created_at", "updated_at"]
        args = [*values.values(), now, now]
        marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        sql = f"INSERT INTO {kind.table} ({', '.join(cols)}) VALUES ({marks}) RETURNING *"
        try:
            return await tx.fetchrow(sql, *args)
        except self._unique_errors as exc:
            raise self._conflict(kind, values.get(kind.key, ""), exc) from None

    async def _update(self, tx: Tx, kind: _Kind, row_id: int, values: dict[str, Any]) -> Any:
        values = {**values, "updated_at": time.time()}
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(values, start=1))
        sql = f"UPDATE {kind.table} SET {sets} WHERE id = ${len(values) + 1} RETURNING *"
        try:
            return await tx.fetchrow(sql, *values.values(), row_id)
        except self._unique_errors as exc:
            raise self._conflict(kind, values.get(kind.key, ""), exc) from None

    async def _list(self, kind: _Kind) -> list[dict[str, Any]]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM {kind.table} ORDER BY id")
        return [kind.public(r) for r in rows]

    async def _get(self, kind: _Kind, ref: int | str) -> dict[str, Any]:
        async with self._tx(write=False) as tx:
            return kind.public(await self._row(tx, kind, ref))

    async def _create(self, kind: _Kind, spec: Mapping[str, Any]) -> dict[str, Any]:
        obj, kw = kind.validate(_clean_input(kind.kind, spec))
        async with self._write() as (tx, _):
            row = await self._insert(tx, kind, kind.values(obj, kw))
        return kind.public(row)

    async def _patch(self, kind: _Kind, ref: int | str, patch: Mapping[str, Any]) -> dict:
        patch = _clean_input(kind.kind, patch)
        async with self._write() as (tx, _):
            row = await self._row(tx, kind, ref)
            obj, kw = kind.validate(_apply_patch(kind.doc(row), patch))
            row = await self._update(tx, kind, int(row["id"]), kind.values(obj, kw))
        return kind.public(row)

    async def _delete(self, kind: _Kind, ref: int | str) -> dict[str, Any]:
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
        obj, kw = CHANNELS.validate(_clean_input("channel", spec))
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
        patch = _clean_input("channel", patch)
        touched = {k: patch[k] for k in CHANNEL_SECRETS if k in patch}
        if any(touched.values()):
            self._need_box(" and ".join(sorted(k for k, v in touched.items() if v)))
        async with self._write() as (tx, _):
            row = await self._row(tx, CHANNELS, ref)
            doc = _apply_patch(CHANNELS.doc(row), patch)
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
        doc = _clean_input("token", spec)
        key = doc.get("key") or ""
        if not key and not doc.get("key_sha256"):
            key = generate_key()
            doc["key"] = key
        out = await self._create(TOKENS, doc)
        if key:
            out["key"] = key
        return out

    async def update_token(self, ref: int | str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patch = dict(_clean_input("token", patch))
        if patch.get("key"):
            patch["key_sha256"] = None  # a new key replaces the stored hash
        if "quota_usd" in patch or "quota_micros" in patch:
            # Either form replaces the stored quota; None means unlimited again.
            patch.setdefault("quota_usd", None)
            patch.setdefault("quota_micros", None)
            if patch["quota_usd"] is None and patch["quota_micros"] is None:
                patch["quota_micros"] = -1
        return await self._patch(TOKENS, ref, patch)

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
                checked.append(PRICES.validate(_clean_input("price", spec)))
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
        return await self._patch(GROUPS, ref, patch)

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
                state.channels.append(_channel_config(stored, secrets))
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
        state.groups = [GroupConfig(name=r["name"], ratio=float(r["ratio"])) for r in group_rows]
        state.quota_used = {r["token_name"]: int(r["used_micros"]) for r in quota_rows}
        for p in state.problems:
            log.error("%s", p)
        return state

    # -- quotas -------------------------------------------------------------------------

    _QUOTA_UPSERT = (
        "INSERT INTO quota_usage (token_name, used_micros, updated_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (token_name) DO UPDATE SET "
        "used_micros = quota_usage.used_micros + excluded.used_micros, "
        "updated_at = excluded.updated_at"
    )

    async def _add_deltas(self, tx: Tx, deltas: Mapping[str, int]) -> None:
        now = time.time()
        # Sorted: concurrent instances lock rows in the same order (no deadlock).
        rows = [(k, int(v), now) for k, v in sorted(deltas.items()) if v]
        if rows:
            await tx.executemany(self._QUOTA_UPSERT, rows)

    async def add_quota_deltas(self, deltas: Mapping[str, int]) -> None:
        """Add micro-dollars to each token's used quota: atomic increments, never lost."""
        if not any(deltas.values()):
            return
        async with self._tx(write=True) as tx:
            await self._add_deltas(tx, deltas)

    async def sync_quota(self, deltas: Mapping[str, int]) -> dict[str, int]:
        """Add `deltas`, then return every token's total used, in one transaction."""
        async with self._tx(write=True) as tx:
            await self._add_deltas(tx, deltas)
            rows = await tx.fetch("SELECT token_name, used_micros FROM quota_usage")
        return {r["token_name"]: int(r["used_micros"]) for r in rows}

    async def quota_used(self) -> dict[str, int]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT token_name, used_micros FROM quota_usage")
        return {r["token_name"]: int(r["used_micros"]) for r in rows}

    async def reset_quota(self, token_name: str) -> None:
        """Forget a token's used quota (admin action)."""
        async with self._tx(write=True) as tx:
            await tx.execute("DELETE FROM quota_usage WHERE token_name = $1", token_name)

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
            raise InvalidEntry(["usage.bucket: must be hour or day"])
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


# --------------------------------------------------------------------------- quota write-behind


class QuotaSync:
    """Write-behind of per-token quota usage, for the data plane (runs on ITS loop).

    `used` is the in-memory dict the hot path reads (token name -> micro-dollars
    used, e.g. App.quota_used); the hot path calls `charge()` instead of adding
    to it directly. Every `interval` seconds `sync()` sends the deltas charged
    since the last sync as atomic increments and gets every token's total back in
    the same transaction, then sets used = total + what was charged meanwhile:
    other instances' usage comes back, local charges are never lost. A failed
    sync keeps its deltas for the next one (a failure after the commit reached
    the database can count a delta twice: quotas err on the safe side).
    """

    def __init__(self, store: Store, used: dict[str, int], interval: float = 0.5) -> None:
        self.store = store
        self.used = used
        self.interval = interval
        self.pending: dict[str, int] = {}
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._last_warn = 0.0

    def charge(self, name: str, micros: int) -> None:
        """Hot path: count `micros` against `name` now; it reaches the store within `interval`."""
        self.used[name] = self.used.get(name, 0) + micros
        self.pending[name] = self.pending.get(name, 0) + micros

    async def sync(self) -> None:
        batch, self.pending = self.pending, {}
        try:
            totals = await self.store.call(self.store.sync_quota(batch))
        except BaseException:
            for k, v in batch.items():
                self.pending[k] = self.pending.get(k, 0) + v
            raise
        used, pending = self.used, self.pending
        for name in set(used) | set(totals):
            used[name] = totals.get(name, 0) + pending.get(name, 0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                now = time.monotonic()
                if now - self._last_warn >= 5:
                    self._last_warn = now
                    log.warning("quota sync failed (%d in a row): %s", self.failures, exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the loop and make a last attempt to flush (SIGTERM)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if any(self.pending.values()):
            try:
                await asyncio.wait_for(self.sync(), timeout)
            except Exception as exc:
                log.error("quota deltas not saved at exit: %s (%s)", exc, self.pending)


# --------------------------------------------------------------------------- factory


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
