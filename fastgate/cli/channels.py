"""`fastgate channel add|enable|disable|delete|test|models`: the actions on upstream
channels (list and show are generic, see `fastgate.cli.views`).

`test` and `models` talk to the upstream: a failed probe or a refused listing is
exit 1, an upstream that cannot be reached is exit 3 (the network, like an
unreachable database, not the user's input).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastgate.cli.render import table, warn
from fastgate.cli.session import EXIT_DATABASE, EXIT_REFUSED, Session, UsageError
from fastgate.cli.views import MODELS

# Options of `channel add` passed to the control plane as they are, when given.
ADD_FIELDS = ("models", "priority", "weight", "groups")


async def add(s: Session, a: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"name": a.name, "type": a.type}
    if a.base_url is not None:
        spec["base_url"] = a.base_url
    if a.api_key is not None:
        key = sys.stdin.readline().strip() if a.api_key == "-" else a.api_key
        if not key:
            raise UsageError("--api-key: empty key")
        spec["api_key"] = key
    if a.api_key_env is not None:
        spec["api_key_env"] = a.api_key_env
    for field in ADD_FIELDS:
        v = getattr(a, field)
        if v is not None:
            spec[field] = v
    if a.disabled:
        spec["enabled"] = False
    c = await s.plane.create("channel", spec)
    s.out.result(c, f'channel "{c["name"]}" added (id {c["id"]}, type {c["type"]})')
    return 0


async def enable(s: Session, a: argparse.Namespace) -> int:
    """`enable` and `disable`: the parser sets `a.enabled`."""
    c = await s.plane.update("channel", a.ref, {"enabled": a.enabled})
    s.out.result(c, f'channel "{c["name"]}" {"enabled" if a.enabled else "disabled"}')
    return 0


async def delete(s: Session, a: argparse.Namespace) -> int:
    c = await s.plane.delete("channel", a.ref)
    s.out.result(c, f'channel "{c["name"]}" deleted')
    return 0


def _check_timeout(a: argparse.Namespace) -> None:
    if not 0 < a.timeout <= 600:
        raise UsageError("--timeout: expected seconds between 0 and 600")


async def test(s: Session, a: argparse.Namespace) -> int:
    """A one-token probe; exit 1 when it fails."""
    _check_timeout(a)
    r = await s.plane.test_channel(a.ref, model=a.model, timeout=a.timeout)
    if s.out.json:
        s.out.doc(r)
    elif r["ok"]:
        s.out.line(
            f'ok: channel "{r["channel"]}" model {r["model"]}: status {r["status"]} '
            f"in {r['latency_ms']:.0f} ms"
        )
    else:
        status = f"status {r['status']}: " if r["status"] else ""
        s.out.line(f'FAILED: channel "{r["channel"]}" model {r["model"]}: {status}{r["error"]}')
    return 0 if r["ok"] else EXIT_REFUSED


async def models(s: Session, a: argparse.Namespace) -> int:
    """Exit 1 when the upstream refuses (its message shown) or the type has no listing,
    3 when it cannot be reached (like an unreachable database: the network, not you)."""
    from fastgate.admin.discovery import (
        DiscoveryError,
        UpstreamError,
        UpstreamUnreachable,
        discover_models,
        models_report,
    )

    _check_timeout(a)
    ch = await s.plane.channel_config(a.ref)
    try:
        ids = await discover_models(ch, timeout=a.timeout)
    except UpstreamUnreachable as exc:
        warn(f'channel "{ch.name}": {exc}')
        return EXIT_DATABASE
    except UpstreamError as exc:
        status = f"upstream answered {exc.status}: " if exc.status else ""
        warn(f'channel "{ch.name}": {status}{exc.message}')
        return EXIT_REFUSED
    except DiscoveryError as exc:
        warn(f'channel "{ch.name}": {exc}')
        return EXIT_REFUSED
    report = models_report(ch, ids)
    if s.out.json:
        s.out.doc(report)
        return 0
    if not report["data"]:
        s.out.line(f'the upstream of channel "{ch.name}" lists no models')
    else:
        table(MODELS, report["data"])
    if report["missing"]:
        names = ", ".join(report["missing"])
        print(f"note: not listed by the upstream: {names}", file=sys.stderr)
    return 0
