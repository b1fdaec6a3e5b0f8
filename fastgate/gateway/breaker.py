"""Circuit breaker per (channel, model).

Closed: every attempt goes through; `failures` consecutive failures open it.
Open: attempts are refused until `cooldown` has passed. Then half-open: one
probe goes through; its success closes the breaker, its failure reopens it.

With `--workers N` the workers keep one picture: a breaker that opens (from
closed or half-open) or closes (a success while not closed) calls its owner's
`on_change` (set by the worker's siblings link, which tells the siblings), and a
sibling's news is applied with `Breakers.apply` (no echo). Consecutive failures
are counted per worker; the half-open move is each worker's own (the opening
time is shared: CLOCK_MONOTONIC is one clock for every process of the machine).

`Breakers.on_transition(breaker, was)` (the webhooks, when configured) hears the
same changes with the state before them, so that "closed -> open" (a channel
down) can be told from a failed probe reopening it; `Breaker.last_error` is the
kind of the failure that opened it (e.g. "HTTP 401", "timeout").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    __slots__ = (
        "cooldown",
        "failures",
        "key",
        "last_error",
        "opened_at",
        "owner",
        "probe_out",
        "state",
        "threshold",
    )

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        key: tuple[str, str] = ("", ""),
        owner: Breakers | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self.probe_out = False
        self.last_error = ""  # the kind of the last failure
        self.key = key  # (channel, model)
        self.owner = owner  # told of state changes (None: a lone breaker)

    def allow(self, now: float | None = None) -> bool:
        """May an attempt go to this channel now? (Claims the probe when half-open.)"""
        if self.state == CLOSED:
            return True
        now = time.monotonic() if now is None else now
        if self.state == OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self.probe_out = False
        if self.probe_out:
            return False
        self.probe_out = True
        return True

    def success(self) -> None:
        self.failures = 0
        if self.state is not CLOSED:
            was = self.state
            self.state = CLOSED
            self.probe_out = False
            if self.owner is not None:
                self.owner.changed(self, was)

    def failure(self, now: float | None = None, kind: str = "") -> None:
        self.failures += 1
        self.last_error = kind
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            was = self.state
            self.state = OPEN
            self.opened_at = time.monotonic() if now is None else now
            self.probe_out = False
            if was is not OPEN and self.owner is not None:
                self.owner.changed(self, was)

    def release_probe(self) -> None:
        """A probe that ended without a verdict (client went away) frees the slot."""
        self.probe_out = False


class Breakers:
    """All breakers of a process, kept across snapshot swaps."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._by_key: dict[tuple[str, str], Breaker] = {}
        # Called with a breaker that opened or closed here (not on news applied).
        self.on_change: Callable[[Breaker], None] | None = None
        # The same, with the state before the change (the webhooks).
        self.on_transition: Callable[[Breaker, str], None] | None = None

    def get(self, channel: str, model: str) -> Breaker:
        key = (channel, model)
        b = self._by_key.get(key)
        if b is None:
            b = self._by_key[key] = Breaker(self.threshold, self.cooldown, key, self)
        return b

    def changed(self, breaker: Breaker, was: str = CLOSED) -> None:
        if self.on_change is not None:
            self.on_change(breaker)
        if self.on_transition is not None:
            self.on_transition(breaker, was)

    def apply(self, channel: str, model: str, state: str, opened_at: float, failures: int) -> None:
        """A sibling worker's breaker for (channel, model) opened or closed: do the same."""
        b = self.get(channel, model)
        if state in (OPEN, HALF_OPEN):  # half-open: its cooldown is over here too
            b.state = OPEN  # the module's constant: the fast path compares identity
            b.opened_at = opened_at
            b.failures = max(failures, b.failures)
        else:
            b.state = CLOSED
            b.failures = 0
        b.probe_out = False

    def export(self) -> list[list[Any]]:
        """The breakers that are not closed, as [channel, model, state, opened_at,
        failures] (what a worker that starts takes over from a sibling)."""
        return [
            [c, m, b.state, b.opened_at, b.failures]
            for (c, m), b in self._by_key.items()
            if b.state is not CLOSED
        ]

    def configure(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        for b in self._by_key.values():
            b.threshold, b.cooldown = threshold, cooldown

    def states(self) -> dict[str, dict[str, object]]:
        return {
            f"{c}/{m}": {"state": b.state, "failures": b.failures}
            for (c, m), b in self._by_key.items()
        }
