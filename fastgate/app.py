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
from itertools import count, repeat
from typing import TYPE_CHECKING, Any

import fastgate.fleet  # noqa: F401  (declares the Redis outage counters: 0 without Redis)
from fastgate.gateway.breaker import Breakers
from fastgate.gateway.budgets import Budgets
from fastgate.gateway.fast import dispatch as fast_dispatch
from fastgate.gateway.limits import Limits, SharedLimits
from fastgate.gateway.plan import bind_breakers
from fastgate.gateway.strategies import Latency, bind_latency
from fastgate.gateway.upstream_limits import cooldown_seconds
from fastgate.http.head import RequestHead
from fastgate.http.upstream import Pool
from fastgate.metrics import Metrics, declare
from fastgate.providers.mock import MockProvider
from fastgate.respcache import build_cache
from fastgate.snapshot import Snapshot
from fastgate.webhooks import build_webhooks
from fastgate.webhooks import reconfigure as reconfigure_webhooks

if TYPE_CHECKING:
    from fastgate.fleet.redis import FleetRedis

SWEEP_INTERVAL = 0.05

COOLDOWNS = declare(
    "fastgate_upstream_cooldowns_total",
    "Channels put in cooldown by an upstream's rate-limit answer (429, or a budget at 0).",
    labelled=True,
)


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
        # The latency strategy's EWMA of time to first byte, this worker's own.
        self.latency = Latency()
        bind_latency(snapshot.routes, self.latency)
        self.metrics = Metrics()
        if hasattr(sink, "observe"):  # the per-request metrics, folded from the records
            sink.observe = self.fold_records
        self.mock = MockProvider(loop)
        rl = cfg.ratelimit
        # The fleet's shared state (`[ratelimit] backend = "redis"`): one pool per
        # worker; None with the memory backend. Changing the backend needs a restart.
        # redis-py is imported only here (and by a Redis cache): a config without
        # Redis does not carry its ~18 MB (fleet/__init__.py).
        self.fleet: FleetRedis | None = None
        self.limits: Limits | SharedLimits = Limits()
        shared_budgets: Any = None
        if rl.backend == "redis":
            from fastgate.fleet.budgets import RedisBudgets
            from fastgate.fleet.limits import RedisWindows
            from fastgate.fleet.redis import FleetRedis

            self.fleet = FleetRedis(rl.redis_url, rl.key_prefix, rl.on_redis_error, self.metrics)
            self.limits = SharedLimits(RedisWindows(self.fleet), self.fleet.fail_open)
            shared_budgets = RedisBudgets(self.fleet)
        # The response cache's backend (None when [cache] enabled is false).
        self.cache: Any = build_cache(cfg.cache, loop, self.metrics)
        # Budgets per key and group and period; counters in Redis with the redis backend.
        self.budgets = Budgets(
            shared_budgets,
            self.fleet.fail_open if self.fleet is not None else True,
            self.metrics,
        )
        self.budgets.snapshot = snapshot
        self.workers = 1  # the instance's --workers (set by the Worker)
        # `[webhooks]`: the sender the hooks queue events to (None: no url); the
        # Worker starts it.
        self.hooks: Any = build_webhooks(self, cfg.webhooks)
        self.clients: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # a request's round trips (spawn)
        self.inflight = 0
        self.stopping = False
        self.ready = True
        self.channel_cooldown: dict[str, float] = {}
        self.quota_used: dict[str, int] = {}  # token name -> micro-dollars used
        self.last_cost: dict[tuple[str, str], int] = {}  # (key, model) -> micro-dollars
        self.charge_hook: Any = None  # the store's quota write-behind, when there is a store
        self.uids_present: Any = None  # uids -> awaitable count in the store (batch billing)
        # /ready's store fields: {"store": "ok" | "connecting" | "unreachable"[, "store_error"]}
        self.store_status: dict[str, Any] = {"store": "ok"}  # the worker's StoreLink.view
        self.file_cfg = cfg
        self.pid = os.getpid()  # which worker answered (/ready)
        # The link to the sibling workers under --workers N (siblings.Siblings), else None:
        # /metrics is then gathered from every worker.
        self.siblings: Any = None
        # Request ids, b"fg-<16 random hex digits>-<counter in hex>": made by C
        # iterators, so that taking one is a call without a Python frame (hot).
        prefix = b"fg-" + os.urandom(8).hex().encode() + b"-"
        self.new_request_id: Callable[[], bytes] = map(
            b"%b%x".__mod__, zip(repeat(prefix), count(1))
        ).__next__
        # Each complete request goes to the fast path's dispatch, which hands
        # what it does not take to the general exchange (a partial: no extra frame).
        self.dispatch: Callable[[Any, RequestHead], None] = partial(fast_dispatch, self)
        self._sweeper: asyncio.TimerHandle | None = None

    # -- hot path helpers ------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` as a task the App keeps a reference to until it ends (the
        loop itself keeps only weak ones)."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def fold_records(self, batch: list[Any]) -> None:
        """The sink ships a batch of usage records: count them in the metrics."""
        self.metrics.fold(batch, self.snapshot)

    def quota_left(self, token: Any) -> int:
        return token.quota_micros - self.quota_used.get(token.name, 0)

    def charge(self, token: Any, micros: int) -> Any:
        """Count `micros` against the key's quota and budgets; returns what the
        answer's end must wait for (`Budgets.charge`), or None."""
        wait = self.budgets.charge(token, micros) if token.budgets else None
        if self.charge_hook is not None:
            self.charge_hook(token.name, micros)
        else:
            self.quota_used[token.name] = self.quota_used.get(token.name, 0) + micros
        return wait

    def note_limits(self, channel: str, status: int, conn: Any) -> None:
        """An upstream said it is out of budget (a 429, or a remaining budget of 0):
        skip the channel until it recovers, on every worker and instance."""
        wait = cooldown_seconds(status, conn.retry_after, conn.limits, time.time())
        if wait > 0:
            if self.hooks is not None and self.channel_cooldown.get(channel, 0) <= time.monotonic():
                self.hooks.cooldown(channel, status, wait)  # a new cooldown: channel_down
            self.apply_cooldown(channel, wait)
            self.limits.cool(channel, wait)  # the redis backend tells every instance
            self.metrics.inc(
                COOLDOWNS,
                (("channel", channel), ("reason", "429" if status == 429 else "exhausted")),
            )

    def cooldowns(self) -> dict[str, float]:
        """Channels skipped now for an upstream's rate limits: seconds left."""
        now = time.monotonic()
        return {c: round(t - now, 3) for c, t in sorted(self.channel_cooldown.items()) if t > now}

    def apply_cooldown(self, channel: str, seconds: float) -> None:
        """Skip `channel` for `seconds` (this worker; the fleet's announcements land here)."""
        until = time.monotonic() + seconds
        if until > self.channel_cooldown.get(channel, 0.0):
            self.channel_cooldown[channel] = until

    def swap(self, snapshot: Snapshot, cfg: Any) -> None:
        """Install a new snapshot (and config) as one reference each."""
        self.breakers.configure(cfg.routing.breaker_failures, cfg.routing.breaker_cooldown)
        bind_breakers(snapshot.plans, self.breakers)
        bind_latency(snapshot.routes, self.latency)
        if cfg.cache != self.cfg.cache:  # [cache] changed: a new backend, empty
            old = self.cache
            self.cache = build_cache(cfg.cache, self.loop, self.metrics)
            if old is not None:
                self.loop.create_task(old.aclose())
        if cfg.webhooks != self.cfg.webhooks:
            self.hooks = reconfigure_webhooks(self, cfg.webhooks)
        self.cfg = cfg
        self.snapshot = snapshot
        self.budgets.snapshot = snapshot

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
