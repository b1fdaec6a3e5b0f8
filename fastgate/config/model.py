"""The config model: frozen dataclasses the rest of fastgate reads.

Why frozen: the hot path reads these objects without re-checking or copying
them, and a snapshot built from one Config can never see it change. Defaults
live here (the dataclass fields are the documented defaults of docs/contract.md section 2);
validation lives in the parsers (`fastgate.config.sections`,
`fastgate.config.entries`), so a value that reaches a dataclass is already good.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fastgate.config.schema import WEBHOOK_EVENTS

__all__ = [
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
    "generate_key",
    "hash_key",
]


# Channel types whose `local` defaults to true (a model served on this machine or network).
LOCAL_TYPES = ("ollama",)


def _empty_map() -> Mapping[str, str]:
    return MappingProxyType({})


def _env_or(value: str, env: str) -> str:
    """A literal value wins; otherwise the named environment variable (missing -> "")."""
    if value:
        return value
    if env:
        return os.environ.get(env, "")
    return ""


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 33554432
    max_header_bytes: int = 65536
    connect_timeout: float = 10.0
    first_byte_timeout: float = 300.0
    idle_timeout: float = 120.0  # max silence between upstream bytes once a response started
    header_timeout: float = 10.0  # a client must send its whole request head within this
    body_timeout: float = 30.0  # longest silence while a request body is being read (408)
    keepalive_timeout: float = 75.0  # idle client connection
    drain_timeout: float = 30.0  # SIGTERM grace
    upstream_max_connections: int = 512  # per upstream origin
    upstream_keepalive: float = 60.0  # idle pooled upstream connection lifetime


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    token: str = field(default="", repr=False)
    token_env: str = ""

    def resolve_token(self) -> str:
        """The admin bearer token: literal `token`, else the `token_env` variable, else ""."""
        return _env_or(self.token, self.token_env)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # After load/parse: "sqlite:///<absolute path>" (":memory:" kept) or a postgres URL.
    url: str = ""
    refresh_interval: float = 5.0

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> str | None:
        """Filesystem path of the SQLite database (None for Postgres)."""
        if self.is_postgres:
            return None
        if not self.url:
            return "fastgate.db"
        return self.url[len("sqlite:///") :]


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    strategy: str = "priority"  # how a model's channels are ordered (gateway/strategies.py)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """A public model name served by several models ([[routers]])."""

    name: str
    models: tuple[str, ...] = ()
    strategy: str = "ordered"  # how the (model, channel) candidates are ordered


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fastgate:"
    on_redis_error: str = "open"  # "open": serve on local limits; "closed": answer 503


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = False
    backend: str = "memory"
    ttl: float = 3600.0
    max_entries: int = 10000  # memory backend: entries held per worker
    max_entry_bytes: int = 262144  # a response body over this is not stored
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fastgate:"  # redis backend: prefix of every key


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    access_log: str = ""  # "" none, "-" stdout, else an absolute path (after parsing)
    usage_spool_dir: str = ""  # "" none, else an absolute path (after parsing)
    level: str = "info"
    format: str = "text"  # application logs: "text" or "json" (one object per line)


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    url: str = ""  # "" = no webhooks
    events: tuple[str, ...] = WEBHOOK_EVENTS
    secret_env: str = ""  # HMAC-SHA256 key of x-fastgate-signature ("" = unsigned)
    timeout: float = 5.0  # seconds per delivery attempt
    max_attempts: int = 5  # attempts per event (errors, timeouts, 408/429/5xx are retried)
    max_per_minute: int = 60  # per instance (token bucket); excess dropped and counted
    queue_size: int = 1000  # events waiting per worker; beyond it dropped and counted
    instance: str = ""  # the body's "instance" ("" = the host name)

    def resolve_secret(self) -> str:
        """The signing key: the `secret_env` variable ("" when unset or not named)."""
        return _env_or("", self.secret_env)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    api_key_env: str = ""
    models: tuple[str, ...] = ()
    model_map: Mapping[str, str] = field(default_factory=_empty_map)
    priority: int = 0
    weight: int = 1
    groups: tuple[str, ...] = ("default",)
    headers: Mapping[str, str] = field(default_factory=_empty_map)
    enabled: bool = True
    rpm: int = 0
    default_max_tokens: int = 4096
    anthropic_version: str = "2023-06-01"
    api_version: str = ""
    deployments: Mapping[str, str] = field(default_factory=_empty_map)
    region: str = ""
    access_key_id: str = field(default="", repr=False)
    access_key_id_env: str = ""
    secret_access_key: str = field(default="", repr=False)
    secret_access_key_env: str = ""
    session_token: str = field(default="", repr=False)
    session_token_env: str = ""
    delay_ms: float = 0.0
    # The wire protocol a mock channel answers in ("" = the type's own).
    protocol: str = ""
    timeout: float = 0.0  # 0 = server.first_byte_timeout
    # A model on this machine or network (the local-first strategy tries it first).
    # None = the type's default: true for ollama, false otherwise.
    local: bool | None = None

    def __post_init__(self) -> None:
        if self.local is None:
            object.__setattr__(self, "local", self.type in LOCAL_TYPES)

    def resolve_api_key(self) -> str:
        """`api_key` if set, else the `api_key_env` variable, else "" (never raises)."""
        return _env_or(self.api_key, self.api_key_env)

    def resolve_access_key_id(self) -> str:
        return _env_or(self.access_key_id, self.access_key_id_env)

    def resolve_secret_access_key(self) -> str:
        return _env_or(self.secret_access_key, self.secret_access_key_env)

    def resolve_session_token(self) -> str:
        return _env_or(self.session_token, self.session_token_env)

    def upstream_model(self, model: str) -> str:
        """The name the upstream knows `model` by (model_map applied)."""
        return self.model_map.get(model, model)


@dataclass(frozen=True, slots=True)
class TokenConfig:
    name: str
    sha256: str = ""  # filled from `key` when empty
    key: str = field(default="", repr=False)  # plaintext, only when the file gave one
    group: str = "default"
    quota_usd: float = -1.0  # -1 = unlimited
    expires_at: float | None = None  # unix timestamp
    models: tuple[str, ...] = ()
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0
    enabled: bool = True
    cache: bool = False
    budget_usd: float = -1.0  # spend allowed per budget_period; -1 = none
    budget_period: str = ""  # "day" | "week" | "month" (UTC); "" with no budget
    quota_micros: int = field(init=False, default=-1)  # derived from quota_usd
    budget_micros: int = field(init=False, default=-1)  # derived from budget_usd

    def __post_init__(self) -> None:
        if not self.sha256 and self.key:
            object.__setattr__(self, "sha256", hash_key(self.key))
        micros = -1 if self.quota_usd < 0 else round(self.quota_usd * 1_000_000)
        object.__setattr__(self, "quota_micros", micros)
        object.__setattr__(self, "budget_micros", _budget_micros(self.budget_usd))


@dataclass(frozen=True, slots=True)
class PriceTier:
    up_to: int | None = None  # prompt tokens, inclusive; None = no upper bound
    # USD per 1M tokens; None = the entry's own price (gateway/billing.py)
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class PriceConfig:
    model: str
    input: float = 0.0  # USD per 1M tokens
    output: float = 0.0
    cache_read: float | None = None  # None = same as input
    cache_write: float | None = None  # None = same as input
    alias_of: str = ""
    tiers: tuple[PriceTier, ...] = ()
    tier_mode: str = "whole"
    batch_multiplier: float = 1.0
    priority_multiplier: float = 1.0


@dataclass(frozen=True, slots=True)
class GroupConfig:
    name: str
    ratio: float = 1.0
    budget_usd: float = -1.0  # shared by every key of the group, per budget_period
    budget_period: str = ""
    budget_micros: int = field(init=False, default=-1)  # derived from budget_usd

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget_micros", _budget_micros(self.budget_usd))


def _budget_micros(usd: float) -> int:
    return -1 if usd < 0 else round(usd * 1_000_000)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    aliases: Mapping[str, str] = field(default_factory=_empty_map)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    channels: tuple[ChannelConfig, ...] = ()
    tokens: tuple[TokenConfig, ...] = ()
    prices: tuple[PriceConfig, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    routers: tuple[RouterConfig, ...] = ()
    path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    def group_ratio(self, name: str) -> float:
        """A group's price ratio; groups without a [[groups]] entry have ratio 1.0."""
        for g in self.groups:
            if g.name == name:
                return g.ratio
        return 1.0


# --------------------------------------------------------------------------- errors, keys


class ConfigError(Exception):
    """An invalid configuration; `problems` holds every "key.path: message" found."""

    def __init__(self, problems: list[str], source: str = "<config>") -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


def hash_key(key: str) -> str:
    """SHA-256 hex of a key: the only form in which keys are stored or looked up."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new API key: "fg-" + 43 base64url characters (32 random bytes)."""
    return "fg-" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
