"""The control plane: what the admin API and the CLI both do to the configuration.

Two front ends share one model so they cannot disagree: `fastgate.admin.app`
(aiohttp.web, the admin port and the dashboard) and `fastgate.commands` (the
`fastgate token|channel|price|usage|migrate` CLI). Both go through
`ControlPlane`, which puts the config file's entries next to the store's and
enforces the merge rule of `fastgate.store.base`: file entries are read-only and
win on a name clash, so they are listed (``"source": "file"``, ``"read_only":
true``) but never patched, deleted or shadowed by a new store entry.

Kinds are "channel", "token", "price" and "group"; an entry is named by "name"
(by "model" for prices). A `ref` is the store's integer id or the entry's name
(a string of digits is tried as an id first, then as a name). Entry dicts are
JSON-ready and never hold a secret: channels say "api_key_set", tokens show
"key_sha256"; only `create("token", ...)` returns the plaintext "key", once.

Nothing here imports aiohttp.web: the CLI stays quick to start.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastgate.config import ChannelConfig, Config, hash_key
from fastgate.store.base import Conflict, InvalidEntry, NotFound, Store

__all__ = [
    "KINDS",
    "ControlPlane",
    "ReadOnlyEntry",
    "field_errors",
    "file_entry_dict",
    "parse_ref",
    "parse_time",
]

# kind -> the field that names an entry
KINDS: dict[str, str] = {"channel": "name", "token": "name", "price": "model", "group": "name"}
_FILE_ATTR = {"channel": "channels", "token": "tokens", "price": "prices", "group": "groups"}
_SECRET_FIELDS = ("api_key", "access_key_id", "secret_access_key", "session_token")
USAGE_GROUPS = ("key", "model", "channel", "tag", "day")
USAGE_BUCKETS = ("minute", "hour", "day")


class ReadOnlyEntry(Conflict):
    """The entry belongs to the config file (admin API: 409): edit the file instead."""


# --------------------------------------------------------------------------- small parsers


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str | float | int, now: float | None = None) -> float:
    """A moment as unix seconds, from unix seconds, RFC 3339 / ISO 8601 (a date alone
    is midnight UTC; no offset means UTC), or a span back from `now` ("90m", "24h",
    "7d", "2w"). Raises ValueError saying what is accepted."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    if not s:
        raise ValueError("empty time")
    try:
        return float(s)
    except ValueError:
        pass
    m = _RELATIVE.fullmatch(s)
    if m:
        t = time.time() if now is None else now
        return t - float(m.group(1)) * _UNITS[m.group(2)]
    iso = s.replace("z", "Z")
    if iso.endswith("Z"):
        iso = iso[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f'cannot read "{s}" as a time: use RFC 3339 (2024-05-01T00:00:00Z), '
            "a date (2024-05-01), unix seconds, or a span back from now (30m, 24h, 7d, 2w)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


def parse_ref(ref: str | int) -> int | str:
    """An id (int) for a string of ASCII digits, else the name itself."""
    if isinstance(ref, int):
        return ref
    return int(ref) if ref.isascii() and ref.isdigit() else ref


def field_errors(kind: str, problems: Sequence[str]) -> dict[str, str]:
    """InvalidEntry problems ("channel.weight: must be >= 0", "[0] price.input: ...")
    as {field path: message}; a problem about the whole entry goes under "_entry"."""
    out: dict[str, str] = {}
    for p in problems:
        path, sep, msg = p.partition(": ")
        if not sep:
            path, msg = "", p
        path = re.sub(r"^\[\d+\]\s*", "", path)
        for prefix in (f"{kind}.", "usage."):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        else:
            if path in (kind, "usage", ""):
                path = "_entry"
        out[path] = f"{out[path]}; {msg}" if path in out else msg
    return out


# --------------------------------------------------------------------------- file entries


def _rfc3339(ts: float | None) -> str:
    if ts is None:
        return ""
    text = _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()
    return text.replace("+00:00", "Z")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def _micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * 1_000_000)


