"""The `fastgate` command (`[project.scripts]` and `python -m fastgate`).

Layout: `parser` declares every command and option; `serve` runs the gateway and
checks configs; the store commands (token, channel, price, usage, migrate) are
one module per family and run inside `session.run`, which opens the store and
maps errors to exit codes; what they print is declared once per entry kind in
`views` and rendered by `render`. Nothing is imported or done at import time:
`fastgate --help` and the gateway's start-up pay only for what they use.

Exit codes (README "Exit codes"), the same for every command:

- 0 ok (`serve`: also a stop by SIGTERM/SIGINT once it is serving);
- 1 refused or failed at run time (an unknown name, a read-only file entry, a
  failed probe, an address that cannot be bound, an OS error such as
  permission denied);
- 2 the input is wrong: a usage error (bad or missing arguments, a bad flag
  value) or a config file that is missing, unreadable or invalid — retrying
  will not help until a person fixes it;
- 3 something the command needs cannot be reached (the database; for
  `channel models`, the upstream) — it may work later;
- 70 an unexpected exception: a bug in fastgate, printed with its traceback;
- 130 interrupted (Ctrl-C before `serve` is serving, or during any other
  command), nothing printed;
- 141 stdout was closed early (`fastgate token list | head -1`).

Expected failures print one line (or a header and one line per problem) on
stderr starting with "fastgate: " or, for usage errors, argparse's
"usage: fastgate COMMAND ..." and "fastgate COMMAND: error: ...".
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_PIPE", "main", "package_version"]

EXIT_BUG, EXIT_INTERRUPTED, EXIT_PIPE = 70, 130, 141


def package_version() -> str:
    """The installed distribution's version, else `fastgate.__version__` (a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastgate")
    except PackageNotFoundError:
        from fastgate import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit code.

    Expected failures are turned into a message and an exit code here or in
    the command (`session.run` for the store commands); anything else is a
    bug and keeps its traceback.
    """
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except OSError as exc:
        _say(_os_error(exc))
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        _say(
            f"unexpected error ({type(exc).__name__}): this is a bug in fastgate; "
            "please report it with the traceback above"
        )
        return EXIT_BUG


def _main(argv: list[str] | None) -> int:
    from fastgate.cli.parser import build_parser

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    leaf = leaf_parser(parser, args)
    if extra:
        # argparse reports these on the top parser; the command's own usage helps more.
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    args.parser = leaf
    return int(args.main(args) or 0)


def leaf_parser(parser: Any, args: Any) -> Any:
    """The sub-parser of the command that was parsed (`fastgate token create`'s own)."""
    import argparse

    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if sub is None or name not in sub.choices:
            return parser
        parser = sub.choices[name]


def _os_error(exc: OSError) -> str:
    """An OSError as one line: what failed and on which file, without the errno noise."""
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        text = f"{exc.filename}: {text}"
    return text


def _say(text: str) -> None:
    try:
        print(f"fastgate: {text}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
