"""Parsers of the entry arrays: [[channels]], [[tokens]], [[prices]], [[groups]].

These are also the rules for entries created at run time: the store validates
an admin/CLI spec with `parse_entry`, so a store entry and a file entry can
never disagree about what is valid, and problems read the same
("channel.base_url: ...").
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from fastgate.config.model import (
    ChannelConfig,
    GroupConfig,
    PriceConfig,
    PriceTier,
    TokenConfig,
    hash_key,
)
from fastgate.config.schema import (
    BAD_SECRET_CHARS,
    BUDGET_PERIODS,
    CHANNEL_TYPES,
    MISSING,
    TIER_MODES,
    Problems,
    Table,
    join_key,
    quote_list,
    type_name,
)

__all__ = [
    "ENTRY_KINDS",
    "parse_budget",
    "parse_channel",
    "parse_entry",
    "parse_group",
    "parse_price",
    "parse_token",
]

# Types whose base_url loses one trailing "/v1" (the ingress path /v1/... is appended).
# Headers whose framing/connection semantics belong to the gateway, never to a channel.
_MANAGED_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
    }
)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)+")


def _kind(ctype: str | None) -> Any:
    """The channel type's registry entry (None for an unknown type: already an error).

    Imported here, not at module level: loading a config file must not load every
    provider module and converter (the usage writer process reads configs too)."""
    from fastgate.providers import registry

    return registry.TYPES.get(ctype) if ctype else None


def _normalize_base_url(ctype: str | None, url: str) -> str:
    """Strip trailing slashes and the API-version suffix that the ingress path re-adds."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    kind = _kind(ctype)
    suffixes: tuple[str, ...] = kind.base_url_suffixes if kind is not None else ()
    for suffix in suffixes:
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    return f"{parts.scheme}://{parts.netloc}{path}"


def _check_url(url: str) -> str | None:
    """Why `url` is not a usable upstream origin (+ prefix), or None if it is."""
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        return f'must be an http:// or https:// URL, got "{url}"'
    if not parts.hostname:
        return f'has no host: "{url}"'
    if parts.query or parts.fragment:
        return "must not have a query string or fragment"
    if parts.username or parts.password:
        return "must not contain credentials; use api_key or api_key_env"
    return None


def _check_headers(t: Table, headers: Mapping[str, str]) -> bool:
    ok = True
    for name, value in headers.items():
        where = join_key(t.at("headers"), name)
        if not _HEADER_NAME.fullmatch(name):
            t.probs.add(where, "invalid header name")
            ok = False
        elif name.lower() in _MANAGED_HEADERS:
            t.probs.add(where, "is managed by the gateway and cannot be set")
            ok = False
        if any(c in value for c in "\r\n\x00"):
            t.probs.add(where, "header value must not contain CR, LF or NUL")
            ok = False
        else:
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                t.probs.add(where, "header value must be latin-1 text")
                ok = False
    return ok


def _parse_protocol(t: Table, ctype: str | None, kind: Any) -> None:
    """`protocol`: the wire protocol a mock answers in. Stored only when it differs
    from the type's own ("" or the type's own protocol is the default, for any type)."""
    proto = t.string("protocol", store=False)
    if not proto or kind is None or proto == kind.protocol:
        return
    if not kind.protocols:
        t.error(
            "protocol",
            f'only a mock channel takes another protocol; "{ctype}" speaks "{kind.protocol}"',
        )
    elif proto not in kind.protocols:
        t.error("protocol", f'must be one of {quote_list(kind.protocols)}; got "{proto}"')
    else:
        t.kw["protocol"] = proto


def _refuse_other_types_keys(t: Table, ctype: str | None, kind: Any) -> None:
    """A key that only other channel types use (`delay_ms` on an openai channel,
    say) would be accepted and do nothing: refused, naming the types it is for."""
    if kind is None:
        return
    from fastgate.providers import registry

    for key in sorted(registry.TYPE_KEYS - kind.own_keys):
        if t.has(key):
            users = registry.types_using(key)
            t.error(key, f'is only for channels of type {quote_list(users)}; this one is "{ctype}"')


