"""What the CLI prints for each kind of entry, declared once, and the generic
`list` / `show` commands that print it.

A `View` names a control-plane kind and the columns of its table; adding a
column or a kind is an edit here, never a new printer. The usage and model
discovery reports are tables too and are described the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastgate.cli.render import Column, Row, View, dec, rfc3339, show, usd

if TYPE_CHECKING:
    from fastgate.cli.session import Handler, Session


def _name(e: Row) -> str:
    return e["name"] + (" (shadowed)" if e.get("shadowed") else "")


# --------------------------------------------------------------------------- tokens


def _quota(t: Row) -> str:
    q = t.get("quota_micros", -1)
    return "unlimited" if q is None or q < 0 else usd(q)


def _limits(t: Row) -> str:
    parts = [f"{k}={t[k]}" for k in ("rpm", "tpm", "max_concurrency") if t.get(k)]
    return ",".join(parts) or "-"


def budget_text(e: Row) -> str:
    """ "$spent / $budget per period (current period)", or "none"."""
    period = e.get("budget_period") or ""
    budget_usd = e.get("budget_usd")
    if not period or budget_usd is None or budget_usd < 0:
        return "none"
    budget = round(float(e["budget_usd"]) * 1_000_000)
    spent = int(e.get("budget_spent_micros") or 0)
    start = e.get("budget_period_start") or ""
    return f"${usd(spent)} / ${usd(budget)} per {period}" + (f" ({start})" if start else "")


def _budget_line(e: Row) -> str:
    return "budget: " + budget_text(e)


TOKEN = View(
    "token",
    (
        Column("ID", lambda t: show(t["id"]), right=True),
        Column("NAME", _name),
        Column("SOURCE", lambda t: t["source"]),
        Column("GROUP", lambda t: t["group"]),
        Column("ENABLED", lambda t: show(t["enabled"])),
        Column("QUOTA_USD", _quota, right=True),
        Column("USED_USD", lambda t: usd(t.get("quota_used_micros") or 0), right=True),
        Column("EXPIRES", lambda t: t.get("expires_at") or "never"),
        Column("MODELS", lambda t: show(t.get("models") or [])),
        Column("LIMITS", _limits),
        Column("BUDGET", budget_text),
    ),
    summary=_budget_line,
)


GROUP = View(
    "group",
    (
        Column("ID", lambda g: show(g["id"]), right=True),
        Column("NAME", _name),
        Column("SOURCE", lambda g: g["source"]),
        Column("RATIO", lambda g: g.get("ratio", 1.0), right=True),
        Column("BUDGET", budget_text),
    ),
    summary=_budget_line,
)


# --------------------------------------------------------------------------- channels


def _key_text(c: Row) -> str:
    if c.get("api_key_set"):
        return "stored" if c.get("source") == "store" else "in file"
    if c.get("api_key_env"):
        return "env:" + c["api_key_env"]
    return "-"


CHANNEL = View(
    "channel",
    (
        Column("ID", lambda c: show(c["id"]), right=True),
        Column("NAME", _name),
        Column("SOURCE", lambda c: c["source"]),
        Column("TYPE", lambda c: c["type"]),
        Column("ENABLED", lambda c: show(c.get("enabled", True))),
        Column("PRIORITY", lambda c: c.get("priority", 0), right=True),
        Column("WEIGHT", lambda c: c.get("weight", 1), right=True),
        Column("MODELS", lambda c: show(c.get("models") or [])),
        Column("KEY", _key_text),
        Column("BASE_URL", lambda c: c.get("base_url") or "-"),
    ),
)


# --------------------------------------------------------------------------- prices

MONEY = ("input", "output", "cache_read", "cache_write")


def _money(field: str) -> Column:
    return Column(field.upper(), lambda p: dec(p.get(field)), right=True)


PRICE = View(
    "price",
    (
        Column("MODEL", lambda p: p["model"]),
        Column("SOURCE", lambda p: p["source"]),
        *(_money(m) for m in MONEY),
        Column("ALIAS_OF", lambda p: p.get("alias_of") or "-"),
    ),
    show_as_row=True,
)


# `price missing`: one row per model with no price (routed, or seen unpriced).
MISSING_PRICES = (
    Column("MODEL", lambda m: m["model"]),
    Column("ROUTED", lambda m: show(m["routed"])),
    Column("PRICED_NOW", lambda m: show(m["priced"])),
    Column("UNPRICED_REQUESTS", lambda m: str(m["unpriced_requests"]), right=True),
    Column("LAST_SEEN", lambda m: rfc3339(m["last_seen"]) if m["last_seen"] else "-"),
)


# --------------------------------------------------------------------------- reports

# `channel models`: one row per model the upstream lists.
MODELS = (
    Column("MODEL", lambda m: m["id"]),
    Column("IN_CHANNEL", lambda m: show(m["in_channel"])),
    Column("SERVED_AS", lambda m: show(m["served_as"])),
)

USAGE_COUNTS = (
    ("REQUESTS", "requests"),
    ("ERRORS", "errors"),
    ("PROMPT", "prompt_tokens"),
    ("COMPLETION", "completion_tokens"),
    ("CACHED", "cached_tokens"),
)


def usage_columns(group_by: str | None) -> tuple[Column, ...]:
    """`usage --by X`: the group's column, the counters and the cost."""

    def label(r: Row) -> Any:
        return (r.get(group_by) or "(none)") if group_by else "all"

    def count(field: str) -> Callable[[Row], Any]:
        return lambda r: r[field]

    return (
        Column((group_by or "total").upper(), label),
        *(Column(h, count(f), right=True) for h, f in USAGE_COUNTS),
        Column("COST_USD", lambda r: usd(r["cost_micros"]), right=True),
    )


# --------------------------------------------------------------------------- generic commands


def list_command(view: View) -> Handler:
    """`<kind> list`: every entry (file and store), as the view's table or JSON."""

    async def list_entries(s: Session, a: argparse.Namespace) -> int:
        s.out.listing(view, await s.plane.list(view.kind))
        return 0

    return list_entries


def show_command(view: View, ref: str = "ref") -> Handler:
    """`<kind> show REF`: one entry, named by the argument `ref`, as the view shows it."""

    async def show_entry(s: Session, a: argparse.Namespace) -> int:
        s.out.entry(view, await s.plane.get(view.kind, getattr(a, ref)))
        return 0

    return show_entry
