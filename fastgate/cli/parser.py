"""The `fastgate` argument parser: every command, option and help text in one place.

Each leaf parser sets `main` (what `fastgate.cli.main` calls with the parsed
arguments); a store command's leaf also sets `func`, the async handler that
`fastgate.cli.session.run` calls with an open store. Building the parser
imports the command modules, which import only the standard library at module
level: the store, config and server are imported when a command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from fastgate.cli import channels, prices, routers, serve, tokens, unit, usage
from fastgate.cli.runs import add_runs_command
from fastgate.cli.session import run
from fastgate.cli.views import CHANNEL, GROUP, PRICE, TOKEN, list_command, show_command


def build_parser() -> argparse.ArgumentParser:
    """serve, check-config, systemd-unit, and the store commands."""
    p = argparse.ArgumentParser(prog="fastgate", description="A fast LLM API gateway.")
    p.add_argument("--version", action=_Version, help="print fastgate's version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.set_defaults(main=serve.serve)
    s.add_argument("--config", "-c", help=CONFIG_HELP)
    s.add_argument("--host", help="listen address (overrides [server] host)")
    s.add_argument(
        "--port", type=_port, help="listen port, 0 = ephemeral (overrides [server] port)"
    )
    s.add_argument("--workers", type=_positive, help="processes sharing the port (SO_REUSEPORT)")
    s.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS, help="overrides [logging] level"
    )
    s.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="application logs as text or one JSON object per line (overrides [logging] format)",
    )
    c = sub.add_parser("check-config", help="validate a config file")
    c.set_defaults(main=serve.check_config)
    c.add_argument("file")
    u = sub.add_parser(
        "systemd-unit",
        help="print a systemd unit that runs this fastgate",
        description="Print the systemd unit shipped in fastgate/contrib/fastgate.service, "
        "with ExecStart naming this fastgate (README: Run as a service).",
    )
    u.set_defaults(main=unit.systemd_unit)
    u.add_argument("--config", "-c", default=unit.SHIPPED_CONFIG, help="the config file it serves")
    u.add_argument(
        "--exec",
        dest="executable",
        help="the fastgate command in ExecStart (default: the one running now)",
    )
    u.add_argument("--user", default=unit.SHIPPED_USER, help="User= and Group= (default fastgate)")
    add_store_commands(sub)
    v = sub.add_parser("version", help="print fastgate's version", description="Print the version.")
    v.set_defaults(main=_print_version)
    return p


CONFIG_HELP = "TOML config file (default: ./fastgate.toml, else ./config.example.toml)"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _port(text: str) -> int:
    """A TCP port for --port: 0 (ephemeral) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {port}")
    return port