def parse_channel(t: Table) -> tuple[ChannelConfig | None, tuple[str, ...]]:
    """One [[channels]] entry, plus the models it serves (even if other keys are bad)."""
    name = t.string("name", required=True, nonempty=True)
    ctype = t.string("type", required=True, choices=CHANNEL_TYPES)
    kind = _kind(ctype)

    region = t.string("region", store=False)
    if region and not _REGION.fullmatch(region):
        t.error("region", f'expected an AWS region name like "us-east-1", got "{region}"')
        region = None
    elif region is not None:
        t.kw["region"] = region
    base_url = t.string("base_url", store=False)
    if base_url:
        why = _check_url(base_url)
        if why:
            t.error("base_url", why)
        else:
            t.kw["base_url"] = _normalize_base_url(ctype, base_url)
    elif base_url is not None or not t.has("base_url"):
        if kind is not None and kind.needs_region and region:
            t.kw["base_url"] = kind.default_base_url(region)  # bedrock: from the region
        elif kind is not None and kind.needs_base_url:
            t.error("base_url", f'required for type "{ctype}"')
    if (
        kind is not None
        and kind.needs_region
        and not region
        and (region is not None or not t.has("region"))
    ):
        t.error("region", f'required for type "{ctype}"')

    t.secret("api_key")
    t.string("api_key_env", env_name=True)

    if kind is not None and kind.default_models and not t.has("models"):
        models: tuple[str, ...] | None = kind.default_models
        t.kw["models"] = models
        t.take("models", False)
    else:
        models = t.str_list("models", required=True, nonempty=True)

    for key in ("model_map", "deployments"):
        mapping = t.str_map(key, store=False)
        if mapping is None:
            continue
        bad = [k for k in mapping if models is not None and k not in models]
        for k in bad:
            t.probs.add(join_key(t.at(key), k), f'"{k}" is not in this channel\'s models')
        if not bad:
            t.kw[key] = mapping

    t.integer("priority")
    t.integer("weight", lo=0)
    t.str_list("groups", nonempty=True)
    headers = t.str_map("headers", store=False)
    if headers is not None and _check_headers(t, headers):
        t.kw["headers"] = headers
    t.boolean("enabled")
    t.integer("rpm", lo=0)
    t.integer("default_max_tokens", lo=1)
    t.string("anthropic_version", nonempty=True)
    t.string("api_version")
    for key in ("access_key_id", "secret_access_key", "session_token"):
        t.secret(key)
        t.string(key + "_env", env_name=True)
    t.number("delay_ms", lo=0)
    _parse_protocol(t, ctype, kind)
    t.number("timeout", lo=0)
    t.boolean("local")
    _refuse_other_types_keys(t, ctype, kind)
    t.finish()

    served = models or ()
    if name is None or ctype is None:
        return None, served
    return ChannelConfig(**t.kw), served


def _parse_expires_at(t: Table) -> None:
    v = t.take("expires_at", False)
    if v is MISSING or v == "":
        return
    if isinstance(v, _dt.datetime):
        moment = v
    elif isinstance(v, str):
        if not _RFC3339.fullmatch(v):
            t.error("expires_at", f'expected RFC 3339 like "2030-12-31T23:59:59Z", got "{v}"')
            return
        text = v[:10] + "T" + v[11:].replace("z", "Z").replace("Z", "+00:00")
        try:
            moment = _dt.datetime.fromisoformat(text)
        except ValueError as exc:
            t.error("expires_at", f'invalid date-time "{v}": {exc}')
            return
    else:
        t.wrong("expires_at", "RFC 3339 date-time string", v)
        return
    if moment.tzinfo is None or moment.utcoffset() is None:
        t.error("expires_at", "needs a time zone offset, e.g. 2030-12-31T23:59:59Z")
        return
    t.kw["expires_at"] = moment.timestamp()


def parse_token(t: Table) -> tuple[TokenConfig | None, str]:
    """One [[tokens]] entry, plus the key field name that identified it."""
    name = t.string("name", required=True, nonempty=True)
    digest = t.string("key_sha256", store=False)
    key = t.string("key", store=False)
    key_field = ""
    if digest and key:
        t.probs.add(t.path, "set either key or key_sha256, not both")
    elif digest:
        if _SHA256_HEX.fullmatch(digest):
            t.kw["sha256"] = digest
            key_field = "key_sha256"
        else:
            t.error("key_sha256", "must be 64 lowercase hex characters (the sha256 of the key)")
    elif key:
        if not key.startswith("fg-"):
            t.error("key", 'must start with "fg-"')
        elif BAD_SECRET_CHARS.search(key):
            t.error("key", "must not contain whitespace or control characters")
        else:
            t.kw["key"] = key
            t.kw["sha256"] = hash_key(key)
            key_field = "key"
    elif digest is not None or key is not None or not (t.has("key") or t.has("key_sha256")):
        # Both absent or empty (a wrong type was already reported).
        t.probs.add(t.path, "one of key or key_sha256 is required")

    t.string("group", nonempty=True)
    quota = t.number("quota_usd", store=False)
    if quota is not None:
        if quota == -1 or quota >= 0:
            t.kw["quota_usd"] = quota
        else:
            t.error("quota_usd", "must be -1 (unlimited) or >= 0")
    _parse_expires_at(t)
    t.str_list("models")
    t.integer("rpm", lo=0)
    t.integer("tpm", lo=0)
    t.integer("max_concurrency", lo=0)
    t.boolean("enabled")
    t.boolean("cache")
    parse_budget(t)
    t.finish()
    if name is None or "sha256" not in t.kw:
        return None, key_field
    return TokenConfig(**t.kw), key_field


