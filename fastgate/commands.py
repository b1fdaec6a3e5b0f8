"""CLI subcommands that work on the configured store: token, channel, price, usage, migrate.

Each command finds `[database]` through `--config FILE` (default: ./fastgate.toml
if it exists, else ./config.example.toml), opens the store, does one thing
through `fastgate.admin.ControlPlane` (the same rules as the admin API: config
file entries are listed but read-only) and closes it.

Output: aligned human tables by default, `--json` for machines. Errors go to
stderr. Exit codes: 0 ok; 1 the operation was refused (unknown name, name
taken, invalid value, read-only file entry, failed probe, missing
FASTGATE_SECRET_KEY); 2 usage error (bad arguments, config file missing or
invalid); 3 the database (for `channel models`: the upstream) cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["COMMANDS", "add_subcommands", "default_config_path", "run"]

COMMANDS = ("token", "channel", "price", "usage", "migrate")

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


class Refused(Exception):
    """The operation did not succeed for a reason the user can act on (exit 1)."""


class DatabaseUnreachable(Exception):
    """The store cannot be opened or stopped answering (exit 3)."""


def default_config_path() -> str:
    """./fastgate.toml when present, else ./config.example.toml."""
    return "fastgate.toml" if os.path.exists("fastgate.toml") else "config.example.toml"


# --------------------------------------------------------------------------- argument parsing


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: a value given at any level survives (argparse sub-parsers would
    # otherwise overwrite it with their default).
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        "-c",
        default=argparse.SUPPRESS,
        help="TOML config file (default: ./fastgate.toml, else ./config.example.toml)",
    )
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return p


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_subcommands(sub: Any) -> None:
    """Add token, channel, price, usage and migrate to the `fastgate` sub-parsers."""
    common = _common()

    def leaf(parent: Any, name: str, func: Callable[..., Any], help: str) -> Any:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    # token
    tok = sub.add_parser("token", parents=[common], help="manage API keys in the store")
    ts = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(ts, "create", _token_create, "create a key (the plaintext key is shown once)")
    p.add_argument("name")
    p.add_argument("--group", help='token group (default "default")')
    p.add_argument("--quota-usd", type=float, help="spend limit in USD (-1 = unlimited)")
    p.add_argument("--expires-at", help="RFC 3339 time, e.g. 2030-12-31T23:59:59Z")
    p.add_argument("--models", type=_csv, help="allow-list, comma separated")
    p.add_argument("--rpm", type=int, help="requests per minute (0 = unlimited)")
    p.add_argument("--tpm", type=int, help="tokens per minute (0 = unlimited)")
    p.add_argument("--max-concurrency", type=int, help="requests in flight (0 = unlimited)")
    leaf(ts, "list", _token_list, "list keys (file and store)")
    p = leaf(ts, "show", _shower("token"), "show one key")
    p.add_argument("ref", metavar="NAME|ID")
    p = leaf(ts, "revoke", _token_revoke, "disable a key (or delete it with --delete)")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--delete", action="store_true", help="delete the key instead of disabling it")

    # channel
    ch = sub.add_parser("channel", parents=[common], help="manage upstream channels in the store")
    cs = ch.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(cs, "add", _channel_add, "add a channel")
    p.add_argument("name")
    p.add_argument("--type", required=True, help="openai, azure, anthropic, gemini, ..., mock")
    p.add_argument("--base-url", help="origin + optional prefix (not needed for mock)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help='provider key, encrypted at rest ("-" reads it from stdin)')
    key.add_argument("--api-key-env", help="environment variable holding the provider key")
    p.add_argument("--models", type=_csv, help="models served, comma separated")
    p.add_argument("--priority", type=int, help="higher is tried first (default 0)")
    p.add_argument("--weight", type=int, help="weighted random within a priority (default 1)")
    p.add_argument("--groups", type=_csv, help='token groups served (default "default")')
    p.add_argument("--disabled", action="store_true", help="add it disabled")
    leaf(cs, "list", _channel_list, "list channels (file and store)")
    p = leaf(cs, "show", _shower("channel"), "show one channel")
    p.add_argument("ref", metavar="NAME|ID")
    for action, enabled in (("enable", True), ("disable", False)):
        p = leaf(cs, action, _channel_enable, f"{action} a channel")
        p.add_argument("ref", metavar="NAME|ID")
        p.set_defaults(enabled=enabled)
    p = leaf(cs, "delete", _channel_delete, "delete a channel from the store")
    p.add_argument("ref", metavar="NAME|ID")
    p = leaf(cs, "test", _channel_test, "send a one-token probe through a channel")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--model", help="model to probe (default: the channel's first)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    p = leaf(cs, "models", _channel_models, "list the models the channel's upstream offers")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")

    # price
    pr = sub.add_parser("price", parents=[common], help="manage model prices (USD per 1M tokens)")
    ps = pr.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(ps, "set", _price_set, "create or replace a model's price")
    p.add_argument("model")
    p.add_argument("--input", type=float, help="USD per 1M input tokens")
    p.add_argument("--output", type=float, help="USD per 1M output tokens")
    p.add_argument("--cache-read", type=float, help="USD per 1M cache-read tokens")
    p.add_argument("--cache-write", type=float, help="USD per 1M cache-write tokens")
    p.add_argument("--alias", metavar="OTHER", help="share OTHER's price instead")
    p = leaf(ps, "get", _price_get, "show a model's price")
    p.add_argument("model")
    leaf(ps, "list", _price_list, "list prices (file and store)")
    p = leaf(ps, "delete", _price_delete, "delete a store price")
    p.add_argument("model")
    p = leaf(ps, "sync", _price_sync, "import LiteLLM's model_prices_and_context_window.json")
    p.add_argument("source", metavar="FILE|URL")
    p.add_argument(
        "--provider", type=_csv, help="only these litellm_provider values, comma separated"
    )

    # usage
    p = sub.add_parser(
        "usage", parents=[common], help="usage totals from the store", description="usage totals"
    )
    p.set_defaults(func=_usage)
    p.add_argument(
        "--by",
        choices=("key", "model", "channel", "tag", "day", "total"),
        default="key",
        help="group rows by (default key)",
    )
    p.add_argument("--since", help="7d, 24h, 30m, RFC 3339, or unix seconds")
    p.add_argument("--until", help="same forms as --since")
    p.add_argument("--tag", help="only requests with this x-fastgate-tag")
    p.add_argument("--key", help="only this key name")

    # migrate
    p = sub.add_parser(
        "migrate", parents=[common], help="apply database migrations", description="migrate"
    )
    p.set_defaults(func=_migrate)


# --------------------------------------------------------------------------- output


class Out:
    """Where a command writes: a human table/lines, or one JSON document."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def doc(self, obj: Any) -> None:
        import orjson

        sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")

    def line(self, text: str = "") -> None:
        print(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], right: str = "") -> None:
        """Aligned columns; columns whose header is in `right` are right-aligned."""
        cells = [[str(h) for h in headers]] + [
            ["" if c is None else str(c) for c in r] for r in rows
        ]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        aligned = {i for i, h in enumerate(headers) if h in right.split(",")}
        for r in cells:
            parts = [
                c.rjust(widths[i]) if i in aligned else c.ljust(widths[i]) for i, c in enumerate(r)
            ]
            print("  ".join(parts).rstrip())

    def pairs(self, entry: dict[str, Any]) -> None:
        """One entry as "key  value" lines: identity first, times as RFC 3339."""
        first = ("id", "name", "model", "source", "read_only", "shadowed")
        keys = [k for k in first if k in entry] + [k for k in entry if k not in first]
        width = max((len(k) for k in keys), default=0)
        for k in keys:
            v = entry[k]
            if k in ("created_at", "updated_at") and isinstance(v, int | float):
                v = _rfc3339(v)
            print(f"{k.ljust(width)}  {_show(v)}")


