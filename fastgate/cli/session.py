"""Running a store command: find the config, open the store, run, map errors to exit codes.

Each store command (token, channel, price, usage, migrate) finds `[database]`
through `--config FILE` (default: ./fastgate.toml if it exists, else
./config.example.toml), opens the store, does one thing through
`fastgate.admin.ControlPlane` (the same rules as the admin API: config file
entries are listed but read-only) and closes it. Handlers raise; only `run`
decides what an error means for the exit code, so every command agrees
(the table is in `fastgate.cli`'s docstring and the README's "Exit codes"):

0 ok; 1 the operation was refused (unknown name, name taken, invalid value,
read-only file entry, failed probe, missing FASTGATE_SECRET_KEY); 2 usage error
(bad arguments, config file missing, unreadable or invalid); 3 the database (for
`channel models`: the upstream) cannot be reached. An exception none of these
covers is a bug: it leaves `run` and `fastgate.cli.main` prints its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from fastgate.cli.render import Out, warn

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


class Refused(Exception):
    """The operation did not succeed for a reason the user can act on (exit 1)."""


def default_config_path() -> str:
    """./fastgate.toml when present, else ./config.example.toml."""
    return "fastgate.toml" if os.path.exists("fastgate.toml") else "config.example.toml"


class Session:
    """One command's config, store, control plane and output."""

    def __init__(self, cfg: Any, store: Any, out: Out) -> None:
        from fastgate.admin import ControlPlane

        self.cfg = cfg
        self.store = store
        self.out = out
        self.plane = ControlPlane(store, lambda: cfg)


# A store command: runs with an open session, returns the exit code (None = 0).
Handler = Callable[[Session, argparse.Namespace], Awaitable[int | None]]


def _quiet_on_interrupt(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler for a command. Ctrl-C cancels the command's
    task from the SIGINT handler, which Python runs between two bytecodes: when
    that lands inside a callback that has just checked its future is not done
    (`_sock_connect_cb` as the upstream accepts), the callback's `set_result`
    raises InvalidStateError. Nothing is lost (the command is being stopped),
    so that one is not printed; everything else goes to the default handler."""
    callback = getattr(context.get("handle"), "_callback", None)
    if (
        isinstance(context.get("exception"), asyncio.InvalidStateError)
        and getattr(callback, "__name__", "") == "_sock_connect_cb"
    ):
        return
    loop.default_exception_handler(context)


def run(args: argparse.Namespace) -> int:
    """Run the store command whose handler the parser put in `args.func`; the exit code."""
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
        config_error(path, exc.problems, defaulted=not getattr(args, "config", None))
        return EXIT_USAGE
    try:
        store = store_for(cfg.database)
        # `migrate` applies the migrations itself, and reports how many.
        store.start(migrate=args.command != "migrate")
    except SecretKeyInvalid as exc:
        warn(str(exc))
        return EXIT_REFUSED
    except Exception as exc:
        warn(f"cannot open the database ({_where(cfg)}): {exc or exc.__class__.__name__}")
        return EXIT_DATABASE
    try:
        with asyncio.Runner() as runner:
            runner.get_loop().set_exception_handler(_quiet_on_interrupt)
            return runner.run(func(Session(cfg, store, out), args)) or EXIT_OK
    except UsageError as exc:
        usage_error(args, str(exc))
        return EXIT_USAGE
    except InvalidEntry as exc:
        warn("invalid value:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_REFUSED
    except (NotFound, Conflict, Refused, SecretKeyMissing, SecretKeyInvalid) as exc:
        warn(str(exc))
        return EXIT_REFUSED
    except BrokenPipeError:
        raise  # stdout closed by its reader: `fastgate.cli.main` exits quietly
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


def config_error(path: str, problems: list[str], *, defaulted: bool = False) -> None:
    """A config file that cannot be used: one line for one problem, else a header and
    one indented line per problem; with `defaulted`, a hint that --config exists."""
    hint = " (no --config given: ./fastgate.toml, else ./config.example.toml)" if defaulted else ""
    if len(problems) == 1:
        only = problems[0]
        # "FILE: file not found" already names the file.
        warn(f"{only}{hint}" if only.startswith(f"{path}:") else f"config {path}: {only}{hint}")
        return
    warn(f"config {path}: {len(problems)} problems{hint}:")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def usage_error(args: argparse.Namespace, message: str) -> None:
    """A bad argument found after parsing, shown as argparse shows its own: the
    command's usage, then "fastgate COMMAND: error: MESSAGE"."""
    parser = getattr(args, "parser", None)
    if parser is None:
        warn(message)
        return
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)


def _where(cfg: Any) -> str:
    """The database, for messages: a Postgres URL without its password, or the SQLite path."""
    db = cfg.database
    if db.is_postgres:
        from fastgate.store.postgres import redact_url

        return redact_url(db.url)
    return db.sqlite_path or "fastgate.db"
