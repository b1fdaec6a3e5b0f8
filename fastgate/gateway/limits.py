"""Rate limits per key (rpm, tpm, max_concurrency) and per channel (rpm).

In-process and exact: requests per minute are a sliding-window log (the times
of the admitted requests of the last 60 s), tokens per minute a log of (time,
tokens) pairs summed as they age out, concurrency a counter. Only admitted
requests count. A refusal carries `Retry-After` in whole seconds (at least 1):
when the oldest entry that blocks leaves the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from fastgate import errors

WINDOW = 60.0


class _Log:
    """Admission times (and weights) of the last WINDOW seconds."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        entries = self.entries
        edge = now - WINDOW
        while entries and entries[0][0] <= edge:
            self.total -= entries.popleft()[1]

    def wait_for(self, limit: int, now: float) -> float:
        """Seconds until the total drops below `limit` (0 if it is below now)."""
        if self.total < limit:
            return 0.0
        excess = self.total - limit + 1
        for t, w in self.entries:
            excess -= w
            if excess <= 0:
                return t + WINDOW - now
        return WINDOW

    def add(self, now: float, weight: int) -> None:
        self.entries.append((now, weight))
        self.total += weight


def _retry_after(seconds: float) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"retry-after", b"%d" % max(1, math.ceil(seconds))),)


class Limits:
    def __init__(self) -> None:
        self.requests: dict[str, _Log] = {}
        self.tokens: dict[str, _Log] = {}
        self.concurrency: dict[str, int] = {}

    def admit(self, token: Any) -> None:
        """Count the request against the key's limits, or raise 429."""
        name = token.name
        now = time.monotonic()
        if token.max_concurrency and self.concurrency.get(name, 0) >= token.max_concurrency:
            raise errors.RateLimited(
                f"too many concurrent requests for this key (max {token.max_concurrency})",
                headers=_retry_after(1),
            )
        if token.tpm:
            log = self.tokens.get(name)
            if log is not None:
                log.trim(now)
                wait = log.wait_for(token.tpm, now)
                if wait > 0:
                    raise errors.RateLimited(
                        f"token rate limit reached for this key ({token.tpm} tokens per minute)",
                        headers=_retry_after(wait),
                    )
        if token.rpm:
            log = self.requests.get(name)
            if log is None:
                log = self.requests[name] = _Log()
            log.trim(now)
            wait = log.wait_for(token.rpm, now)
            if wait > 0:
                raise errors.RateLimited(
                    f"request rate limit reached for this key ({token.rpm} per minute)",
                    headers=_retry_after(wait),
                )
            log.add(now, 1)
        if token.max_concurrency:
            self.concurrency[name] = self.concurrency.get(name, 0) + 1

    def done(self, token: Any, tokens_used: int) -> None:
        """The admitted request ended: free its concurrency slot, count its tokens."""
        name = token.name
        if token.max_concurrency:
            self.concurrency[name] = self.concurrency.get(name, 1) - 1
        if token.tpm and tokens_used > 0:
            log = self.tokens.get(name)
            if log is None:
                log = self.tokens[name] = _Log()
            log.add(time.monotonic(), tokens_used)

    def channel_allows(self, channel: Any) -> bool:
        """Per-channel rpm: admit (and count) one request, or say the channel is full."""
        rpm = channel.rpm
        if not rpm:
            return True
        now = time.monotonic()
        key = channel.name
        log = self.requests.get("\0" + key)
        if log is None:
            log = self.requests["\0" + key] = _Log()
        log.trim(now)
        if log.total >= rpm:
            return False
        log.add(now, 1)
        return True