def parse_budget(t: Table) -> None:
    """`budget_usd` (-1 = none, else >= 0) and `budget_period` ("day" | "week" |
    "month"): both or neither (a budget_usd of -1 with an empty period is none)."""
    budget = t.number("budget_usd", store=False)
    if budget is not None:
        if budget == -1 or budget >= 0:
            t.kw["budget_usd"] = budget
        else:
            t.error("budget_usd", "must be -1 (no budget) or >= 0")
            budget = None
    period = t.string("budget_period", choices=("", *BUDGET_PERIODS))
    has_budget = budget is not None and budget >= 0
    if has_budget and (period == "" or (period is None and not t.has("budget_period"))):
        t.error(
            "budget_period",
            f"required with budget_usd: one of {', '.join(BUDGET_PERIODS)} (UTC)",
        )
    elif period and not has_budget and not (t.has("budget_usd") and budget is None):
        t.error("budget_usd", f'required with budget_period "{period}" (USD per {period})')


def _parse_tiers(t: Table) -> None:
    v = t.take("tiers", False)
    if v is MISSING:
        return
    if not isinstance(v, list):
        t.wrong("tiers", "array of tables", v)
        return
    tiers: list[PriceTier] = []
    ok = True
    prev: int | None = None
    for i, item in enumerate(v):
        where = f"{t.at('tiers')}[{i}]"
        if not isinstance(item, dict):
            t.probs.add(where, f"expected table, got {type_name(item)}")
            ok = False
            continue
        tt = Table(t.probs, where, item)
        up_to = tt.integer("up_to", lo=1)
        for key in ("input", "output", "cache_read", "cache_write"):
            tt.number(key, lo=0)
        tt.finish()
        if tt.has("up_to") and up_to is None:
            ok = False
        elif up_to is None and i != len(v) - 1:
            tt.error("up_to", "required on every tier but the last")
            ok = False
        elif up_to is not None and prev is not None and up_to <= prev:
            tt.error("up_to", f"must be greater than the previous tier's up_to ({prev})")
            ok = False
        if up_to is not None:
            prev = up_to
        tiers.append(PriceTier(**tt.kw))
    if ok:
        t.kw["tiers"] = tuple(tiers)


def parse_price(t: Table) -> PriceConfig | None:
    model = t.string("model", required=True, nonempty=True)
    for key in ("input", "output", "cache_read", "cache_write"):
        t.number(key, lo=0)
    alias_of = t.string("alias_of")
    _parse_tiers(t)
    t.string("tier_mode", choices=TIER_MODES)
    t.number("batch_multiplier", lo=0)
    t.number("priority_multiplier", lo=0)
    t.finish()
    if alias_of:
        # an alias shares the whole price: tiers, tier mode and multipliers too
        own = ("input", "output", "cache_read", "cache_write", "tiers", "tier_mode")
        own += ("batch_multiplier", "priority_multiplier")
        clash = [k for k in own if t.has(k)]
        if clash:
            t.error("alias_of", f"cannot be combined with {', '.join(clash)}")
    if t.kw.get("tier_mode") == "segmented" and not t.has("tiers"):
        t.error("tier_mode", '"segmented" needs tiers')
    if model is None:
        return None
    return PriceConfig(**t.kw)


def parse_group(t: Table) -> GroupConfig | None:
    name = t.string("name", required=True, nonempty=True)
    t.number("ratio", lo=0)
    parse_budget(t)
    t.finish()
    if name is None:
        return None
    return GroupConfig(**t.kw)


# --------------------------------------------------------------------------- one entry alone


def _channel_only(t: Table) -> ChannelConfig | None:
    return parse_channel(t)[0]


def _token_only(t: Table) -> TokenConfig | None:
    return parse_token(t)[0]


# kind -> the parser of one entry of that kind (the result alone, without extras).
ENTRY_KINDS: dict[str, Callable[[Table], Any]] = {
    "channel": _channel_only,
    "token": _token_only,
    "price": parse_price,
    "group": parse_group,
}


def parse_entry(kind: str, doc: Mapping[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """Validate one entry given as a dict (TOML keys): `(config object, kw, problems)`.

    `kind` is "channel", "token", "price" or "group"; problems are named
    "<kind>.<key>: message". The object is None when the entry is unusable;
    `kw` holds the keys that were given and valid, normalised (what a store
    persists, so that unset keys keep following the defaults).
    """
    probs = Problems()
    t = Table(probs, kind, dict(doc))
    obj = ENTRY_KINDS[kind](t)
    if obj is None and not probs.items:
        probs.items.append(f"{kind}: invalid")
    return obj, dict(t.kw), list(probs.items)
