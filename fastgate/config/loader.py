"""The loader: a TOML file (or decoded document) -> a validated Config, or a
ConfigError naming every problem by its key path; plus `check-config`.

Cross-entry rules live here (duplicate names, token keys used twice, price
aliases, model aliases that must point at a served model): they need every
section parsed first.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastgate.config.entries import parse_channel, parse_group, parse_price, parse_token
from fastgate.config.model import (
    ChannelConfig,
    Config,
    ConfigError,
    GroupConfig,
    PriceConfig,
    RouterConfig,
    TokenConfig,
)
from fastgate.config.routers import check_routers, parse_router
from fastgate.config.schema import (
    MISSING,
    Problems,
    Table,
    join_key,
    key_part,
    type_name,
    unknown_key,
)
from fastgate.config.sections import (
    parse_admin,
    parse_aliases,
    parse_cache,
    parse_database,
    parse_logging,
    parse_ratelimit,
    parse_routing,
    parse_server,
    parse_webhooks,
)

__all__ = ["check_config_main", "config_warnings", "load_config", "parse_config"]

_TABLE_SECTIONS = (
    "server",
    "admin",
    "database",
    "routing",
    "aliases",
    "ratelimit",
    "cache",
    "webhooks",
)
_SECTIONS = (*_TABLE_SECTIONS, "logging", "channels", "tokens", "prices", "groups", "routers")


def _section(probs: Problems, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = data.get(name, MISSING)
    if v is MISSING:
        return {}
    if not isinstance(v, dict):
        probs.add(name, f"expected table ([{name}]), got {type_name(v)}")
        return {}
    return v


def _array(probs: Problems, data: Mapping[str, Any], name: str) -> list[Table]:
    v = data.get(name, MISSING)
    if v is MISSING:
        return []
    if not isinstance(v, list):
        probs.add(name, f"expected array of tables ([[{name}]]), got {type_name(v)}")
        return []
    tables = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            probs.add(f"{name}[{i}]", f"expected table, got {type_name(item)}")
            continue
        tables.append(Table(probs, f"{name}[{i}]", item))
    return tables


def _duplicates(probs: Problems, entries: list[tuple[str, str]], what: str) -> None:
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
    probs = Problems()
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path.cwd()))

    for name, value in data.items():
        if name not in _SECTIONS:
            is_section = isinstance(value, dict) or (
                isinstance(value, list) and value and all(isinstance(x, dict) for x in value)
            )
            probs.add(
                key_part(name),
                unknown_key(name, list(_SECTIONS), "section" if is_section else "key"),
            )

    def table(name: str) -> Table:
        return Table(probs, name, _section(probs, data, name))

    server = parse_server(table("server"))
    admin = parse_admin(table("admin"))
    if admin.port and admin.port == server.port:
        probs.add("admin.port", f"must differ from server.port ({server.port})")
    database = parse_database(table("database"), base)
    routing = parse_routing(table("routing"))
    aliases = parse_aliases(probs, _section(probs, data, "aliases"))
    ratelimit = parse_ratelimit(table("ratelimit"))
    cache = parse_cache(table("cache"))
    logging = parse_logging(table("logging"), base)
    webhooks = parse_webhooks(table("webhooks"))

    channels: list[ChannelConfig] = []
    served: set[str] = set()
    channel_names: list[tuple[str, str]] = []
    for t in _array(probs, data, "channels"):
        ch, models = parse_channel(t)
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
        tok, key_field = parse_token(t)
        if "name" in t.kw:
            token_names.append((t.at("name"), t.kw["name"]))
        if tok is None:
            continue
        tokens.append(tok)
        if tok.cache and not cache.enabled:
            # Nothing accepted and ignored: a key that asks for the cache needs one.
            probs.add(
                t.at("cache"),
                "the response cache is off: set [cache] enabled = true, or remove this key",
            )
        if tok.sha256 in token_keys:
            probs.add(t.at(key_field), f"same key as {token_keys[tok.sha256]}")
        else:
            token_keys[tok.sha256] = t.path
    _duplicates(probs, token_names, "name")

    prices: list[PriceConfig] = []
    price_paths: dict[str, str] = {}
    price_names: list[tuple[str, str]] = []
    for t in _array(probs, data, "prices"):
        pc = parse_price(t)
        if pc is not None:
            prices.append(pc)
            price_names.append((t.at("model"), pc.model))
            price_paths.setdefault(pc.model, t.path)
    _duplicates(probs, price_names, "model")
    by_model = {pc.model: pc for pc in prices}
    for pc in prices:
        if not pc.alias_of:
            continue
        where = join_key(price_paths[pc.model], "alias_of")
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
        g = parse_group(t)
        if g is not None:
            groups.append(g)
            group_names.append((t.at("name"), g.name))
    _duplicates(probs, group_names, "name")

    for alias, target in aliases.items():
        where = join_key("aliases", alias)
        if target in aliases:
            probs.add(where, f'target "{target}" is itself an alias; aliases cannot chain')
        elif target not in served:
            probs.add(where, f'target "{target}" is not served by any channel')

    routers: list[tuple[str, RouterConfig]] = []
    for t in _array(probs, data, "routers"):
        r = parse_router(t)
        if r is not None:
            routers.append((t.path, r))
    check_routers(probs, routers, served, aliases)

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
        webhooks=webhooks,
        channels=tuple(channels),
        tokens=tuple(tokens),
        prices=tuple(prices),
        groups=tuple(groups),
        routers=tuple(r for _, r in routers),
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
    if cfg.webhooks.url:
        check("webhooks.secret_env", "", cfg.webhooks.secret_env)
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
    """`fastgate check-config FILE`: 0 and an OK line if valid, else 2 (the exit
    code of every command given an invalid config) and one problem per line on
    stderr. Missing environment variables only warn."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 2
    for warning in config_warnings(cfg):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(
        f"OK: {path}: {len(cfg.channels)} channels, {len(cfg.tokens)} tokens, "
        f"{len(cfg.prices)} prices"
    )
    return 0
