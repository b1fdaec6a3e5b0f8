"""The schema: allowed values, and the typed reader every section parser uses.

Why a reader object: each parser asks a `Table` for its keys by type
(`t.integer("port", lo=0, hi=65535)`); the table records a "key.path: message"
problem for anything wrong, remembers which keys were asked for (leftovers are
reported as unknown keys, with a "did you mean" hint) and collects the good
values in `kw`, ready for the dataclass. One pass names every problem.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "BACKENDS",
    "BAD_SECRET_CHARS",
    "BUDGET_PERIODS",
    "CHANNEL_TYPES",
    "DB_PREFIXES",
    "LOG_LEVELS",
    "MISSING",
    "REDIS_PREFIXES",
    "ROUTER_STRATEGIES",
    "ROUTING_STRATEGIES",
    "TIER_MODES",
    "WEBHOOK_EVENTS",
    "Problems",
    "Table",
    "join_key",
    "key_part",
    "quote_list",
    "resolve_path",
    "type_name",
    "unknown_key",
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
BUDGET_PERIODS = ("day", "week", "month")  # UTC; weeks start Monday 00:00 (ISO)
LOG_LEVELS = ("debug", "info", "warning", "error")
TIER_MODES = ("whole", "segmented")
# How candidates are ordered (gateway/strategies.py): a model's channels ([routing]
# strategy), a router's (model, channel) pairs ([[routers]] strategy; "ordered":
# the router's list order).
ROUTING_STRATEGIES = ("priority", "cost", "latency", "local-first")
ROUTER_STRATEGIES = ("ordered", *ROUTING_STRATEGIES)
DB_PREFIXES = ("sqlite:///", "postgresql://", "postgres://")
REDIS_PREFIXES = ("redis://", "rediss://", "unix://")
WEBHOOK_EVENTS = ("channel_down", "channel_up", "unpriced_model", "budget")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BAD_SECRET_CHARS = re.compile(r"[\x00-\x20\x7f]")

MISSING: Any = object()


def type_name(value: object) -> str:
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


def key_part(key: str) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join_key(path: str, key: str) -> str:
    part = key_part(key)
    return f"{path}.{part}" if path else part


def quote_list(items: tuple[str, ...]) -> str:
    return ", ".join(f'"{i}"' for i in items)


def unknown_key(key: str, known: list[str], what: str = "key") -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown {what}{hint}"


class Problems:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


class Table:
    """One TOML table being read: typed getters that record problems and remember
    which keys were read, so that leftovers are reported as unknown keys."""

    def __init__(self, probs: Problems, path: str, data: dict[str, Any]) -> None:
        self.probs = probs
        self.path = path
        self.data = data
        self.kw: dict[str, Any] = {}
        self.known: list[str] = []

    def at(self, key: str) -> str:
        return join_key(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.probs.add(self.at(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, required: bool) -> Any:
        if key not in self.known:
            self.known.append(key)
        if key not in self.data:
            if required:
                self.error(key, "required key is missing")
            return MISSING
        return self.data[key]

    def wrong(self, key: str, expected: str, value: object) -> None:
        self.error(key, f"expected {expected}, got {type_name(value)}")

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
        v = self.take(key, required)
        if v is MISSING:
            return None
        if not isinstance(v, str):
            self.wrong(key, "string", v)
            return None
        if choices is not None and v not in choices:
            self.error(key, f'must be one of {quote_list(choices)}; got "{v}"')
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
        if v and BAD_SECRET_CHARS.search(v):
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
        v = self.take(key, required)
        if v is MISSING:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.wrong(key, "integer", v)
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
        v = self.take(key, False)
        if v is MISSING:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.wrong(key, "number", v)
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
        v = self.take(key, False)
        if v is MISSING:
            return None
        if not isinstance(v, bool):
            self.wrong(key, "boolean", v)
            return None
        self.kw[key] = v
        return v

    def str_list(
        self, key: str, *, required: bool = False, nonempty: bool = False, store: bool = True
    ) -> tuple[str, ...] | None:
        """An array of distinct non-empty strings, as a tuple."""
        v = self.take(key, required)
        if v is MISSING:
            return None
        if not isinstance(v, list):
            self.wrong(key, "array of strings", v)
            return None
        ok = True
        seen: set[str] = set()
        for i, item in enumerate(v):
            where = f"{self.at(key)}[{i}]"
            if not isinstance(item, str):
                self.probs.add(where, f"expected string, got {type_name(item)}")
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
        v = self.take(key, False)
        if v is MISSING:
            return None
        if not isinstance(v, dict):
            self.wrong(key, "table", v)
            return None
        ok = True
        for k, item in v.items():
            where = join_key(self.at(key), k)
            if not k.strip():
                self.probs.add(where, "key must not be empty")
                ok = False
            if not isinstance(item, str):
                self.probs.add(where, f"expected string, got {type_name(item)}")
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
                self.error(key, unknown_key(key, self.known))


def resolve_path(base: Path, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))
