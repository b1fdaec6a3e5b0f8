"""`fastgate systemd-unit`: print the systemd unit that ships in
`fastgate/contrib/fastgate.service` (one source), with ExecStart naming the
fastgate that prints it, so that the printed unit works as it is."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

UNIT_FILE = Path(__file__).resolve().parent.parent / "contrib" / "fastgate.service"
SHIPPED_EXEC = "/usr/local/bin/fastgate"
SHIPPED_CONFIG = "/etc/fastgate/config.toml"
SHIPPED_USER = "fastgate"


def this_fastgate() -> str:
    """The command that runs this fastgate: its console script if that is how it
    was started (or beside this interpreter, in a venv), else `python -m fastgate`."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "fastgate" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside = Path(sys.executable).parent / "fastgate"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return f"{sys.executable} -m fastgate"


def render(executable: str, config: str, user: str) -> str:
    """The shipped unit with its ExecStart program, config path and user replaced."""
    unit = UNIT_FILE.read_text()
    exec_line = f"ExecStart={SHIPPED_EXEC} serve --config {SHIPPED_CONFIG}\n"
    if exec_line not in unit:  # the shipped file and this code disagree
        raise RuntimeError(f"{UNIT_FILE}: no line {exec_line.strip()!r}")
    unit = unit.replace(exec_line, f"ExecStart={executable} serve --config {config}\n")
    return unit.replace(
        f"User={SHIPPED_USER}\nGroup={SHIPPED_USER}\n", f"User={user}\nGroup={user}\n"
    )


def systemd_unit(args: argparse.Namespace) -> int:
    config = os.path.abspath(args.config)
    sys.stdout.write(render(args.executable or this_fastgate(), config, args.user))
    return 0
