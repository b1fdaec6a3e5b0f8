"""`fastgate token create|revoke`: the actions on API keys (list and show are generic,
see `fastgate.cli.views`). The plaintext key is printed once, at creation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastgate.cli.session import Session
from fastgate.cli.views import budget_text

# Options of `token create` passed to the control plane as they are, when given.
CREATE_FIELDS = (
    "group",
    "quota_usd",
    "expires_at",
    "models",
    "rpm",
    "tpm",
    "max_concurrency",
    "budget_usd",
    "budget_period",
)
# Options of `token update` (the same, less nothing: every one can change).
UPDATE_FIELDS = CREATE_FIELDS
GROUP_FIELDS = ("ratio", "budget_usd", "budget_period")


def _given(a: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(a, f) for f in fields if getattr(a, f, None) is not None}


async def create(s: Session, a: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": a.name}
    for field in CREATE_FIELDS:
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


async def update(s: Session, a: argparse.Namespace) -> int:
    """Change what the options name; the others keep their values."""
    patch = _given(a, UPDATE_FIELDS)
    if not patch:
        s.out.line("nothing to change (see fastgate token update --help)")
        return 2
    t = await s.plane.update("token", a.ref, patch)
    s.out.result(t, f'token "{t["name"]}" updated; budget: {budget_text(t)}')
    return 0


async def enable(s: Session, a: argparse.Namespace) -> int:
    """Enable a key that `revoke` disabled."""
    t = await s.plane.update("token", a.ref, {"enabled": True})
    s.out.result(t, f'token "{t["name"]}" enabled')
    return 0


async def group_create(s: Session, a: argparse.Namespace) -> int:
    g = await s.plane.create("group", {"name": a.name, **_given(a, GROUP_FIELDS)})
    s.out.result(g, f'group "{g["name"]}" created (id {g["id"]})')
    return 0


async def group_update(s: Session, a: argparse.Namespace) -> int:
    patch = _given(a, GROUP_FIELDS)
    if not patch:
        s.out.line("nothing to change (see fastgate group update --help)")
        return 2
    g = await s.plane.update("group", a.ref, patch)
    s.out.result(g, f'group "{g["name"]}" updated; budget: {budget_text(g)}')
    return 0


async def group_delete(s: Session, a: argparse.Namespace) -> int:
    g = await s.plane.delete("group", a.ref)
    s.out.result(g, f'group "{g["name"]}" deleted')
    return 0


async def revoke(s: Session, a: argparse.Namespace) -> int:
    """Disable the key, or delete it with --delete."""
    if a.delete:
        t = await s.plane.delete("token", a.ref)
        what = "deleted"
    else:
        t = await s.plane.update("token", a.ref, {"enabled": False})
        what = "disabled"
    s.out.result(t, f'token "{t["name"]}" {what}')
    return 0
