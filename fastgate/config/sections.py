"""Parsers of the single-table sections: server, admin, database, routing,
ratelimit, cache, logging, webhooks, aliases.

Each takes a `Table` (see `fastgate.config.schema`), asks for its keys, and
returns the section's dataclass built from the values that passed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from fastgate.config.model import (
    AdminConfig,
    CacheConfig,
    DatabaseConfig,
    LoggingConfig,
    RateLimitConfig,
    RoutingConfig,
    ServerConfig,
    WebhooksConfig,
)
from fastgate.config.schema import (
    BACKENDS,
    DB_PREFIXES,
    LOG_LEVELS,
    REDIS_PREFIXES,
    ROUTING_STRATEGIES,
    WEBHOOK_EVENTS,
    Problems,
    Table,
    join_key,
    quote_list,
    resolve_path,
    type_name,
)

__all__ = [
    "parse_admin",
    "parse_aliases",
    "parse_cache",
    "parse_database",
    "parse_logging",
    "parse_ratelimit",
    "parse_routing",
    "parse_server",
    "parse_webhooks",
]


def parse_server(t: Table) -> ServerConfig:
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
        "body_timeout",
        "keepalive_timeout",
        "drain_timeout",
    ):
        t.number(key, gt=0)
    t.integer("upstream_max_connections", lo=1)
    t.number("upstream_keepalive", gt=0)
    t.finish()
    return ServerConfig(**t.kw)


def parse_admin(t: Table) -> AdminConfig:
    t.string("host", nonempty=True)
    t.integer("port", lo=0, hi=65535)
    t.secret("token")
    t.string("token_env", env_name=True)
    t.finish()
    return AdminConfig(**t.kw)


def service_dir(name: str) -> Path | None:
    """systemd's `$STATE_DIRECTORY` / `$LOGS_DIRECTORY` (the first, if several):
    where the database, the spool and the access log go when the file does not
    say, so that a service with ProtectSystem=strict writes nothing beside its
    config in /etc."""
    value = os.environ.get(name, "").split(":")[0]
    return Path(value) if value.startswith("/") else None


def parse_database(t: Table, base: Path) -> DatabaseConfig:
    url = t.string("url", store=False)
    if not t.has("url"):
        url = ""
    if url is not None:
        if url == "":
            home = service_dir("STATE_DIRECTORY") or base
            t.kw["url"] = "sqlite:///" + str(home / "fastgate.db")
        elif url.startswith("sqlite:///"):
            rest = url[len("sqlite:///") :]
            if not rest:
                t.error("url", "needs a file path, e.g. sqlite:///fastgate.db")
            elif rest == ":memory:":
                t.kw["url"] = url
            else:
                t.kw["url"] = "sqlite:///" + resolve_path(base, rest)
        elif url.startswith(("postgresql://", "postgres://")):
            t.kw["url"] = url
        else:
            # The URL itself is not echoed: it may carry a password.
            t.error("url", f"must start with {quote_list(DB_PREFIXES)}")
    t.number("refresh_interval", gt=0)
    t.finish()
    return DatabaseConfig(**t.kw)


def parse_routing(t: Table) -> RoutingConfig:
    t.integer("max_attempts", lo=1)
    t.integer("breaker_failures", lo=1)
    t.number("breaker_cooldown", gt=0)
    t.string("strategy", choices=ROUTING_STRATEGIES)
    t.finish()
    return RoutingConfig(**t.kw)


def _redis_url(t: Table) -> None:
    url = t.string("redis_url", nonempty=True, store=False)
    if url is None:
        return
    if not url.startswith(REDIS_PREFIXES):
        t.error("redis_url", f"must start with {quote_list(REDIS_PREFIXES)}")
        return
    t.kw["redis_url"] = url


def parse_ratelimit(t: Table) -> RateLimitConfig:
    t.string("backend", choices=BACKENDS)
    _redis_url(t)
    t.string("key_prefix")
    t.string("on_redis_error", choices=("open", "closed"))
    t.finish()
    return RateLimitConfig(**t.kw)


def parse_cache(t: Table) -> CacheConfig:
    t.boolean("enabled")
    t.string("backend", choices=BACKENDS)
    t.number("ttl", gt=0)
    t.integer("max_entries", lo=1)
    t.integer("max_entry_bytes", lo=1)
    _redis_url(t)
    t.string("key_prefix")
    t.finish()
    return CacheConfig(**t.kw)


def parse_logging(t: Table, base: Path) -> LoggingConfig:
    access = t.string("access_log", store=False)
    if access:
        t.kw["access_log"] = access if access == "-" else resolve_path(base, access)
    elif not t.has("access_log") and (logs := service_dir("LOGS_DIRECTORY")):
        t.kw["access_log"] = str(logs / "access.log")
    spool = t.string("usage_spool_dir", store=False)
    if spool:
        t.kw["usage_spool_dir"] = resolve_path(base, spool)
    elif state := service_dir("STATE_DIRECTORY"):  # "" is the default too
        t.kw["usage_spool_dir"] = str(state / "usage-spool")
    level = t.string("level", store=False)
    if level is not None:
        if level.lower() in LOG_LEVELS:
            t.kw["level"] = level.lower()
        else:
            t.error("level", f'must be one of {quote_list(LOG_LEVELS)}; got "{level}"')
    t.string("format", choices=("text", "json"))
    t.finish()
    return LoggingConfig(**t.kw)


def parse_webhooks(t: Table) -> WebhooksConfig:
    url = t.string("url", required=bool(t.data), nonempty=True, store=False)
    if url is not None:
        if url.startswith(("http://", "https://")) and len(url.split("/", 3)[2]) > 0:
            t.kw["url"] = url
        else:
            # The URL itself is not echoed: webhook URLs often carry a token.
            t.error(
                "url", 'must be an http:// or https:// URL, e.g. "https://hooks.example.com/fg"'
            )
    events = t.str_list("events", nonempty=True, store=False)
    if events is not None:
        bad = [e for e in events if e not in WEBHOOK_EVENTS]
        for e in bad:
            where = f"{t.at('events')}[{events.index(e)}]"
            close = difflib.get_close_matches(e, WEBHOOK_EVENTS, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            t.probs.add(
                where, f'unknown event "{e}"{hint}; the events are {quote_list(WEBHOOK_EVENTS)}'
            )
        if not bad:
            t.kw["events"] = events
    t.string("secret_env", env_name=True)
    t.number("timeout", gt=0)
    t.integer("max_attempts", lo=1, hi=20)
    t.integer("max_per_minute", lo=1)
    t.integer("queue_size", lo=1)
    t.string("instance")
    t.finish()
    return WebhooksConfig(**t.kw)


def parse_aliases(probs: Problems, data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for alias, target in data.items():
        where = join_key("aliases", alias)
        if not alias.strip():
            probs.add(where, "alias name must not be empty")
        elif not isinstance(target, str):
            probs.add(where, f"expected string, got {type_name(target)}")
        elif not target.strip():
            probs.add(where, "must not be empty")
        elif target == alias:
            probs.add(where, "alias maps to itself")
        else:
            out[alias] = target
    return out
