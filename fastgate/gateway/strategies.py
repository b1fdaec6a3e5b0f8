"""Strategies: how a route orders its candidates, and routers across models.

`[routing] strategy` orders the channels of every model; a `[[routers]]` entry
orders the (model, channel) pairs of its members with its own `strategy`.
Each static strategy is a level key for `routing.Route` (ascending; candidates
with equal keys share a level and are drawn weighted-random, as priorities
always were):

- `priority`: -priority (the default: higher first);
- `cost`: the price of what the candidate would serve — the channel's upstream
  model (model_map applied) if it has a price, else the public model's —
  as input + output USD per 1M tokens, cheapest first, priority breaking ties;
  a candidate with no price at all goes last;
- `local-first`: `local = true` channels first, then priority;
- `ordered` (routers only): the router's `models` list order, then priority.

`latency` is dynamic (`LatencyRoute`): candidates that have not answered yet on
this worker come first (by priority), so that they get measured; the others
follow by their EWMA of time to first byte, fastest first. The EWMA table
(`Latency`) belongs to the App, not the snapshot (it outlives reloads), and is
bound to the snapshot's latency routes when the snapshot is installed. Only
latency routes measure anything (`Route.measure`), on the general path; they
and routers are not eligible for the fast path (`Route.static`, `Route.router`).

A router's candidates are copies of the member's channels with `member` set to
the member model (`Channel.member`): the attempt then uses that model for its
breaker, model_map, price and usage record (`attempts.Attempts.use`), while
cooldowns, channel rpm and the connection pool stay the channel's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from fastgate.gateway.routing import Route, by_priority

__all__ = [
    "ALPHA",
    "Latency",
    "LatencyRoute",
    "bind_latency",
    "build_routes",
    "candidate_price",
    "model_route",
    "router_route",
]

ALPHA = 0.3  # weight of a new time-to-first-byte sample in the moving average

PriceOf = Callable[[str], Any]  # model name -> IntPrice (pico-dollars per token) or None


class Latency:
    """This worker's moving average (EWMA) of time to first byte per (channel, model),
    in seconds, from real responses; `version` moves with every sample."""

    __slots__ = ("ewma", "samples", "version")

    def __init__(self) -> None:
        self.ewma: dict[tuple[str, str], float] = {}
        self.samples: dict[tuple[str, str], int] = {}
        self.version = 0

    def sample(self, channel: str, model: str, seconds: float) -> None:
        key = (channel, model)
        old = self.ewma.get(key)
        self.ewma[key] = seconds if old is None else old + ALPHA * (seconds - old)
        self.samples[key] = self.samples.get(key, 0) + 1
        self.version += 1


class LatencyRoute(Route):
    """Unmeasured candidates first (their priority order), then the measured ones by
    EWMA. The split and sort are redone only when the table has new samples."""

    __slots__ = ("front", "measured", "model", "seen", "table")
    measure = True
    static = False

    def __init__(self, channels: list[Any], model: str, router: str = "") -> None:
        Route.__init__(self, channels, by_priority, "latency", router)
        self.model = model  # the route's model: a channel's own when it has no member
        self.table: Latency | None = None
        self.seen = -1
        self.front: Route | None = None
        self.measured: list[Any] = []

    def order(self) -> list[Any]:
        table = self.table
        if table is None:
            return Route.order(self)
        if table.version != self.seen:
            self.resort(table)
        front = self.front
        if front is None:
            return self.measured
        return front.order() + self.measured

    def resort(self, table: Latency) -> None:
        ewma = table.ewma
        model = self.model
        unmeasured, measured = [], []
        for c in self.channels():
            key = (c.name, c.member or model)
            if key in ewma:
                measured.append((ewma[key], len(measured), c))
            else:
                unmeasured.append(c)
        measured.sort()
        self.front = Route(unmeasured) if unmeasured else None
        self.measured = [c for _, _, c in measured]
        self.seen = table.version


def candidate_price(c: Any, model: str, price_of: PriceOf) -> tuple[str, Any]:
    """(priced name, price) of what channel `c` would serve for `model`: its upstream
    model's (model_map applied) if that has a price, else the public model's
    (price None: unpriced)."""
    upstream = c.model_map.get(model, model)
    price = price_of(upstream)
    if price is None and upstream != model:
        return model, price_of(model)
    return upstream, price


def blended(price: Any) -> int:
    """The one number `cost` sorts by: input + output pico-dollars per token."""
    return price.input + price.output


def _cost_key(model: str, price_of: PriceOf) -> Callable[[Any], Any]:
    def key(c: Any) -> Any:
        price = candidate_price(c, c.member or model, price_of)[1]
        if price is None:
            return (1, 0, -c.priority)
        return (0, blended(price), -c.priority)

    return key


def _local_key(c: Any) -> Any:
    return (not c.local, -c.priority)


def model_route(channels: list[Any], model: str, strategy: str, price_of: PriceOf) -> Route:
    """The route of one model's channels under `strategy`."""
    if strategy == "cost":
        return Route(channels, _cost_key(model, price_of), strategy)
    if strategy == "local-first":
        return Route(channels, _local_key, strategy)
    if strategy == "latency":
        return LatencyRoute(channels, model)
    return Route(channels)


def router_route(
    router: Any, members: list[tuple[str, list[Any]]], price_of: PriceOf
) -> Route | None:
    """The route of a router in one group: its members' channels as (model, channel)
    candidates (`members`: (model, channels serving it here), in the router's order),
    or None when no member is served in the group."""
    chans: list[Any] = []
    index: dict[tuple[str, str], int] = {}
    for i, (model, served) in enumerate(members):
        for c in served:
            chans.append(c)
            index[(c.name, model)] = i
    if not chans:
        return None
    name, strategy = router.name, router.strategy
    if strategy == "latency":
        return LatencyRoute(chans, name, name)
    if strategy == "cost":
        return Route(chans, _cost_key(name, price_of), strategy, name)
    if strategy == "local-first":
        return Route(chans, _local_key, strategy, name)
    if strategy == "ordered":
        return Route(chans, lambda c: (index[(c.name, c.member)], -c.priority), strategy, name)
    return Route(chans, by_priority, strategy, name)


def build_routes(
    serving: dict[tuple[str, str], list[Any]],
    strategy: str,
    routers: Iterable[Any],
    price_of: PriceOf,
) -> dict[tuple[str, str], Route]:
    """(group, model or router name) -> Route, for every model served and every router
    with a member served in the group (a router wins over a store model of its name)."""
    routes = {
        (g, m): model_route(chans, m, strategy, price_of) for (g, m), chans in serving.items()
    }
    groups = sorted({g for g, _ in serving})
    copies: dict[tuple[str, str], Any] = {}  # (channel, member) -> the router's candidate

    def member(c: Any, model: str) -> Any:
        got = copies.get((c.name, model))
        if got is None:
            got = copies[(c.name, model)] = dataclasses.replace(c, member=model)
        return got

    for r in routers:
        for g in groups:
            members = [(m, [member(c, m) for c in serving.get((g, m), ())]) for m in r.models]
            route = router_route(r, members, price_of)
            if route is not None:
                routes[(g, r.name)] = route
    return routes


def bind_latency(routes: dict[tuple[str, str], Route], table: Latency) -> None:
    """Give every latency route of a snapshot the App's EWMA table (when installed)."""
    for route in routes.values():
        if route.measure:
            route.table = table  # type: ignore[attr-defined]
            route.seen = -1  # type: ignore[attr-defined]
