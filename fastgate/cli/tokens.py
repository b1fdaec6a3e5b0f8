"""`fastgate token create|revoke`: the actions on API keys (list and show are generic,
see `fastgate.cli.views`). The plaintext key is printed once, at creation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastgate.cli.session import Session

# Options of `token create` passed to the control plane as they are, when given.
CREATE_FIELDS = ("group", "quota_usd", "expires_at", "models", "rpm", "tpm", "max_concurrency")


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
