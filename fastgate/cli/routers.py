"""`fastgate router list`: each router's (and, with --models, each model's)
candidate order and why — price, EWMA of time to first byte, local flag,
priority.

The latency EWMA lives in the running gateway's workers, so the command first
asks the running gateway's admin API (`GET /admin/routers` on `[admin]` host
and port, with the configured admin token): that is the order worker 0 uses
now. When no admin token is configured, nothing answers there, or with
`--offline`, it builds the order from the config file and the store itself
(the same snapshot code the gateway runs), with every EWMA unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from fastgate.cli.render import Column, Row, dec, show, table, warn
from fastgate.cli.session import Session

ADMIN_TIMEOUT = 2.0  # seconds to wait for the running gateway's admin API


def _admin_report(cfg: Any) -> tuple[dict[str, Any] | None, str]:
    """(report, "") from the running gateway's admin API, or (None, why not)."""
    import urllib.error  # here: `fastgate serve` builds this parser too (README Performance)
    import urllib.request

    token = cfg.admin.resolve_token()
    if not token:
        return None, "no admin token is configured"
    host = cfg.admin.host
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{cfg.admin.port}/admin/routers"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=ADMIN_TIMEOUT) as resp:
            return json.loads(resp.read()), ""
    except urllib.error.HTTPError as exc:
        return None, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return None, f"{url}: {reason}"


async def _config_report(s: Session) -> dict[str, Any]:
    """The order from the config file and the store, as a gateway would build it."""
    from fastgate.gateway.route_report import describe
    from fastgate.snapshot import build_snapshot
    from fastgate.store.base import merge

    state = await s.store.call(s.store.load())
    warnings: list[str] = []
    snap = build_snapshot(merge(s.cfg, state, warnings=warnings))
    return describe(snap, None)


def _level(c: Row) -> int:
    return int(c["level"]) + 1


def _price(c: Row) -> str:
    return "-" if c.get("price_per_1m") is None else dec(c["price_per_1m"])


CANDIDATE = (
    Column("TRY", _level, right=True),
    Column("MODEL", lambda c: c["model"]),
    Column("CHANNEL", lambda c: c["channel"]),
    Column("UPSTREAM", lambda c: c["upstream_model"]),
    Column("PRIORITY", lambda c: c["priority"], right=True),
    Column("LOCAL", lambda c: show(c["local"])),
    Column("USD/1M", _price, right=True),
    Column("EWMA_MS", lambda c: dec(c.get("ewma_ms")), right=True),
    Column("WHY", lambda c: c["why"]),
)


async def list_routers(s: Session, a: argparse.Namespace) -> int:
    report: dict[str, Any] | None = None
    why_not = "--offline"
    if not a.offline:
        report, why_not = await asyncio.to_thread(_admin_report, s.cfg)
    if report is not None:
        report["source"] = "gateway"
    else:
        report = await _config_report(s)
        report["source"] = "config"
    if not a.models:
        report.pop("models", None)
    if s.out.json:
        s.out.doc(report)
        return 0
    if report["source"] == "gateway":
        s.out.line(
            f"order now, as worker {report.get('worker')} (pid {report.get('pid')}) "
            "of the running gateway measures it"
        )
    else:
        warn(f"the running gateway was not asked ({why_not}): EWMA not known")
        s.out.line("order from the config file and the store (latency not measured)")
    s.out.line("candidates with the same TRY number are drawn by weight per request")
    sections = [("router", r) for r in report["routers"]]
    sections += [("model", m) for m in report.get("models", ())]
    if not sections:
        s.out.line("no routers configured" + ("" if a.models else " (--models: model routes)"))
    for kind, r in sections:
        members = f"; models {', '.join(r['models'])}" if kind == "router" else ""
        s.out.line()
        s.out.line(f"{kind} {r['name']} (group {r['group']}, strategy {r['strategy']}{members})")
        table(CANDIDATE, r["order"])
    return 0
