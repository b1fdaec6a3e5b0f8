"""The current order of every router and model route, and why: what
`GET /admin/routers` and `fastgate router list` show.

Built from a snapshot and (in a running worker) its EWMA table; with no table
(the CLI without a running gateway) every latency candidate is "not measured".
Candidates that share a `level` are drawn weighted-random per request (as
channels of one priority always were); levels are tried in order.
"""

from __future__ import annotations

from typing import Any

from fastgate.gateway.routing import Route
from fastgate.gateway.strategies import Latency, blended, candidate_price

__all__ = ["describe", "route_order"]


def _usd_per_m(pico_per_token: int) -> float:
    return pico_per_token / 1_000_000  # pico-dollars per token -> USD per 1M tokens


def route_order(route: Route, latency: Latency | None) -> list[tuple[int, Any]]:
    """(level, channel) in the order the route tries them now (levels in order)."""
    if route.measure and latency is not None:
        model = route.model  # type: ignore[attr-defined]
        ewma = latency.ewma
        front = [c for c in route.channels() if (c.name, c.member or model) not in ewma]
        measured = [c for c in route.channels() if (c.name, c.member or model) in ewma]
        measured.sort(key=lambda c: ewma[(c.name, c.member or model)])
        out = [(i, c) for i, level in enumerate(Route(front).levels) for c in level.channels]
        base = len({i for i, _ in out})
        return out + [(base + j, c) for j, c in enumerate(measured)]
    return [(i, c) for i, level in enumerate(route.levels) for c in level.channels]


def _candidate(
    level: int,
    c: Any,
    model: str,
    route: Route,
    snap: Any,
    latency: Latency | None,
    members: tuple[str, ...],
) -> dict[str, Any]:
    model = c.member or model
    priced, price = candidate_price(c, model, snap.prices.get)
    key = (c.name, model)
    ewma = latency.ewma.get(key) if latency is not None else None
    samples = latency.samples.get(key, 0) if latency is not None else 0
    ewma_ms = None if ewma is None else round(ewma * 1000, 3)
    out: dict[str, Any] = {
        "level": level,
        "model": model,
        "channel": c.name,
        "type": c.type,
        "upstream_model": c.model_map.get(model, model),
        "priority": c.priority,
        "weight": c.weight,
        "local": c.local,
        "price": None,
        "price_per_1m": None,
        "ewma_ms": ewma_ms,
        "samples": samples,
    }
    if price is not None:
        out["price"] = {
            "model": priced,
            "input": _usd_per_m(price.input),
            "output": _usd_per_m(price.output),
        }
        out["price_per_1m"] = _usd_per_m(blended(price))
    strategy = route.strategy
    prio = f"priority {c.priority}"
    if strategy == "cost":
        if price is None:
            why = f"no price for {model}: tried after the priced ones, {prio}"
        else:
            p = out["price"]
            why = (
                f"${out['price_per_1m']:g} per 1M tokens ({priced}: input {p['input']:g} "
                f"+ output {p['output']:g}), {prio}"
            )
    elif strategy == "latency":
        if ewma_ms is None:
            why = f"not measured yet: tried early, {prio}"
        else:
            why = f"EWMA {ewma_ms:g} ms to first byte over {samples} response(s)"
    elif strategy == "local-first":
        why = f"{'local' if c.local else 'not local'}, {prio}"
    elif strategy == "ordered":
        why = f"models[{members.index(model)}] = {model}, {prio}"
    else:
        why = prio
    out["why"] = why
    return out


def describe(snap: Any, latency: Latency | None = None) -> dict[str, Any]:
    """Every router (per group) and every model route (per group) with its current
    candidate order and why. JSON-ready."""
    routers: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    for (group, name), route in sorted(snap.routes.items()):
        r = snap.routers.get(name) if route.router else None
        members = tuple(r.models) if r is not None else ()
        order = [
            _candidate(level, c, name, route, snap, latency, members)
            for level, c in route_order(route, latency)
        ]
        entry = {"name": name, "group": group, "strategy": route.strategy, "order": order}
        if r is not None:
            entry["models"] = list(members)
            routers.append(entry)
        else:
            models.append(entry)
    return {
        "object": "routers",
        "snapshot_version": snap.version,
        "strategy": snap.config.routing.strategy,
        "measured": latency is not None,
        "routers": routers,
        "models": models,
    }
