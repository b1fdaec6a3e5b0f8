"""Routing: the ordered candidates for one request.

A `Route` is precomputed per (group, model) when the snapshot is built: channels
grouped in levels by a sort key (by default the priority, highest first; the
strategies of `gateway/strategies.py` give other keys: price, locality, a
router's list), each level with cumulative weights so that a weighted pick is
one bisect. All weights 0 in a level means round robin.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any


class Level:
    """The channels of one priority, with what a weighted or round-robin pick needs."""

    __slots__ = ("channels", "cum", "rr", "total")

    def __init__(self, channels: list[Any]) -> None:
        self.channels = channels
        weights = [max(0, c.weight) for c in channels]
        self.total = sum(weights)
        self.cum = list(accumulate(weights))
        self.rr = 0

    def order(self) -> list[Any]:
        """All channels of the level, in a weighted-random (or round-robin) order."""
        chans = self.channels
        n = len(chans)
        if n == 1:
            return chans
        if self.total == 0:
            start = self.rr % n
            self.rr += 1
            return chans[start:] + chans[:start]
        # Weighted sampling without replacement: pick, then renormalise the rest.
        remaining = list(chans)
        weights = [max(0, c.weight) for c in remaining]
        out = []
        total = self.total
        while remaining:
            if total <= 0:
                out.extend(remaining)
                break
            cum = list(accumulate(weights))
            i = bisect_right(cum, random.random() * total)
            if i >= len(remaining):
                i = len(remaining) - 1
            out.append(remaining.pop(i))
            total -= weights.pop(i)
        return out


def by_priority(c: Any) -> Any:
    """The default level key: higher priority first."""
    return -c.priority


class Route:
    """Candidates for a (group, model): levels in ascending key order (by default
    priority levels, highest first).

    `strategy` names how the key was chosen; `router` is the [[routers]] name for a
    router's route ("" for a model's); `measure`: responses on this route feed the
    latency EWMA (gateway/strategies.py LatencyRoute); `static`: `order()` depends on
    nothing but the route itself (the fast path may take it)."""

    __slots__ = ("keys", "levels", "router", "single", "strategy")
    measure = False
    static = True

    def __init__(
        self,
        channels: list[Any],
        key: Callable[[Any], Any] = by_priority,
        strategy: str = "priority",
        router: str = "",
    ) -> None:
        by_key: dict[Any, list[Any]] = {}
        for c in channels:
            by_key.setdefault(key(c), []).append(c)
        self.keys = sorted(by_key)
        self.levels = [Level(by_key[k]) for k in self.keys]
        self.single = channels[0] if len(channels) == 1 else None
        self.strategy = strategy
        self.router = router

    def channels(self) -> list[Any]:
        """Every candidate, level by level (the configured order within a level)."""
        return [c for level in self.levels for c in level.channels]

    def order(self) -> list[Any]:
        """Every channel once, in the order they should be tried."""
        if self.single is not None:
            return [self.single]
        out: list[Any] = []
        for level in self.levels:
            out.extend(level.order())
        return out


def attempt_plan(order: list[Any], max_attempts: int) -> Iterator[Any]:
    """Up to max_attempts channels from `order`, cycling when there are fewer
    distinct channels than attempts, never the same channel twice in a row."""
    n = len(order)
    if n == 0:
        return
    if n == 1:
        yield order[0]
        return
    for i in range(max_attempts):
        yield order[i % n]