def warn(text: str) -> None:
    print(f"fastgate: {text}", file=sys.stderr)


def _show(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ",".join(_show(x) for x in v) if v else "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={_show(x)}" for k, x in v.items()) if v else "-"
    if isinstance(v, float):
        return _dec(v)
    return str(v)


def _rfc3339(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dec(x: float | None) -> str:
    """A float as plain decimal text (2.5, 0.00015), no exponent."""
    if x is None:
        return "-"
    d = Decimal(repr(float(x)))
    text = format(d.normalize(), "f")
    return text if text not in ("-0",) else "0"


def usd(micros: int) -> str:
    """Integer micro-dollars as USD text, exact (1234567 -> 1.234567)."""
    sign = "-" if micros < 0 else ""
    m = abs(int(micros))
    whole, frac = divmod(m, 1_000_000)
    text = f"{frac:06d}".rstrip("0")
    return f"{sign}{whole}.{text.ljust(2, '0')}"


# --------------------------------------------------------------------------- running


class Session:
    """One command's store + control plane + output."""

    def __init__(self, cfg: Any, store: Any, out: Out) -> None:
        from fastgate.admin import ControlPlane

        self.cfg = cfg
        self.store = store
        self.out = out
        self.plane = ControlPlane(store, lambda: cfg)


def run(args: argparse.Namespace) -> int:
    """Run a subcommand added by add_subcommands; returns the exit code."""
    func = getattr(args, "func", None)
    if func is None:
        warn(f"unknown command {getattr(args, 'command', '')!r}")
        return EXIT_USAGE
    from fastgate.config import ConfigError, load_config
    from fastgate.store.base import Conflict, InvalidEntry, NotFound, StoreError, store_for
    from fastgate.store.secrets import SecretKeyInvalid, SecretKeyMissing

    path = getattr(args, "config", None) or default_config_path()
    out = Out(bool(getattr(args, "json", False)))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        warn(f"config {path}:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if not getattr(args, "config", None):
            print("  (pass --config FILE to use another file)", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = store_for(cfg.database)
        store.start(migrate=func is not _migrate)
    except SecretKeyInvalid as exc:
        warn(str(exc))
        return EXIT_REFUSED
    except Exception as exc:
        warn(f"cannot open the database ({_where(cfg)}): {exc or exc.__class__.__name__}")
        return EXIT_DATABASE
    try:
        return asyncio.run(func(Session(cfg, store, out), args)) or EXIT_OK
    except UsageError as exc:
        warn(str(exc))
        return EXIT_USAGE
    except InvalidEntry as exc:
        warn("invalid value:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_REFUSED
    except (NotFound, Conflict, Refused, SecretKeyMissing, SecretKeyInvalid) as exc:
        warn(str(exc))
        return EXIT_REFUSED
    except (StoreError, OSError, TimeoutError) as exc:
        warn(f"database error ({_where(cfg)}): {exc or exc.__class__.__name__}")
        return EXIT_DATABASE
    except Exception as exc:
        if type(exc).__module__.startswith(("asyncpg", "sqlite3")):
            warn(f"database error ({_where(cfg)}): {exc}")
            return EXIT_DATABASE
        raise
    finally:
        store.stop()


def _where(cfg: Any) -> str:
    db = cfg.database
    if db.is_postgres:
        from fastgate.store.postgres import redact_url

        return redact_url(db.url)
    return db.sqlite_path or "fastgate.db"


Handler = Callable[[Session, argparse.Namespace], Awaitable[int | None]]


# --------------------------------------------------------------------------- tokens


def _limits(t: dict[str, Any]) -> str:
    parts = [f"{k}={t[k]}" for k in ("rpm", "tpm", "max_concurrency") if t.get(k)]
    return ",".join(parts) or "-"


def _quota(t: dict[str, Any]) -> str:
    q = t.get("quota_micros", -1)
    return "unlimited" if q is None or q < 0 else usd(q)


async def _token_create(s: Session, a: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": a.name}
    for field in ("group", "quota_usd", "expires_at", "models", "rpm", "tpm", "max_concurrency"):
        v = getattr(a, field)
        if v is not None:
            spec[field] = v
    tok = await s.plane.create("token", spec)
    print(
        "WARNING: this is the only time the key is shown; store it now (only its SHA-256 is kept).",
        file=sys.stderr,
    )
    if s.out.json:
        s.out.doc(tok)
        return 0
    s.out.line(f'token "{tok["name"]}" created (id {tok["id"]}, group {tok["group"]})')
    s.out.line(f"key: {tok['key']}")
    return 0


async def _token_list(s: Session, a: argparse.Namespace) -> int:
    rows = await s.plane.list("token")
    if s.out.json:
        s.out.doc(rows)
        return 0
    s.out.table(
        [
            "ID",
            "NAME",
            "SOURCE",
            "GROUP",
            "ENABLED",
            "QUOTA_USD",
            "USED_USD",
            "EXPIRES",
            "MODELS",
            "LIMITS",
        ],
        [
            [
                _show(t["id"]),
                t["name"] + (" (shadowed)" if t.get("shadowed") else ""),
                t["source"],
                t["group"],
                _show(t["enabled"]),
                _quota(t),
                usd(t.get("quota_used_micros") or 0),
                t.get("expires_at") or "never",
                _show(t.get("models") or []),
                _limits(t),
            ]
            for t in rows
        ],
        right="ID,QUOTA_USD,USED_USD",
    )
    return 0


def _shower(kind: str) -> Handler:
    """`<kind> show REF`: one entry, as key/value lines or JSON."""

    async def show(s: Session, a: argparse.Namespace) -> int:
        entry = await s.plane.get(kind, a.ref)
        if s.out.json:
            s.out.doc(entry)
        else:
            s.out.pairs(entry)
        return 0

    return show


async def _token_revoke(s: Session, a: argparse.Namespace) -> int:
    if a.delete:
        t = await s.plane.delete("token", a.ref)
        what = "deleted"
    else:
        t = await s.plane.update("token", a.ref, {"enabled": False})
        what = "disabled"
    if s.out.json:
        s.out.doc(t)
    else:
        s.out.line(f'token "{t["name"]}" {what}')
    return 0


# --------------------------------------------------------------------------- channels


def _key_text(c: dict[str, Any]) -> str:
    if c.get("api_key_set"):
        return "stored" if c.get("source") == "store" else "in file"
    if c.get("api_key_env"):
        return "env:" + c["api_key_env"]
    return "-"


async def _channel_add(s: Session, a: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": a.name, "type": a.type}
    if a.base_url is not None:
        spec["base_url"] = a.base_url
    if a.api_key is not None:
        key = sys.stdin.readline().strip() if a.api_key == "-" else a.api_key
        if not key:
            raise UsageError("--api-key: empty key")
        spec["api_key"] = key
    if a.api_key_env is not None:
        spec["api_key_env"] = a.api_key_env
    for field in ("models", "priority", "weight", "groups"):
        v = getattr(a, field)
        if v is not None:
            spec[field] = v
    if a.disabled:
        spec["enabled"] = False
    c = await s.plane.create("channel", spec)
    if s.out.json:
        s.out.doc(c)
    else:
        s.out.line(f'channel "{c["name"]}" added (id {c["id"]}, type {c["type"]})')
    return 0


async def _channel_list(s: Session, a: argparse.Namespace) -> int:
    rows = await s.plane.list("channel")
    if s.out.json:
        s.out.doc(rows)
        return 0
    s.out.table(
        [
            "ID",
            "NAME",
            "SOURCE",
            "TYPE",
            "ENABLED",
            "PRIORITY",
            "WEIGHT",
            "MODELS",
            "KEY",
            "BASE_URL",
        ],
        [
            [
                _show(c["id"]),
                c["name"] + (" (shadowed)" if c.get("shadowed") else ""),
                c["source"],
                c["type"],
                _show(c.get("enabled", True)),
                c.get("priority", 0),
                c.get("weight", 1),
                _show(c.get("models") or []),
                _key_text(c),
                c.get("base_url") or "-",
            ]
            for c in rows
        ],
        right="ID,PRIORITY,WEIGHT",
    )
    return 0


async def _channel_enable(s: Session, a: argparse.Namespace) -> int:
    c = await s.plane.update("channel", a.ref, {"enabled": a.enabled})
    if s.out.json:
        s.out.doc(c)
    else:
        s.out.line(f'channel "{c["name"]}" {"enabled" if a.enabled else "disabled"}')
    return 0


async def _channel_delete(s: Session, a: argparse.Namespace) -> int:
    c = await s.plane.delete("channel", a.ref)
    if s.out.json:
        s.out.doc(c)
    else:
        s.out.line(f'channel "{c["name"]}" deleted')
    return 0


async def _channel_test(s: Session, a: argparse.Namespace) -> int:
    if not 0 < a.timeout <= 600:
        raise UsageError("--timeout: expected seconds between 0 and 600")
    r = await s.plane.test_channel(a.ref, model=a.model, timeout=a.timeout)
    if s.out.json:
        s.out.doc(r)
    elif r["ok"]:
        s.out.line(
            f'ok: channel "{r["channel"]}" model {r["model"]}: status {r["status"]} '
            f"in {r['latency_ms']:.0f} ms"
        )
    else:
        status = f"status {r['status']}: " if r["status"] else ""
        s.out.line(f'FAILED: channel "{r["channel"]}" model {r["model"]}: {status}{r["error"]}')
    return 0 if r["ok"] else EXIT_REFUSED


async def _channel_models(s: Session, a: argparse.Namespace) -> int:
    """Exit 1 when the upstream refuses (its message shown) or the type has no listing,
    3 when it cannot be reached (like an unreachable database: the network, not you)."""
    from fastgate.admin.discovery import (
        DiscoveryError,
        UpstreamError,
        UpstreamUnreachable,
        discover_models,
        models_report,
    )

    if not 0 < a.timeout <= 600:
        raise UsageError("--timeout: expected seconds between 0 and 600")
    ch = await s.plane.channel_config(a.ref)
    try:
        ids = await discover_models(ch, timeout=a.timeout)
    except UpstreamUnreachable as exc:
        warn(f'channel "{ch.name}": {exc}')
        return EXIT_DATABASE
    except UpstreamError as exc:
        status = f"upstream answered {exc.status}: " if exc.status else ""
        warn(f'channel "{ch.name}": {status}{exc.message}')
        return EXIT_REFUSED
    except DiscoveryError as exc:
        warn(f'channel "{ch.name}": {exc}')
        return EXIT_REFUSED
    report = models_report(ch, ids)
    if s.out.json:
        s.out.doc(report)
        return 0
    if not report["data"]:
        s.out.line(f'the upstream of channel "{ch.name}" lists no models')
    else:
        s.out.table(
            ["MODEL", "IN_CHANNEL", "SERVED_AS"],
            [[m["id"], _show(m["in_channel"]), _show(m["served_as"])] for m in report["data"]],
        )
    if report["missing"]:
        names = ", ".join(report["missing"])
        print(f"note: not listed by the upstream: {names}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- prices


_MONEY = ("input", "output", "cache_read", "cache_write")


def _price_row(p: dict[str, Any]) -> list[Any]:
    return [
        p["model"],
        p["source"],
        *(_dec(p.get(m)) if p.get(m) is not None else "-" for m in _MONEY),
        p.get("alias_of") or "-",
    ]


_PRICE_HEADERS = ["MODEL", "SOURCE", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE", "ALIAS_OF"]


async def _price_set(s: Session, a: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"model": a.model}
    given = {m: getattr(a, m) for m in _MONEY if getattr(a, m) is not None}
    if a.alias:
        if given:
            raise UsageError("--alias cannot be combined with --input/--output/--cache-*")
        spec["alias_of"] = a.alias
        known = {p["model"] for p in await s.plane.list("price")}
        if a.alias not in known:
            warn(f'note: "{a.alias}" has no price yet; "{a.model}" costs nothing until it has')
    else:
        if a.input is None or a.output is None:
            raise UsageError("price set needs --input and --output (or --alias OTHER)")
        spec.update(given)
    counts = await s.plane.upsert_prices([spec])
    p = await s.plane.get("price", a.model)
    if s.out.json:
        s.out.doc(p)
    else:
        what = "created" if counts.get("created") else "updated"
        s.out.line(f'price for "{a.model}" {what} (USD per 1M tokens)')
        s.out.table(_PRICE_HEADERS, [_price_row(p)])
    return 0


async def _price_get(s: Session, a: argparse.Namespace) -> int:
    p = await s.plane.get("price", a.model)
    if s.out.json:
        s.out.doc(p)
    else:
        s.out.table(_PRICE_HEADERS, [_price_row(p)])
    return 0


async def _price_list(s: Session, a: argparse.Namespace) -> int:
    rows = await s.plane.list("price")
    if s.out.json:
        s.out.doc(rows)
    else:
        s.out.table(
            _PRICE_HEADERS,
            [_price_row(p) for p in rows],
            right="INPUT,OUTPUT,CACHE_READ,CACHE_WRITE",
        )
    return 0


async def _price_delete(s: Session, a: argparse.Namespace) -> int:
    p = await s.plane.delete("price", a.model)
    if s.out.json:
        s.out.doc(p)
    else:
        s.out.line(f'price for "{p["model"]}" deleted')
    return 0


# LiteLLM field -> our price field; values are USD per token.
LITELLM_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
}


def _per_million(v: Any) -> float | None:
    """USD per token -> USD per 1M tokens, exact in decimal (2.5e-06 -> 2.5)."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        d = Decimal(str(v)) * 1_000_000
    except InvalidOperation:
        return None
    if not d.is_finite() or d < 0:
        return None
    return float(d)


def litellm_prices(
    doc: Any, providers: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Price specs from a LiteLLM model_prices_and_context_window.json document, and
    how many entries were skipped (no input/output cost per token, or filtered out)."""
    if not isinstance(doc, dict):
        raise Refused("the price file must be a JSON object of model -> prices")
    specs: list[dict[str, Any]] = []
    skipped = 0
    for model, entry in doc.items():
        if model == "sample_spec":
            continue
        if not isinstance(entry, dict) or not str(model).strip():
            skipped += 1
            continue
        if providers and entry.get("litellm_provider") not in providers:
            skipped += 1
            continue
        spec: dict[str, Any] = {"model": str(model)}
        for src, dst in LITELLM_FIELDS.items():
            if src in entry:
                v = _per_million(entry[src])
                if v is not None:
                    spec[dst] = v
        if "input" not in spec or "output" not in spec:
            skipped += 1
            continue
        specs.append(spec)
    return specs, skipped


def _read_source(source: str) -> bytes:
    """A local path, or a file:// / http(s):// URL read with urllib."""
    if "://" not in source:
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as exc:
            raise Refused(f"cannot read {source}: {exc.strerror or exc}") from None
    import urllib.error
    import urllib.request

    scheme = source.split("://", 1)[0].lower()
    if scheme not in ("file", "http", "https"):
        raise UsageError(f"unsupported URL scheme {scheme!r}: use a path, file://, http(s)://")
    try:
        req = urllib.request.Request(source, headers={"User-Agent": "fastgate-price-sync"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Refused(f"cannot fetch {source}: {exc}") from None


async def _price_sync(s: Session, a: argparse.Namespace) -> int:
    import orjson

    raw = _read_source(a.source)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"{a.source} is not JSON: {exc}") from None
    specs, skipped = litellm_prices(doc, a.provider)
    file_models = {p.model for p in s.cfg.prices}
    in_file = [sp for sp in specs if sp["model"] in file_models]
    specs = [sp for sp in specs if sp["model"] not in file_models]
    counts = await s.plane.upsert_prices(specs) if specs else {"created": 0, "updated": 0}
    report = {
        "source": a.source,
        "created": counts["created"],
        "updated": counts["updated"],
        "skipped": skipped,
        "skipped_file_entries": len(in_file),
    }
    if s.out.json:
        s.out.doc(report)
    else:
        s.out.line(
            f"{report['created']} created, {report['updated']} updated, "
            f"{skipped} skipped (no per-token input/output cost"
            + (" or another provider" if a.provider else "")
            + f"), {len(in_file)} left to the config file"
        )
    return 0


# --------------------------------------------------------------------------- usage, migrate


async def _usage(s: Session, a: argparse.Namespace) -> int:
    from fastgate.admin import parse_time

    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = getattr(a, name)
        try:
            times[name] = parse_time(text) if text else None
        except ValueError as exc:
            raise UsageError(f"--{name}: {exc}") from None
    group_by = None if a.by == "total" else a.by
    result = await s.plane.usage(
        group_by=group_by, since=times["since"], until=times["until"], tag=a.tag, key_name=a.key
    )
    if s.out.json:
        s.out.doc(result)
        return 0
    label = (group_by or "total").upper()
    cols = ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"]
    headers = [label, "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "CACHED", "COST_USD"]
    rows = [
        [
            (r.get(group_by) or "(none)") if group_by else "all",
            *(r[c] for c in cols),
            usd(r["cost_micros"]),
        ]
        for r in result["data"]
    ]
    if group_by and rows:
        t = result["totals"]
        rows.append(["TOTAL", *(t[c] for c in cols), usd(t["cost_micros"])])
    if not rows:
        s.out.line("no usage recorded in this range")
        return 0
    s.out.table(headers, rows, right="REQUESTS,ERRORS,PROMPT,COMPLETION,CACHED,COST_USD")
    return 0


async def _migrate(s: Session, a: argparse.Namespace) -> int:
    store = s.store
    applied = await store.call(store.migrate())
    version = await store.call(store.schema_version())
    if s.out.json:
        s.out.doc({"applied": applied, "schema_version": version, "backend": store.dialect})
    else:
        s.out.line(
            f"{store.dialect}: applied {applied} migration{'s' if applied != 1 else ''}; "
            f"schema version {version}"
        )
    return 0