def file_entry_dict(kind: str, entry: Any, quota_used: Mapping[str, int] | None = None) -> dict:
    """A config-file entry in the store's output shape, marked read-only, no secrets."""
    out: dict[str, Any] = {"id": None}
    if kind == "channel":
        for f in dataclasses.fields(entry):
            if f.name in _SECRET_FIELDS:
                continue
            out[f.name] = _jsonable(getattr(entry, f.name))
        out["api_key_set"] = bool(entry.api_key)
        for f in _SECRET_FIELDS[1:]:
            if getattr(entry, f):
                out[f + "_set"] = True
    elif kind == "token":
        out.update(
            name=entry.name,
            key_sha256=entry.sha256,
            group=entry.group,
            quota_usd=entry.quota_usd,
            quota_micros=entry.quota_micros,
            expires_at=_rfc3339(entry.expires_at),
            models=list(entry.models),
            rpm=entry.rpm,
            tpm=entry.tpm,
            max_concurrency=entry.max_concurrency,
            enabled=entry.enabled,
            cache=entry.cache,
            quota_used_micros=int((quota_used or {}).get(entry.name, 0)),
            budget_usd=entry.budget_usd,
            budget_period=entry.budget_period,
        )
    elif kind == "price":
        for f in dataclasses.fields(entry):
            out[f.name] = _jsonable(getattr(entry, f.name))
        for m in ("input", "output", "cache_read", "cache_write"):
            out[m + "_micros"] = _micros(getattr(entry, m))
    elif kind == "group":
        out.update(
            name=entry.name,
            ratio=entry.ratio,
            budget_usd=entry.budget_usd,
            budget_period=entry.budget_period,
        )
    else:
        raise ValueError(f"unknown kind {kind!r}")
    out["source"] = "file"
    out["read_only"] = True
    return out


# --------------------------------------------------------------------------- the model


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return kind


