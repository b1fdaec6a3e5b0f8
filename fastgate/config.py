"""Configuration: a TOML file turned into frozen, validated dataclasses.

Why a hand-written validator: the gateway must refuse a bad file and name every
problem by its key path at once (``channels[2].weight: must be >= 0``), so an
operator fixes the file in one pass; and the hot path reads these immutable
objects without ever re-checking them. Values are normalised here (base URLs,
relative paths, key hashes, quotas in micro-dollars) so that nothing downstream
has to.
"""

from __future__ import annotations

import base64
import datetime as _dt
import difflib
import hashlib
import math
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "BACKENDS",
    "CHANNEL_TYPES",
    "LOG_LEVELS",
    "TIER_MODES",
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
    "RoutingConfig",
    "ServerConfig",
    "TokenConfig",
    "check_config_main",
    "config_warnings",
    "generate_key",
    "hash_key",
    "load_config",
    "parse_config",
]

CHANNEL_TYPES = (
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "bedrock",
    "ollama",
    "openrouter",
    "mock",
)
BACKENDS = ("memory", "redis")
LOG_LEVELS = ("debug", "info", "warning", "error")
TIER_MODES = ("whole", "segmented")
DB_PREFIXES = ("sqlite:///", "postgresql://", "postgres://")
REDIS_PREFIXES = ("redis://", "rediss://", "unix://")

# Types whose base_url loses one trailing "/v1" (the ingress path /v1/... is appended).
_STRIP_V1_TYPES = frozenset({"openai", "openrouter", "mock", "azure", "anthropic"})
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

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)+")
_BAD_SECRET_CHARS = re.compile(r"[\x00-\x20\x7f]")


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


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fastgate:"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = False
    backend: str = "memory"
    ttl: float = 3600.0
    max_entries: int = 10000
    redis_url: str = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    access_log: str = ""  # "" none, "-" stdout, else an absolute path (after parsing)
    usage_spool_dir: str = ""  # "" none, else an absolute path (after parsing)
    level: str = "info"


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
    timeout: float = 0.0  # 0 = server.first_byte_timeout

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
    quota_micros: int = field(init=False, default=-1)  # derived from quota_usd

    def __post_init__(self) -> None:
        if not self.sha256 and self.key:
            object.__setattr__(self, "sha256", hash_key(self.key))
        micros = -1 if self.quota_usd < 0 else round(self.quota_usd * 1_000_000)
        object.__setattr__(self, "quota_micros", micros)


@dataclass(frozen=True, slots=True)
class PriceTier:
    up_to: int | None = None  # prompt tokens; None = no upper bound
    input: float = 0.0
    output: float = 0.0
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
    channels: tuple[ChannelConfig, ...] = ()
    tokens: tuple[TokenConfig, ...] = ()
    prices: tuple[PriceConfig, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
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


# --------------------------------------------------------------------------- reading tables

_MISSING: Any = object()


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, _dt.datetime):
        return "datetime"
    if isinstance(value, _dt.date):
        return "date"
    if isinstance(value, _dt.time):
        return "time"
    return type(value).__name__


def _key_part(key: str) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _join(path: str, key: str) -> str:
    part = _key_part(key)
    return f"{path}.{part}" if path else part


def _quote_list(items: tuple[str, ...]) -> str:
    return ", ".join(f'"{i}"' for i in items)


def _unknown(key: str, known: list[str], what: str = "key") -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown {what}{hint}"


class _Problems:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


