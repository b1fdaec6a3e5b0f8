"""Versioned schema migrations shipped in the package.

Files are named `NNNN_<name>.<dialect>.sql` (dialect: `sqlite` or `postgres`);
every version exists for both dialects so that both backends always have the
same tables. A migration runs in one transaction together with the row it adds
to `schema_migrations`, so it is applied entirely or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["BOOTSTRAP", "DIALECTS", "Migration", "latest_version", "load_migrations"]

DIALECTS = ("sqlite", "postgres")
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.(sqlite|postgres)\.sql")

# Created before anything else (same text for both dialects).
BOOTSTRAP = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Every migration for `dialect`, in version order; checks there are no gaps."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        m = _NAME.fullmatch(entry.name)
        if m is None or m.group(3) != dialect:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    for i, mig in enumerate(found, start=1):
        if mig.version != i:
            raise RuntimeError(f"{dialect} migrations are not numbered 1..N (found {mig.version})")
    return found


def latest_version(dialect: str = "sqlite") -> int:
    """The schema version this code expects."""
    migs = load_migrations(dialect)
    return migs[-1].version if migs else 0
