"""The immutable in-memory view the data plane reads.

A `Snapshot` is built once from a `Config` (and, later, the store), holds every
lookup the hot path needs precomputed — tokens by sha256, routes by (group,
model), pre-encoded upstream header blocks per channel — and is swapped as one
reference when configuration changes. Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from fastgate.gateway.billing import IntPrice, price_table, ratio_ppm
from fastgate.gateway.plan import RoutePlan, build_plans
from fastgate.gateway.routing import Route
from fastgate.gateway.strategies import build_routes
from fastgate.providers import registry


@dataclass(slots=True, eq=False)
class Channel:
    """A channel ready for the hot path: origin, pre-encoded auth and headers."""

    name: str
    type: str
    protocol: str
    priority: int
    weight: int
    models: tuple[str, ...]
    model_map: dict[str, str]
    groups: tuple[str, ...]
    scheme: str = "http"
    host: str = ""
    port: int = 0
    path_prefix: bytes = b""
    static_headers: bytes = b""  # host, auth, extra headers: "name: value\r\n"...
    first_byte_timeout: float = 0.0
    rpm: int = 0
    delay_ms: float = 0.0
    default_max_tokens: int = 4096
    config: Any = None
    origin: tuple[str, str, int] = ("http", "", 0)  # the pool's key (scheme, host, port)
    kind: Any = None  # the channel type's registry entry (providers/registry.py)
    local: bool = False  # on this machine or network (the local-first strategy)
    # A router's candidate: the member model this copy of the channel serves
    # ("": the request's own model). See gateway/strategies.py.
    member: str = ""
    # A type with a target of its own (Azure): (model, upstream model, path) ->
    # the request target, filled by `kind.openai_target`; None for the others.
    targets: dict[tuple[str, str, bytes], bytes] | None = None

    @property
    def is_mock(self) -> bool:
        return self.kind.in_process


@dataclass(slots=True, eq=False)
class Token:
    name: str
    sha256: str
    group: str
    quota_micros: int
    expires_at: float | None
    models: frozenset[str] | None  # None: every model of the group
    enabled: bool
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    cache: bool = False
    limited: bool = False  # any of rpm, tpm, max_concurrency: checked per request
    # Enabled, and no limits or cache: the fast path takes these keys (an expiry,
    # an allow-list, a quota or a budget it checks itself: `checked`).
    fast: bool = False
    # The same, but with rpm/tpm: the fast path takes it when the limits answer
    # at once (a lease slot; max_concurrency always needs the general path).
    fast_limits: bool = False
    # An expiry, a `models` allow-list, a quota or a budget: the fast path checks
    # them with admission's own rules and hands the rest (a refusal, a budget near
    # enough to read the fleet's total first) to the general path.
    checked: bool = False
    # Budgets that apply to this key: (subject kind "key" | "group", subject name,
    # budget micro-dollars, period). The fast path serves a key with some while
    # `Budgets.clear` says every one is far from its end (`checked`).
    budgets: tuple[tuple[str, str, int, str], ...] = ()


@dataclass(slots=True, eq=False)
class Snapshot:
    version: int
    config: Any
    channels: dict[str, Channel]
    tokens: dict[str, Token]
    aliases: dict[str, str]
    routes: dict[tuple[str, str], Route]
    models_by_group: dict[str, list[str]]
    prices: dict[str, IntPrice]
    group_ratio: dict[str, int]  # parts per million
    built_at: float = field(default_factory=time.time)
    models_json: dict[tuple[str, frozenset[str] | None], bytes] = field(default_factory=dict)
    plans: dict[tuple[str, str], RoutePlan] = field(default_factory=dict)
    # [[routers]] by name; and per group, the routers with a member served there.
    routers: dict[str, Any] = field(default_factory=dict)
    routers_by_group: dict[str, list[str]] = field(default_factory=dict)
    unpriced: tuple[str, ...] = ()  # routed models with no price (cost 0, `unpriced`)

    def resolve_model(self, name: str) -> str:
        return self.aliases.get(name, name)

    def models_body(self, token: Token) -> bytes:
        """GET /v1/models for a key: public names and aliases it may use (cached)."""
        key = (token.group, token.models)
        body = self.models_json.get(key)
        if body is None:
            names = list(self.models_by_group.get(token.group, ()))
            allowed = set(names)
            for alias, target in self.aliases.items():
                if target in allowed:
                    names.append(alias)
            names += self.routers_by_group.get(token.group, ())
            if token.models is not None:
                names = [
                    n for n in names if n in token.models or self.aliases.get(n) in token.models
                ]
            created = int(self.built_at)
            data = [
                {"id": n, "object": "model", "created": created, "owned_by": "fastgate"}
                for n in sorted(set(names))
            ]
            body = orjson.dumps({"object": "list", "data": data})
            self.models_json[key] = body
        return body


def _channel_from_config(cc: Any) -> Channel:
    kind = registry.get(cc.type)
    protocol = cc.protocol or kind.protocol  # a mock may speak another protocol
    ch = Channel(
        name=cc.name,
        type=cc.type,
        protocol=protocol,
        priority=cc.priority,
        weight=cc.weight,
        models=tuple(cc.models),
        model_map=dict(cc.model_map),
        groups=tuple(cc.groups),
        first_byte_timeout=float(cc.timeout or 0.0),
        rpm=cc.rpm,
        delay_ms=float(cc.delay_ms),
        default_max_tokens=cc.default_max_tokens,
        config=cc,
        kind=kind,
        local=bool(cc.local),
        targets={} if kind.own_target else None,
    )
    if kind.in_process:
        return ch
    u = urlsplit(cc.base_url)
    ch.scheme = u.scheme
    ch.host = u.hostname or ""
    ch.port = u.port or (443 if u.scheme == "https" else 80)
    ch.path_prefix = u.path.rstrip("/").encode()
    ch.origin = (ch.scheme, ch.host, ch.port)
    default_port = 443 if u.scheme == "https" else 80
    host_hdr = ch.host if ch.port == default_port else f"{ch.host}:{ch.port}"
    if ":" in ch.host and not host_hdr.startswith("["):  # IPv6 literal
        host_hdr = f"[{ch.host}]" + ("" if ch.port == default_port else f":{ch.port}")
    lines = [f"host: {host_hdr}"]
    for name, value in kind.auth_headers(cc):
        lines.append(f"{name}: {value}")
    for name, value in cc.headers.items():
        lines.append(f"{name}: {value}")
    lines.append("accept-encoding: identity")
    ch.static_headers = "".join(line + "\r\n" for line in lines).encode("latin-1")
    return ch


def build_snapshot(config: Any, version: int = 1) -> Snapshot:
    """Everything the data plane needs, precomputed from a Config."""
    channels: dict[str, Channel] = {}
    for cc in config.channels:
        if not cc.enabled:
            continue
        channels[cc.name] = _channel_from_config(cc)

    # (group, model) -> channels serving it
    serving: dict[tuple[str, str], list[Channel]] = {}
    models_by_group: dict[str, set[str]] = {}
    for ch in channels.values():
        for g in ch.groups:
            for m in ch.models:
                serving.setdefault((g, m), []).append(ch)
                models_by_group.setdefault(g, set()).add(m)

    group_budget = {
        g.name: ("group", g.name, g.budget_micros, g.budget_period)
        for g in config.groups
        if g.budget_micros >= 0 and g.budget_period
    }
    tokens: dict[str, Token] = {}
    for tc in config.tokens:
        budgets = []
        if tc.budget_micros >= 0 and tc.budget_period:
            budgets.append(("key", tc.name, tc.budget_micros, tc.budget_period))
        if tc.group in group_budget:
            budgets.append(group_budget[tc.group])
        tokens[tc.sha256] = Token(
            name=tc.name,
            sha256=tc.sha256,
            group=tc.group,
            quota_micros=tc.quota_micros,
            expires_at=tc.expires_at,
            models=frozenset(tc.models) if tc.models else None,
            enabled=tc.enabled,
            rpm=tc.rpm,
            tpm=tc.tpm,
            max_concurrency=tc.max_concurrency,
            cache=tc.cache,
            limited=bool(tc.rpm or tc.tpm or tc.max_concurrency),
            budgets=tuple(budgets),
        )
    for t in tokens.values():
        plain = t.enabled and not t.cache
        t.fast = plain and not t.limited
        t.fast_limits = plain and t.limited and not t.max_concurrency
        t.checked = (
            t.quota_micros >= 0
            or t.expires_at is not None
            or t.models is not None
            or bool(t.budgets)
        )

    prices = price_table(config.prices)
    group_ratio = {g.name: ratio_ppm(g.ratio) for g in config.groups}
    aliases = dict(config.aliases)
    routes, routers, routers_by_group = _routes(config, serving, prices)

    return Snapshot(
        version=version,
        config=config,
        channels=channels,
        tokens=tokens,
        aliases=aliases,
        routes=routes,
        models_by_group={g: sorted(ms) for g, ms in models_by_group.items()},
        prices=prices,
        group_ratio=group_ratio,
        plans=build_plans(routes, aliases, prices, group_ratio),
        routers=routers,
        routers_by_group=routers_by_group,
        unpriced=tuple(sorted({m for ms in models_by_group.values() for m in ms} - prices.keys())),
    )


def _routes(
    config: Any, serving: dict[tuple[str, str], list[Channel]], prices: dict[str, IntPrice]
) -> tuple[dict[tuple[str, str], Route], dict[str, Any], dict[str, list[str]]]:
    """Routes by (group, model or router) under the configured strategies; the
    routers by name; per group, the routers it can use (gateway/strategies.py)."""
    routers = {r.name: r for r in config.routers}
    routes = build_routes(serving, config.routing.strategy, routers.values(), prices.get)
    by_group: dict[str, list[str]] = {}
    for g, name in routes:
        if name in routers:
            by_group.setdefault(g, []).append(name)
    return routes, routers, by_group


def unpriced_models(config: Any) -> list[str]:
    """The models routed by `config` (an enabled channel serves them) that have
    no price (`alias_of` followed): served with cost 0 and recorded `unpriced`."""
    routed = {m for cc in config.channels if cc.enabled and cc.groups for m in cc.models}
    return sorted(routed - price_table(config.prices).keys())
