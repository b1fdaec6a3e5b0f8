"""App: the per-process runtime state the data plane reads and updates.

It holds the current Snapshot (one reference, swapped whole on reload), the
upstream pool, breakers, the usage sink, metrics, in-memory quota counters and
the set of client connections; it dispatches each complete request to an
Exchange and runs the timeout sweeper. Nothing in here blocks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from fastgate.gateway.breaker import Breakers
from fastgate.gateway.fast import dispatch as fast_dispatch
from fastgate.gateway.limits import Limits
from fastgate.gateway.plan import bind_breakers
from fastgate.http.head import RequestHead
from fastgate.http.upstream import Pool
from fastgate.metrics import Metrics
from fastgate.providers.mock import MockProvider
from fastgate.snapshot import Snapshot

SWEEP_INTERVAL = 0.05


class App:
    def __init__(
        self, cfg: Any, snapshot: Snapshot, loop: asyncio.AbstractEventLoop, sink: Any
    ) -> None:
        self.cfg = cfg
        self.snapshot = snapshot
        self.loop = loop
        self.sink = sink
        srv = cfg.server
        self.pool = Pool(
            loop,
            max_per_origin=srv.upstream_max_connections,
            keepalive=srv.upstream_keepalive,
            connect_timeout=srv.connect_timeout,
        )
        self.breakers = Breakers(cfg.routing.breaker_failures, cfg.routing.breaker_cooldown)
        bind_breakers(snapshot.plans, self.breakers)
        self.metrics = Metrics()
        self.mock = MockProvider(loop)
        self.limits = Limits()
        self.clients: set[Any] = set()
        self.inflight = 0
        self.stopping = False
        self.ready = True
        self.channel_cooldown: dict[str, float] = {}
        self.quota_used: dict[str, int] = {}  # token name -> micro-dollars used
        self.last_cost: dict[tuple[str, str], int] = {}  # (key, model) -> micro-dollars
        self.charge_hook: Any = None  # the store's quota write-behind, when there is a store
        self.store_error = ""  # last store refresh failure ("" = fine), shown in /ready
        self.file_cfg = cfg
        self.pid = os.getpid()  # which worker answered (/ready)
        # The link to the sibling workers under --workers N (siblings.Siblings), else None:
        # /metrics is then gathered from every worker.
        self.siblings: Any = None
        self._rid_prefix = b"fg-" + os.urandom(8).hex().encode() + b"-"
        self._rid = 0
        # Each complete request goes to the fast path's dispatch, which hands
        # what it does not take to the general exchange (a partial: no extra frame).
        self.dispatch: Callable[[Any, RequestHead], None] = partial(fast_dispatch, self)
        self._sweeper: asyncio.TimerHandle | None = None

    # -- hot path helpers ------------------------------------------------------

    def new_request_id(self) -> bytes:
        self._rid += 1
        return b"%b%x" % (self._rid_prefix, self._rid)

    def quota_left(self, token: Any) -> int:
        return token.quota_micros - self.quota_used.get(token.name, 0)

    def charge(self, token: Any, micros: int) -> None:
        if self.charge_hook is not None:
            self.charge_hook(token.name, micros)
        else:
            self.quota_used[token.name] = self.quota_used.get(token.name, 0) + micros

    def note_rate_limited(self, channel: str, retry_after: bytes) -> None:
        """Remember an upstream's 429 so the channel is skipped until it recovers."""
        wait = 0.0  # without retry-after the next request may try the channel again
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                pass
        wait = min(max(wait, 0.0), 60.0)
        if wait > 0:
            self.channel_cooldown[channel] = time.monotonic() + wait

    def swap(self, snapshot: Snapshot, cfg: Any) -> None:
        """Install a new snapshot (and config) as one reference each."""
        self.breakers.configure(cfg.routing.breaker_failures, cfg.routing.breaker_cooldown)
        bind_breakers(snapshot.plans, self.breakers)
        self.cfg = cfg
        self.snapshot = snapshot

    # -- timeouts ------------------------------------------------------------------

    def start_sweeper(self) -> None:
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        try:
            for c in [c for c in self.clients if c.deadline and now >= c.deadline]:
                c.on_timeout(now)
            for u in [u for u in self.pool.all if u.timing and now >= u.deadline]:
                u.on_timeout(now)
        finally:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
