"""Configuration: a TOML file turned into frozen, validated dataclasses.

Why a hand-written validator: the gateway must refuse a bad file and name every
problem by its key path at once (``channels[2].weight: must be >= 0``), so an
operator fixes the file in one pass; and the hot path reads these immutable
objects without ever re-checking them. Values are normalised here (base URLs,
relative paths, key hashes, quotas in micro-dollars) so that nothing downstream
has to.

The package, by seam (this module re-exports the public names, so
``from fastgate.config import X`` is the way in):

- `model`: the frozen dataclasses (their fields are the defaults), ConfigError,
  key hashing and generation;
- `schema`: allowed values and the typed `Table` reader that records problems;
- `sections`: one parser per single-table section (server, admin, database, ...);
- `entries`: the parsers of channels, tokens, prices and groups, and
  `parse_entry` (one entry alone: what the store validates admin input with);
- `routers`: the [[routers]] parser and its cross-entry rules;
- `loader`: file -> Config with the cross-entry rules, and `check-config`.

This package sits below the store, server, admin and CLI: it imports none of them.
"""

from __future__ import annotations

from fastgate.config.entries import parse_entry
from fastgate.config.loader import check_config_main, config_warnings, load_config, parse_config
from fastgate.config.model import (
    AdminConfig,
    CacheConfig,
    ChannelConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    GroupConfig,
    LoggingConfig,
    PriceConfig,
    PriceTier,
    RateLimitConfig,
    RouterConfig,
    RoutingConfig,
    ServerConfig,
    TokenConfig,
    WebhooksConfig,
    generate_key,
    hash_key,
)
from fastgate.config.schema import (
    BACKENDS,
    CHANNEL_TYPES,
    DB_PREFIXES,
    LOG_LEVELS,
    REDIS_PREFIXES,
    ROUTER_STRATEGIES,
    ROUTING_STRATEGIES,
    TIER_MODES,
    WEBHOOK_EVENTS,
)

__all__ = [
    "BACKENDS",
    "CHANNEL_TYPES",
    "DB_PREFIXES",
    "LOG_LEVELS",
    "REDIS_PREFIXES",
    "ROUTER_STRATEGIES",
    "ROUTING_STRATEGIES",
    "TIER_MODES",
    "WEBHOOK_EVENTS",
    "AdminConfig",
    "CacheConfig",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "GroupConfig",
    "LoggingConfig",
    "PriceConfig",
    "PriceTier",
    "RateLimitConfig",
    "RouterConfig",
    "RoutingConfig",
    "ServerConfig",
    "TokenConfig",
    "WebhooksConfig",
    "check_config_main",
    "config_warnings",
    "generate_key",
    "hash_key",
    "load_config",
    "parse_config",
    "parse_entry",
]