class _Table:
    """One TOML table being read: typed getters that record problems and remember
    which keys were read, so that leftovers are reported as unknown keys."""

    def __init__(self, probs: _Problems, path: str, data: dict[str, Any]) -> None:
        self.probs = probs
        self.path = path
        self.data = data
        self.kw: dict[str, Any] = {}
        self.known: list[str] = []

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.probs.add(self.at(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def _take(self, key: str, required: bool) -> Any:
        if key not in self.known:
            self.known.append(key)
        if key not in self.data:
            if required:
                self.error(key, "required key is missing")
            return _MISSING
        return self.data[key]

    def _wrong(self, key: str, expected: str, value: object) -> None:
        self.error(key, f"expected {expected}, got {_type_name(value)}")

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        nonempty: bool = False,
        choices: tuple[str, ...] | None = None,
        env_name: bool = False,
        store: bool = True,
    ) -> str | None:
        """A string value, or None when missing or invalid."""
        v = self._take(key, required)
        if v is _MISSING:
            return None
        if not isinstance(v, str):
            self._wrong(key, "string", v)
            return None
        if choices is not None and v not in choices:
            self.error(key, f'must be one of {_quote_list(choices)}; got "{v}"')
            return None
        if nonempty and not v.strip():
            self.error(key, "must not be empty")
            return None
        if env_name and v and not _ENV_NAME.fullmatch(v):
            # Deliberately not echoed: people paste the secret itself here.
            self.error(key, "must be an environment variable name such as OPENAI_API_KEY")
            return None
        if store:
            self.kw[key] = v
        return v

    def secret(self, key: str) -> str | None:
        """A literal credential: must be safe to put in an HTTP header line."""
        v = self.string(key, store=False)
        if v and _BAD_SECRET_CHARS.search(v):
            self.error(key, "must not contain whitespace or control characters")
            return None
        if v is not None:
            self.kw[key] = v
        return v

    def integer(
        self,
        key: str,
        *,
        lo: int | None = None,
        hi: int | None = None,
        required: bool = False,
        store: bool = True,
    ) -> int | None:
        v = self._take(key, required)
        if v is _MISSING:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self._wrong(key, "integer", v)
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            if lo is not None and hi is not None:
                self.error(key, f"must be between {lo} and {hi}")
            elif lo is not None:
                self.error(key, f"must be >= {lo}")
            else:
                self.error(key, f"must be <= {hi}")
            return None
        if store:
            self.kw[key] = v
        return v

    def number(
        self,
        key: str,
        *,
        lo: float | None = None,
        gt: float | None = None,
        store: bool = True,
    ) -> float | None:
        """A float; integers are accepted and converted."""
        v = self._take(key, False)
        if v is _MISSING:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            self._wrong(key, "number", v)
            return None
        f = float(v)
        if not math.isfinite(f):
            self.error(key, "must be a finite number")
            return None
        if gt is not None and not f > gt:
            self.error(key, f"must be > {gt:g}")
            return None
        if lo is not None and f < lo:
            self.error(key, f"must be >= {lo:g}")
            return None
        if store:
            self.kw[key] = f
        return f

    def boolean(self, key: str) -> bool | None:
        v = self._take(key, False)
        if v is _MISSING:
            return None
        if not isinstance(v, bool):
            self._wrong(key, "boolean", v)
            return None
        self.kw[key] = v
        return v

    def str_list(
        self, key: str, *, required: bool = False, nonempty: bool = False, store: bool = True
    ) -> tuple[str, ...] | None:
        """An array of distinct non-empty strings, as a tuple."""
        v = self._take(key, required)
        if v is _MISSING:
            return None
        if not isinstance(v, list):
            self._wrong(key, "array of strings", v)
            return None
        ok = True
        seen: set[str] = set()
        for i, item in enumerate(v):
            where = f"{self.at(key)}[{i}]"
            if not isinstance(item, str):
                self.probs.add(where, f"expected string, got {_type_name(item)}")
                ok = False
            elif not item.strip():
                self.probs.add(where, "must not be empty")
                ok = False
            elif item in seen:
                self.probs.add(where, f'duplicate "{item}"')
                ok = False
            else:
                seen.add(item)
        if nonempty and not v:
            self.error(key, "must not be empty")
            ok = False
        if not ok:
            return None
        result = tuple(v)
        if store:
            self.kw[key] = result
        return result

    def str_map(self, key: str, *, store: bool = True) -> Mapping[str, str] | None:
        """A table of string -> non-empty string, as a read-only mapping."""
        v = self._take(key, False)
        if v is _MISSING:
            return None
        if not isinstance(v, dict):
            self._wrong(key, "table", v)
            return None
        ok = True
        for k, item in v.items():
            where = _join(self.at(key), k)
            if not k.strip():
                self.probs.add(where, "key must not be empty")
                ok = False
            if not isinstance(item, str):
                self.probs.add(where, f"expected string, got {_type_name(item)}")
                ok = False
            elif not item.strip():
                self.probs.add(where, "must not be empty")
                ok = False
        if not ok:
            return None
        result = MappingProxyType(dict(v))
        if store:
            self.kw[key] = result
        return result

    def finish(self) -> None:
        """Report every key that no getter asked for."""
        for key in self.data:
            if key not in self.known:
                self.error(key, _unknown(key, self.known))


def _resolve_path(base: Path, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


# --------------------------------------------------------------------------- sections


def _parse_server(t: _Table) -> ServerConfig:
    t.string("host", nonempty=True)
    t.integer("port", lo=0, hi=65535)
    t.integer("workers", lo=1)
    t.integer("max_body_bytes", lo=1)
    t.integer("max_header_bytes", lo=1024)
    for key in (
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "header_timeout",
        "keepalive_timeout",
        "drain_timeout",
    ):
        t.number(key, gt=0)
    t.integer("upstream_max_connections", lo=1)
    t.number("upstream_keepalive", gt=0)
    t.finish()
    return ServerConfig(**t.kw)


def _parse_admin(t: _Table) -> AdminConfig:
    t.string("host", nonempty=True)
    t.integer("port", lo=0, hi=65535)
    t.secret("token")
    t.string("token_env", env_name=True)
    t.finish()
    return AdminConfig(**t.kw)


def _parse_database(t: _Table, base: Path) -> DatabaseConfig:
    url = t.string("url", store=False)
    if not t.has("url"):
        url = ""
    if url is not None:
        if url == "":
            t.kw["url"] = "sqlite:///" + str(base / "fastgate.db")
        elif url.startswith("sqlite:///"):
            rest = url[len("sqlite:///") :]
            if not rest:
                t.error("url", "needs a file path, e.g. sqlite:///fastgate.db")
            elif rest == ":memory:":
                t.kw["url"] = url
            else:
                t.kw["url"] = "sqlite:///" + _resolve_path(base, rest)
        elif url.startswith(("postgresql://", "postgres://")):
            t.kw["url"] = url
        else:
            # The URL itself is not echoed: it may carry a password.
            t.error("url", f"must start with {_quote_list(DB_PREFIXES)}")
    t.number("refresh_interval", gt=0)
    t.finish()
    return DatabaseConfig(**t.kw)


def _parse_routing(t: _Table) -> RoutingConfig:
    t.integer("max_attempts", lo=1)
    t.integer("breaker_failures", lo=1)
    t.number("breaker_cooldown", gt=0)
    t.finish()
    return RoutingConfig(**t.kw)


def _redis_url(t: _Table) -> None:
    url = t.string("redis_url", nonempty=True, store=False)
    if url is None:
        return
    if not url.startswith(REDIS_PREFIXES):
        t.error("redis_url", f"must start with {_quote_list(REDIS_PREFIXES)}")
        return
    t.kw["redis_url"] = url


def _parse_ratelimit(t: _Table) -> RateLimitConfig:
    t.string("backend", choices=BACKENDS)
    _redis_url(t)
    t.string("key_prefix")
    t.finish()
    return RateLimitConfig(**t.kw)


def _parse_cache(t: _Table) -> CacheConfig:
    t.boolean("enabled")
    t.string("backend", choices=BACKENDS)
    t.number("ttl", gt=0)
    t.integer("max_entries", lo=1)
    _redis_url(t)
    t.finish()
    return CacheConfig(**t.kw)


def _parse_logging(t: _Table, base: Path) -> LoggingConfig:
    access = t.string("access_log", store=False)
    if access:
        t.kw["access_log"] = access if access == "-" else _resolve_path(base, access)
    spool = t.string("usage_spool_dir", store=False)
    if spool:
        t.kw["usage_spool_dir"] = _resolve_path(base, spool)
    level = t.string("level", store=False)
    if level is not None:
        if level.lower() in LOG_LEVELS:
            t.kw["level"] = level.lower()
        else:
            t.error("level", f'must be one of {_quote_list(LOG_LEVELS)}; got "{level}"')
    t.finish()
    return LoggingConfig(**t.kw)


def _parse_aliases(probs: _Problems, data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for alias, target in data.items():
        where = _join("aliases", alias)
        if not alias.strip():
            probs.add(where, "alias name must not be empty")
        elif not isinstance(target, str):
            probs.add(where, f"expected string, got {_type_name(target)}")
        elif not target.strip():
            probs.add(where, "must not be empty")
        elif target == alias:
            probs.add(where, "alias maps to itself")
        else:
            out[alias] = target
    return out


def _normalize_base_url(ctype: str | None, url: str) -> str:
    """Strip trailing slashes and the API-version suffix that the ingress path re-adds."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if ctype in _STRIP_V1_TYPES:
        suffixes: tuple[str, ...] = ("/v1",)
    elif ctype == "gemini":
        suffixes = ("/v1beta", "/v1")
    else:
        suffixes = ()
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


def _check_headers(t: _Table, headers: Mapping[str, str]) -> bool:
    ok = True
    for name, value in headers.items():
        where = _join(t.at("headers"), name)
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


def _parse_channel(t: _Table) -> tuple[ChannelConfig | None, tuple[str, ...]]:
    """One [[channels]] entry, plus the models it serves (even if other keys are bad)."""
    name = t.string("name", required=True, nonempty=True)
    ctype = t.string("type", required=True, choices=CHANNEL_TYPES)

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
        if ctype == "bedrock" and region:
            t.kw["base_url"] = f"https://bedrock-runtime.{region}.amazonaws.com"
        elif ctype is not None and ctype not in ("mock", "bedrock"):  # bedrock: from region
            t.error("base_url", f'required for type "{ctype}"')
    if ctype == "bedrock" and not region and (region is not None or not t.has("region")):
        t.error("region", 'required for type "bedrock"')

    t.secret("api_key")
    t.string("api_key_env", env_name=True)

    if ctype == "mock" and not t.has("models"):
        models: tuple[str, ...] | None = ("mock-1",)
        t.kw["models"] = models
        t._take("models", False)
    else:
        models = t.str_list("models", required=True, nonempty=True)

    for key in ("model_map", "deployments"):
        mapping = t.str_map(key, store=False)
        if mapping is None:
            continue
        bad = [k for k in mapping if models is not None and k not in models]
        for k in bad:
            t.probs.add(_join(t.at(key), k), f'"{k}" is not in this channel\'s models')
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
    t.number("timeout", lo=0)
    t.finish()

    served = models or ()
    if name is None or ctype is None:
        return None, served
    return ChannelConfig(**t.kw), served


def _parse_expires_at(t: _Table) -> None:
    v = t._take("expires_at", False)
    if v is _MISSING or v == "":
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
        t._wrong("expires_at", "RFC 3339 date-time string", v)
        return
    if moment.tzinfo is None or moment.utcoffset() is None:
        t.error("expires_at", "needs a time zone offset, e.g. 2030-12-31T23:59:59Z")
        return
    t.kw["expires_at"] = moment.timestamp()


def _parse_token(t: _Table) -> tuple[TokenConfig | None, str]:
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
        elif _BAD_SECRET_CHARS.search(key):
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
    t.finish()
    if name is None or "sha256" not in t.kw:
        return None, key_field
    return TokenConfig(**t.kw), key_field


def _parse_tiers(t: _Table) -> None:
    v = t._take("tiers", False)
    if v is _MISSING:
        return
    if not isinstance(v, list):
        t._wrong("tiers", "array of tables", v)
        return
    tiers: list[PriceTier] = []
    ok = True
    prev: int | None = None
    for i, item in enumerate(v):
        where = f"{t.at('tiers')}[{i}]"
        if not isinstance(item, dict):
            t.probs.add(where, f"expected table, got {_type_name(item)}")
            ok = False
            continue
        tt = _Table(t.probs, where, item)
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


def _parse_price(t: _Table) -> PriceConfig | None:
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
        clash = [k for k in ("input", "output", "cache_read", "cache_write", "tiers") if t.has(k)]
        if clash:
            t.error("alias_of", f"cannot be combined with {', '.join(clash)}")
    if model is None:
        return None
    return PriceConfig(**t.kw)


def _parse_group(t: _Table) -> GroupConfig | None:
    name = t.string("name", required=True, nonempty=True)
    t.number("ratio", lo=0)
    t.finish()
    if name is None:
        return None
    return GroupConfig(**t.kw)


# --------------------------------------------------------------------------- top level

_TABLE_SECTIONS = ("server", "admin", "database", "routing", "aliases", "ratelimit", "cache")
_SECTIONS = (*_TABLE_SECTIONS, "logging", "channels", "tokens", "prices", "groups")


def _section(probs: _Problems, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = data.get(name, _MISSING)
    if v is _MISSING:
        return {}
    if not isinstance(v, dict):
        probs.add(name, f"expected table ([{name}]), got {_type_name(v)}")
        return {}
    return v


def _array(probs: _Problems, data: Mapping[str, Any], name: str) -> list[_Table]:
    v = data.get(name, _MISSING)
    if v is _MISSING:
        return []
    if not isinstance(v, list):
        probs.add(name, f"expected array of tables ([[{name}]]), got {_type_name(v)}")
        return []
    tables = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            probs.add(f"{name}[{i}]", f"expected table, got {_type_name(item)}")
            continue
        tables.append(_Table(probs, f"{name}[{i}]", item))
    return tables


def _duplicates(probs: _Problems, entries: list[tuple[str, str]], what: str) -> None:
    """entries: (path of the name key, value); report each repeat with the first's path."""
    first: dict[str, str] = {}
    for where, value in entries:
        if value in first:
            probs.add(where, f'duplicate {what} "{value}" (first at {first[value]})')
        else:
            first[value] = where


def _build(data: Any, base_dir: Path | None, path: Path | None, source: str) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError([f"{source}: expected a TOML table at top level"], source)
    probs = _Problems()
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path.cwd()))

    for name, value in data.items():
        if name not in _SECTIONS:
            is_section = isinstance(value, dict) or (
                isinstance(value, list) and value and all(isinstance(x, dict) for x in value)
            )
            probs.add(
                _key_part(name), _unknown(name, list(_SECTIONS), "section" if is_section else "key")
            )

    def table(name: str) -> _Table:
        return _Table(probs, name, _section(probs, data, name))

    server = _parse_server(table("server"))
    admin = _parse_admin(table("admin"))
    if admin.port and admin.port == server.port:
        probs.add("admin.port", f"must differ from server.port ({server.port})")
    database = _parse_database(table("database"), base)
    routing = _parse_routing(table("routing"))
    aliases = _parse_aliases(probs, _section(probs, data, "aliases"))
    ratelimit = _parse_ratelimit(table("ratelimit"))
    cache = _parse_cache(table("cache"))
    logging = _parse_logging(table("logging"), base)

    channels: list[ChannelConfig] = []
    served: set[str] = set()
    channel_names: list[tuple[str, str]] = []
    for t in _array(probs, data, "channels"):
        ch, models = _parse_channel(t)
        served.update(models)
        if isinstance(t.kw.get("name"), str):
            channel_names.append((t.at("name"), t.kw["name"]))
        if ch is not None:
            channels.append(ch)
    _duplicates(probs, channel_names, "name")

    tokens: list[TokenConfig] = []
    token_names: list[tuple[str, str]] = []
    token_keys: dict[str, str] = {}
    for t in _array(probs, data, "tokens"):
        tok, key_field = _parse_token(t)
        if "name" in t.kw:
            token_names.append((t.at("name"), t.kw["name"]))
        if tok is None:
            continue
        tokens.append(tok)
        if tok.sha256 in token_keys:
            probs.add(t.at(key_field), f"same key as {token_keys[tok.sha256]}")
        else:
            token_keys[tok.sha256] = t.path
    _duplicates(probs, token_names, "name")

    prices: list[PriceConfig] = []
    price_paths: dict[str, str] = {}
    price_names: list[tuple[str, str]] = []
    for t in _array(probs, data, "prices"):
        pc = _parse_price(t)
        if pc is not None:
            prices.append(pc)
            price_names.append((t.at("model"), pc.model))
            price_paths.setdefault(pc.model, t.path)
    _duplicates(probs, price_names, "model")
    by_model = {pc.model: pc for pc in prices}
    for pc in prices:
        if not pc.alias_of:
            continue
        where = _join(price_paths[pc.model], "alias_of")
        target = by_model.get(pc.alias_of)
        if pc.alias_of == pc.model:
            probs.add(where, "a price cannot be an alias of itself")
        elif target is None:
            probs.add(where, f'"{pc.alias_of}" is not the model of any [[prices]] entry')
        elif target.alias_of:
            probs.add(where, f'"{pc.alias_of}" is itself an alias; alias_of cannot chain')

    groups: list[GroupConfig] = []
    group_names: list[tuple[str, str]] = []
    for t in _array(probs, data, "groups"):
        g = _parse_group(t)
        if g is not None:
            groups.append(g)
            group_names.append((t.at("name"), g.name))
    _duplicates(probs, group_names, "name")

    for alias, target in aliases.items():
        where = _join("aliases", alias)
        if target in aliases:
            probs.add(where, f'target "{target}" is itself an alias; aliases cannot chain')
        elif target not in served:
            probs.add(where, f'target "{target}" is not served by any channel')

    if probs.items:
        raise ConfigError(probs.items, source)
    return Config(
        server=server,
        admin=admin,
        database=database,
        routing=routing,
        aliases=MappingProxyType(aliases),
        ratelimit=ratelimit,
        cache=cache,
        logging=logging,
        channels=tuple(channels),
        tokens=tuple(tokens),
        prices=tuple(prices),
        groups=tuple(groups),
        path=path,
        base_dir=base,
    )


# --------------------------------------------------------------------------- public entry points


def parse_config(
    data: dict[str, Any], base_dir: Path | None = None, source: str = "<config>"
) -> Config:
    """Validate an already-decoded TOML document; relative paths resolve against base_dir
    (default: the current directory). Raises ConfigError listing every problem."""
    return _build(data, base_dir, None, source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; every failure (missing file, bad TOML, bad
    values) is a ConfigError so callers have one thing to catch and print."""
    source = os.fspath(path)
    p = Path(source)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"], source) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory, not a file"], source) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"], source) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not valid UTF-8 (byte {exc.start})"], source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"], source) from None
    abs_path = Path(os.path.abspath(p))
    return _build(data, abs_path.parent, abs_path, source)


def config_warnings(cfg: Config) -> list[str]:
    """Things that are legal but probably wrong: credentials named by environment
    variables that are not set in this environment."""
    out: list[str] = []

    def check(where: str, value: str, env: str) -> None:
        if not value and env and not os.environ.get(env):
            out.append(f'{where}: environment variable "{env}" is not set')

    check("admin.token_env", cfg.admin.token, cfg.admin.token_env)
    for i, ch in enumerate(cfg.channels):
        check(f"channels[{i}].api_key_env", ch.api_key, ch.api_key_env)
        check(f"channels[{i}].access_key_id_env", ch.access_key_id, ch.access_key_id_env)
        check(
            f"channels[{i}].secret_access_key_env",
            ch.secret_access_key,
            ch.secret_access_key_env,
        )
        check(f"channels[{i}].session_token_env", ch.session_token, ch.session_token_env)
    return out


def check_config_main(path: str) -> int:
    """`fastgate check-config FILE`: 0 and an OK line if valid, else 1 and one
    problem per line on stderr. Missing environment variables only warn."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    for warning in config_warnings(cfg):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(
        f"OK: {path}: {len(cfg.channels)} channels, {len(cfg.tokens)} tokens, "
        f"{len(cfg.prices)} prices"
    )
    return 0
