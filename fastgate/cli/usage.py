"""`fastgate usage` (totals from the usage records) and `fastgate migrate`."""

from __future__ import annotations

import argparse

from fastgate.cli.render import table
from fastgate.cli.session import Session, UsageError
from fastgate.cli.views import usage_columns


async def usage(s: Session, a: argparse.Namespace) -> int:
    """Totals grouped by --by, in a --since/--until window; a TOTAL row when grouped."""
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
    rows = list(result["data"])
    if group_by and rows:
        rows.append({**result["totals"], group_by: "TOTAL"})
    if not rows:
        s.out.line("no usage recorded in this range")
        return 0
    table(usage_columns(group_by), rows)
    return 0


async def migrate(s: Session, a: argparse.Namespace) -> int:
    """Apply the pending migrations (the session opened the store without them)."""
    store = s.store
    applied = await store.call(store.migrate())
    version = await store.call(store.schema_version())
    s.out.result(
        {"applied": applied, "schema_version": version, "backend": store.dialect},
        f"{store.dialect}: applied {applied} migration{'s' if applied != 1 else ''}; "
        f"schema version {version}",
    )
    return 0