class ControlPlane:
    """CRUD over file + store entries with the file-wins rule; usage; channel probes.

    Every method is a coroutine for the CALLER's event loop (admin app, or the
    CLI's `asyncio.run`); store work is bridged with `store.call`.
    """

    def __init__(self, store: Store, config: Callable[[], Config]) -> None:
        self.store = store
        self.config = config

    # -- helpers ------------------------------------------------------------------------

    async def _store(self, method: str, *args: Any, **kw: Any) -> Any:
        return await self.store.call(getattr(self.store, method)(*args, **kw))

    def file_entries(self, kind: str) -> tuple[Any, ...]:
        cfg = self.config()
        return tuple(getattr(cfg, _FILE_ATTR[_check_kind(kind)]))

    def file_entry(self, kind: str, name: str) -> Any | None:
        attr = KINDS[_check_kind(kind)]
        for e in self.file_entries(kind):
            if getattr(e, attr) == name:
                return e
        return None

    def _source_hint(self) -> str:
        path = self.config().path
        return f"the config file {path}" if path is not None else "the config file"

    def _read_only(self, kind: str, name: str) -> ReadOnlyEntry:
        return ReadOnlyEntry(
            f'{kind} "{name}" is defined in {self._source_hint()}: file entries are '
            "read-only here; edit the config file to change or remove it"
        )

    def _name_taken(self, kind: str, name: str) -> ReadOnlyEntry:
        return ReadOnlyEntry(
            f'a {kind} named "{name}" is defined in {self._source_hint()} (file entries '
            "win on a name clash); choose another name, or edit the config file"
        )

    def _check_new_name(self, kind: str, doc: Mapping[str, Any]) -> None:
        name = doc.get(KINDS[kind])
        if isinstance(name, str) and self.file_entry(kind, name) is not None:
            raise self._name_taken(kind, name)
        if kind == "token":
            sha = doc.get("key_sha256")
            key = doc.get("key")
            if isinstance(key, str) and key:
                sha = hash_key(key)
            if isinstance(sha, str) and sha:
                for t in self.file_entries("token"):
                    if t.sha256 == sha:
                        raise Conflict(
                            f'token "{t.name}" in {self._source_hint()} already uses this key'
                        )

    def _mark(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        entry["read_only"] = False
        name = entry.get(KINDS[kind])
        entry["shadowed"] = isinstance(name, str) and self.file_entry(kind, name) is not None
        return entry

    async def _quota_used(self) -> dict[str, int]:
        return await self._store("quota_used")

    async def _file_dict(self, kind: str, entry: Any) -> dict[str, Any]:
        used = await self._quota_used() if kind == "token" else None
        return file_entry_dict(kind, entry, used)

    async def _budgets(self, kind: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add each token's or group's spend in its budget's current period:
        `budget_spent_micros`, `budget_spent_usd` and `budget_period_start` (what
        the store holds: the gateway writes it behind within 0.5 s)."""
        if kind not in ("token", "group"):
            return entries
        from fastgate.gateway.budgets import CLOCK, current_key
        from fastgate.vocab.periods import period_label

        subject = "key" if kind == "token" else "group"
        now = CLOCK.now()
        keys = {}
        for e in entries:
            e.setdefault("budget_usd", -1.0)
            e.setdefault("budget_period", "")
            if e["budget_period"]:
                keys[e["name"]] = current_key(subject, e["name"], e["budget_period"], now)
        spent = await self._store("budget_spent", list(keys.values())) if keys else {}
        for e in entries:
            k = keys.get(e["name"])
            micros = spent.get(k, 0) if k is not None else 0
            e["budget_spent_micros"] = micros
            e["budget_spent_usd"] = micros / 1_000_000
            e["budget_period_start"] = period_label(k[2], k[3]) if k is not None else ""
        return entries

    # -- CRUD -----------------------------------------------------------------------------

    async def list(self, kind: str) -> list[dict[str, Any]]:
        """File entries first (read-only), then store entries in id order."""
        files = self.file_entries(kind)
        used = await self._quota_used() if kind == "token" and files else None
        out = [file_entry_dict(kind, e, used) for e in files]
        rows = await self._store(f"list_{kind}s")
        out.extend(self._mark(kind, r) for r in rows)
        return await self._budgets(kind, out)

    async def get(self, kind: str, ref: str | int) -> dict[str, Any]:
        """By id (store), else by name: the file entry if the file has one."""
        return (await self._budgets(kind, [await self._get(kind, ref)]))[0]

    async def _get(self, kind: str, ref: str | int) -> dict[str, Any]:
        r = parse_ref(ref)
        if isinstance(r, int):
            try:
                return self._mark(kind, await self._store(f"get_{kind}", r))
            except NotFound:
                if isinstance(ref, int):
                    raise
        name = str(ref)
        fe = self.file_entry(kind, name)
        if fe is not None:
            return await self._file_dict(kind, fe)
        return self._mark(kind, await self._store(f"get_{kind}", name))

    async def _store_ref(self, kind: str, ref: str | int) -> int | str:
        """The store ref to write to; file entries are refused."""
        r = parse_ref(ref)
        if isinstance(r, int):
            try:
                row = await self._store(f"get_{kind}", r)
                return int(row["id"])
            except NotFound:
                if isinstance(ref, int):
                    raise
        name = str(ref)
        if self.file_entry(kind, name) is not None:
            raise self._read_only(kind, name)
        return name

    async def create(self, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        _check_kind(kind)
        if not isinstance(spec, Mapping):
            raise InvalidEntry([f"{kind}: expected an object"])
        self._check_new_name(kind, spec)
        return self._mark(kind, await self._store(f"create_{kind}", dict(spec)))

    async def update(self, kind: str, ref: str | int, patch: Mapping[str, Any]) -> dict:
        _check_kind(kind)
        if not isinstance(patch, Mapping):
            raise InvalidEntry([f"{kind}: expected an object"])
        target = await self._store_ref(kind, ref)
        renamed = patch.get(KINDS[kind])
        if isinstance(renamed, str) and renamed != target:
            self._check_new_name(kind, {KINDS[kind]: renamed})
        if kind == "token" and (patch.get("key") or patch.get("key_sha256")):
            self._check_new_name(kind, {k: patch.get(k) for k in ("key", "key_sha256")})
        out = self._mark(kind, await self._store(f"update_{kind}", target, dict(patch)))
        return (await self._budgets(kind, [out]))[0]

    async def delete(self, kind: str, ref: str | int) -> dict[str, Any]:
        target = await self._store_ref(_check_kind(kind), ref)
        out = await self._store(f"delete_{kind}", target)
        out["read_only"] = False
        return out

    async def upsert_prices(self, specs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Create or replace store prices by model (refused for file models)."""
        for spec in specs:
            model = spec.get("model") if isinstance(spec, Mapping) else None
            if isinstance(model, str) and self.file_entry("price", model) is not None:
                raise self._read_only("price", model)
        return await self._store("upsert_prices", [dict(s) for s in specs])

    async def missing_prices(self) -> dict[str, Any]:
        """Models with no price: those the running config (file and store) routes,
        and those usage records show served unpriced (docs/contract.md section 5). Each row
        says whether it is routed now, whether it has a price now (a model priced
        since it was seen), and how many unpriced records it has."""
        from fastgate.gateway.billing import price_table
        from fastgate.snapshot import unpriced_models
        from fastgate.store.merge import merge

        cfg = merge(self.config(), await self._store("load"))
        routed = set(unpriced_models(cfg))
        priced = price_table(cfg.prices).keys()
        seen = {r["model"]: r for r in await self._store("unpriced_models")}
        data = []
        for model in sorted(routed | seen.keys()):
            r = seen.get(model)
            data.append(
                {
                    "model": model,
                    "routed": model in routed,
                    "priced": model in priced,
                    "unpriced_requests": r["requests"] if r else 0,
                    "first_seen": r["first_seen"] if r else None,
                    "last_seen": r["last_seen"] if r else None,
                }
            )
        return {"object": "list", "data": data}

    # -- channel probes -------------------------------------------------------------------

    async def channel_config(self, ref: str | int) -> ChannelConfig:
        """The channel as the data plane would use it, credentials included."""
        entry = await self.get("channel", ref)
        name = entry["name"]
        if entry.get("source") == "file":
            fe = self.file_entry("channel", name)
            assert fe is not None
            return fe
        state = await self._store("load")
        for ch in state.channels:
            if ch.name == name:
                return ch
        raise NotFound(f'channel "{ref}" not found')

    async def test_channel(
        self, ref: str | int, *, model: str | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        """A one-token probe of the channel (see fastgate.admin.probe)."""
        from fastgate.admin.probe import probe_channel

        ch = await self.channel_config(ref)
        result = await probe_channel(ch, model=model, timeout=timeout)
        result["channel"] = ch.name
        return result

    # -- usage and health -----------------------------------------------------------------

    async def usage(
        self,
        group_by: str | None = None,
        since: float | None = None,
        until: float | None = None,
        tag: str | None = None,
        bucket: str | None = None,
        key_name: str | None = None,
    ) -> dict[str, Any]:
        """Rows from `store.query_usage` plus their totals."""
        problems = []
        if group_by is not None and group_by not in USAGE_GROUPS:
            problems.append(f"usage.group_by: must be one of {', '.join(USAGE_GROUPS)}")
        if bucket is not None and bucket not in USAGE_BUCKETS:
            problems.append(f"usage.bucket: must be one of {', '.join(USAGE_BUCKETS)}")
        if since is not None and until is not None and until < since:
            problems.append("usage.until: must not be before since")
        if problems:
            raise InvalidEntry(problems)
        rows = await self._store(
            "query_usage",
            group_by=group_by,
            since=since,
            until=until,
            tag=tag,
            bucket=bucket,
            key_name=key_name,
        )
        totals = {
            k: 0
            for k in (
                "requests",
                "errors",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cache_write_tokens",
                "cost_micros",
            )
        }
        for r in rows:
            for k in totals:
                totals[k] += int(r.get(k, 0))
        return {
            "group_by": group_by,
            "bucket": bucket,
            "since": since,
            "until": until,
            "tag": tag,
            "key": key_name,
            "data": rows,
            "totals": totals,
        }

    async def store_health(self, timeout: float = 5.0) -> dict[str, Any]:
        """A round trip to the database, with its latency and the config version."""
        import asyncio

        out: dict[str, Any] = {"backend": self.store.dialect, "listening": self.store.listening}
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._store("ping"), timeout)
            out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            out["version"] = await asyncio.wait_for(self._store("version"), timeout)
            out["ok"] = True
            out["error"] = None
        except Exception as exc:  # reported, not raised: status must always answer
            out["ok"] = False
            out["error"] = str(exc) or exc.__class__.__name__
        return out
