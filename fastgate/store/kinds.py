"""Entity kinds: how channels, tokens, prices and groups map between the admin
input (TOML keys), table rows and config dataclasses.

Why one object per kind: the SQL CRUD (sql.py) is generic over a `Kind`
(table, unique name column, row <-> dict <-> dataclass), so a kind's quirks
(sealed channel credentials, token quotas in micro-dollars, price tiers) live
here in one place. Input is validated by the config's own entry parsers
(`fastgate.config.parse_entry`): a store entry obeys the file's rules.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from fastgate.config import (
    ChannelConfig,
    GroupConfig,
    PriceConfig,
    PriceTier,
    TokenConfig,
    parse_entry,
)
from fastgate.store.errors import InvalidEntry

__all__ = [
    "CHANNELS",
    "CHANNEL_SECRETS",
    "GROUPS",
    "PRICES",
    "TOKENS",
    "Kind",
    "apply_patch",
    "channel_config",
    "clean_input",
]

_READONLY_KEYS = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "source",
        "quota_used_micros",
        "key_sha256_prefix",
        "budget_spent_usd",
        "budget_spent_micros",
        "budget_period_start",
    }
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


def apply_patch(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def clean_input(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise InvalidEntry([f"{kind}: expected an object"])
    return {k: v for k, v in doc.items() if k not in _READONLY_KEYS and not str(k).endswith("_set")}


def _validate(kind: str, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    obj, kw, problems = parse_entry(kind, doc)
    if problems:
        raise InvalidEntry(problems)
    return obj, kw


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


def channel_config(stored: Mapping[str, Any], secrets: Mapping[str, str]) -> ChannelConfig:
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


class Kind:
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


class _ChannelKind(Kind):
    kind = "channel"
    table = "channels"
    columns = ("name", "type", "enabled", "priority", "weight", "spec")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("channel", doc)

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


class _TokenKind(Kind):
    kind = "token"
    table = "tokens"
    columns = ("name", "key_sha256", "group_name", "quota_micros", "expires_at", "enabled", "spec")
    _spec_keys = ("models", "rpm", "tpm", "max_concurrency", "cache", "budget_usd", "budget_period")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("token", _token_toml(doc))

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
            budget_usd=float(spec.get("budget_usd", -1.0)),
            budget_period=str(spec.get("budget_period", "")),
        )
        object.__setattr__(tc, "quota_micros", q)  # exact, whatever the float did
        return tc


_PRICE_MONEY = ("input", "output", "cache_read", "cache_write")


class _PriceKind(Kind):
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
        return _validate("price", doc)

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


class _GroupKind(Kind):
    kind = "group"
    table = "groups"
    columns = ("name", "ratio", "spec")
    _spec_keys = ("budget_usd", "budget_period")

    def validate(self, doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _validate("group", doc)

    def values(self, obj: GroupConfig, kw: dict[str, Any]) -> dict[str, Any]:
        spec = {k: kw[k] for k in self._spec_keys if k in kw}
        return {"name": obj.name, "ratio": obj.ratio, "spec": orjson.dumps(spec).decode()}

    def doc(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": row["name"], "ratio": float(row["ratio"])}
        out.update(_loads(row["spec"]))
        return out

    def config(self, row: Mapping[str, Any]) -> GroupConfig:
        return GroupConfig(**self.doc(row))


CHANNELS = _ChannelKind()
TOKENS = _TokenKind()
PRICES = _PriceKind()
GROUPS = _GroupKind()
