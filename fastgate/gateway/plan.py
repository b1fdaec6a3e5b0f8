"""Route plans: everything a request for (group, model) needs, resolved once.

The snapshot build makes one `RoutePlan` per (group, public name), aliases
included, so the data plane does a single dict lookup per request: the resolved
model, its route (candidates by priority and weight), its price, and whether
the route may take the fast path (`gateway/fast.py`). Breakers live in the App
(they outlive snapshots) and are looked up by (channel, model) per attempt.

A route is fast-path eligible when every candidate speaks the OpenAI protocol
with the body as it is (OpenAI, OpenRouter, Azure at its deployment path, which
the channel remembers; no in-process mock) and has
no per-channel rate limit, and its order is static (not the latency strategy,
whose responses are measured on the general path) and it is not a router's
(whose model changes per attempt: gateway/strategies.py); everything else
about a request (its key, its body) is checked per request, inline, by the
fast path itself.
"""

from __future__ import annotations

from typing import Any

from fastgate.gateway.routing import Route


class RoutePlan:
    __slots__ = ("breaker", "fast", "model", "price", "ratio", "route", "single")

    def __init__(self, model: str, route: Route, price: Any, ratio: int) -> None:
        self.model = model  # the public model name after alias resolution
        self.route = route
        self.single = route.single  # the one candidate, when there is only one
        self.price = price
        self.ratio = ratio  # the group's price ratio, parts per million
        self.breaker: Any = None  # the single candidate's breaker, bound by the App
        channels = [c for level in route.levels for c in level.channels]
        self.fast = (
            route.static
            and not route.router
            and all(c.kind.fast_path and not c.rpm for c in channels)
        )


def bind_breakers(plans: dict[tuple[str, str], RoutePlan], breakers: Any) -> None:
    """Give each single-candidate plan a direct reference to its breaker (breakers
    live in the App and outlive snapshots, so this runs when a snapshot is installed)."""
    for plan in plans.values():
        if plan.single is not None and plan.fast:  # only the fast path reads it
            plan.breaker = breakers.get(plan.single.name, plan.model)


def build_plans(
    routes: dict[tuple[str, str], Route],
    aliases: dict[str, str],
    prices: dict[str, Any],
    group_ratio: dict[str, int],
) -> dict[tuple[str, str], RoutePlan]:
    """(group, requested name) -> RoutePlan, for every model and alias with a route.

    An alias wins over a model of the same name, as `Snapshot.resolve_model` does."""
    real: dict[tuple[str, str], RoutePlan] = {}
    for (group, model), route in routes.items():
        real[(group, model)] = RoutePlan(
            model, route, prices.get(model), group_ratio.get(group, 1_000_000)
        )
    plans = dict(real)
    for group in {g for g, _ in routes}:
        for alias, target in aliases.items():
            plan = real.get((group, target))
            if plan is not None:
                plans[(group, alias)] = plan
            else:
                plans.pop((group, alias), None)
    return plans
