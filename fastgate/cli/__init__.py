"""The `fastgate` command (`[project.scripts]` and `python -m fastgate`).

Layout: `parser` declares every command and option; `serve` runs the gateway and
checks configs; the store commands (token, channel, price, usage, migrate) are
one module per family and run inside `session.run`, which opens the store and
maps errors to exit codes; what they print is declared once per entry kind in
`views` and rendered by `render`. Nothing is imported or done at import time:
`fastgate --help` and the gateway's start-up pay only for what they use.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit code."""
    from fastgate.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    return args.main(args)
