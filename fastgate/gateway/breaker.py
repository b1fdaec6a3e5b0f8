"""Circuit breaker per (channel, model).

Closed: every attempt goes through; `failures` consecutive failures open it.
Open: attempts are refused until `cooldown` has passed. Then half-open: one
probe goes through; its success closes the breaker, its failure reopens it.
"""

from __future__ import annotations

import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    __slots__ = ("cooldown", "failures", "opened_at", "probe_out", "state", "threshold")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self.probe_out = False

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
        self.state = CLOSED
        self.probe_out = False

    def failure(self, now: float | None = None) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = time.monotonic() if now is None else now
            self.probe_out = False

    def release_probe(self) -> None:
        """A probe that ended without a verdict (client went away) frees the slot."""
        self.probe_out = False


class Breakers:
    """All breakers of a process, kept across snapshot swaps."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._by_key: dict[tuple[str, str], Breaker] = {}

    def get(self, channel: str, model: str) -> Breaker:
        key = (channel, model)
        b = self._by_key.get(key)
        if b is None:
            b = self._by_key[key] = Breaker(self.threshold, self.cooldown)
        return b

    def configure(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        for b in self._by_key.values():
            b.threshold, b.cooldown = threshold, cooldown

    def states(self) -> dict[str, dict[str, object]]:
        return {
            f"{c}/{m}": {"state": b.state, "failures": b.failures}
            for (c, m), b in self._by_key.items()
        }