def _positive(text: str) -> int:
    """A count of at least 1 (--workers)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _print_version(args: argparse.Namespace | None = None) -> int:
    from fastgate.cli import package_version

    print(f"fastgate {package_version()}")
    return 0


class _Version(argparse.Action):
    """--version, with the version looked up only when asked for (not at every start)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        _print_version()
        parser.exit()


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: a value given at any level survives (argparse sub-parsers would
    # otherwise overwrite it with their default).
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        "-c",
        default=argparse.SUPPRESS,
        help=CONFIG_HELP,
    )
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return p


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_store_commands(sub: Any) -> None:
    """Add token, channel, price, usage and migrate to the `fastgate` sub-parsers."""
    common = _common()

    def group(name: str, help: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=help)
        p.set_defaults(main=run)
        return p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def leaf(parent: Any, name: str, func: Callable[..., Any], help: str) -> Any:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    def budget_options(p: Any) -> None:
        p.add_argument(
            "--budget-usd", type=float, help="spend allowed per budget period (-1 = no budget)"
        )
        p.add_argument(
            "--budget-period", choices=("day", "week", "month"), help="UTC; weeks start Monday"
        )

    def token_options(p: Any) -> None:
        p.add_argument("--group", help='token group (default "default")')
        p.add_argument("--quota-usd", type=float, help="spend limit in USD (-1 = unlimited)")
        p.add_argument("--expires-at", help="RFC 3339 time, e.g. 2030-12-31T23:59:59Z")
        p.add_argument("--models", type=_csv, help="allow-list, comma separated")
        p.add_argument("--rpm", type=int, help="requests per minute (0 = unlimited)")
        p.add_argument("--tpm", type=int, help="tokens per minute (0 = unlimited)")
        p.add_argument("--max-concurrency", type=int, help="requests in flight (0 = unlimited)")
        budget_options(p)

    # token
    ts = group("token", "manage API keys in the store")
    p = leaf(ts, "create", tokens.create, "create a key (the plaintext key is shown once)")
    p.add_argument("name")
    token_options(p)
    p = leaf(ts, "update", tokens.update, "change a key's quota, budget, limits, group...")
    p.add_argument("ref", metavar="NAME|ID")
    token_options(p)
    p = leaf(ts, "enable", tokens.enable, "enable a key that revoke disabled")
    p.add_argument("ref", metavar="NAME|ID")
    leaf(ts, "list", list_command(TOKEN), "list keys (file and store)")
    p = leaf(ts, "show", show_command(TOKEN), "show one key")
    p.add_argument("ref", metavar="NAME|ID")
    p = leaf(ts, "revoke", tokens.revoke, "disable a key (or delete it with --delete)")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--delete", action="store_true", help="delete the key instead of disabling it")

    # group
    gs = group("group", "manage token groups (price ratio, shared budget) in the store")
    p = leaf(gs, "create", tokens.group_create, "create a group")
    p.add_argument("name")
    p.add_argument("--ratio", type=float, help="multiplies every price (default 1.0)")
    budget_options(p)
    p = leaf(gs, "update", tokens.group_update, "change a group's ratio or budget")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--ratio", type=float, help="multiplies every price")
    budget_options(p)
    leaf(gs, "list", list_command(GROUP), "list groups (file and store), spend vs budget")
    p = leaf(gs, "show", show_command(GROUP), "show one group")
    p.add_argument("ref", metavar="NAME|ID")
    p = leaf(gs, "delete", tokens.group_delete, "delete a store group")
    p.add_argument("ref", metavar="NAME|ID")

    # channel
    cs = group("channel", "manage upstream channels in the store")
    p = leaf(cs, "add", channels.add, "add a channel")
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
    leaf(cs, "list", list_command(CHANNEL), "list channels (file and store)")
    p = leaf(cs, "show", show_command(CHANNEL), "show one channel")
    p.add_argument("ref", metavar="NAME|ID")
    for action, enabled in (("enable", True), ("disable", False)):
        p = leaf(cs, action, channels.enable, f"{action} a channel")
        p.add_argument("ref", metavar="NAME|ID")
        p.set_defaults(enabled=enabled)
    p = leaf(cs, "delete", channels.delete, "delete a channel from the store")
    p.add_argument("ref", metavar="NAME|ID")
    p = leaf(cs, "test", channels.test, "send a one-token probe through a channel")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--model", help="model to probe (default: the channel's first)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    p = leaf(cs, "models", channels.models, "list the models the channel's upstream offers")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")

    # price
    ps = group("price", "manage model prices (USD per 1M tokens)")
    p = leaf(ps, "set", prices.set_price, "create or replace a model's price")
    p.add_argument("model")
    p.add_argument("--input", type=float, help="USD per 1M input tokens")
    p.add_argument("--output", type=float, help="USD per 1M output tokens")
    p.add_argument("--cache-read", type=float, help="USD per 1M cache-read tokens")
    p.add_argument("--cache-write", type=float, help="USD per 1M cache-write tokens")
    p.add_argument("--alias", metavar="OTHER", help="share OTHER's price instead")
    p = leaf(ps, "get", show_command(PRICE, ref="model"), "show a model's price")
    p.add_argument("model")
    leaf(ps, "list", list_command(PRICE), "list prices (file and store)")
    p = leaf(ps, "delete", prices.delete, "delete a store price")
    p.add_argument("model")
    leaf(ps, "missing", prices.missing, "models routed or served with no price")
    p = leaf(ps, "sync", prices.sync, "import LiteLLM's model_prices_and_context_window.json")
    p.add_argument("source", metavar="FILE|URL")
    p.add_argument(
        "--provider", type=_csv, help="only these litellm_provider values, comma separated"
    )

    # router
    rs = group("router", "routers and routing strategies: the current order and why")
    p = leaf(rs, "list", routers.list_routers, "each router's candidate order and why")
    p.add_argument(
        "--models", action="store_true", help="also every model's route ([routing] strategy)"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not ask the running gateway's admin API (EWMA then unknown)",
    )

    # usage
    p = sub.add_parser(
        "usage", parents=[common], help="usage totals from the store", description="usage totals"
    )
    p.set_defaults(main=run, func=usage.usage)
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

    add_runs_command(sub, common, run)  # runs, runs show TAG, runs compare A B

    # migrate
    p = sub.add_parser(
        "migrate", parents=[common], help="apply database migrations", description="migrate"
    )
    p.set_defaults(main=run, func=usage.migrate)
