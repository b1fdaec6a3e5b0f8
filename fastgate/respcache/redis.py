"""The Redis backend: one cache shared by every worker and instance.

One connection pool per worker (redis-py asyncio, hiredis parser when
installed). A value is `Entry.encode()` (a JSON header line, then the body),
stored with `SET key value PX ttl` under `key_prefix + "cache:" + sha256`.
A lookup is a network round trip: `get` starts a task and answers PENDING; the
exchange continues from the task's done callback.

When Redis cannot be reached the cache is bypassed, never an error for the
client: the request is served as a miss and nothing is stored, each such
request counts in `fastgate_cache_errors_total`, the outage is logged once
(and its end once), and Redis is not asked again for `RETRY` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from redis import asyncio as aioredis

from fastgate.config.model import CacheConfig
from fastgate.gateway.cache import BYPASS, ERRORS, PENDING, Entry
from fastgate.metrics import Metrics

log = logging.getLogger("fastgate.cache")

RETRY = 1.0  # seconds without asking Redis after it failed
TIMEOUT = 1.0  # connect and socket timeout: a lookup waits at most this long
MAX_CONNECTIONS = 64  # per worker; more lookups at once wait for a connection


class RedisCache:
    def __init__(self, cfg: CacheConfig, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self.loop = loop
        self.metrics = metrics
        self.max_entry_bytes = cfg.max_entry_bytes
        self.prefix = cfg.key_prefix + "cache:"
        self.ttl_ms = max(1, int(cfg.ttl * 1000))
        self.pool = aioredis.BlockingConnectionPool.from_url(
            cfg.redis_url,
            max_connections=MAX_CONNECTIONS,
            timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
        )
        self.client = aioredis.Redis(connection_pool=self.pool)
        self.down = False
        self.retry_at = 0.0
        self.tasks: set[asyncio.Task[Any]] = set()

    def _skip(self) -> bool:
        return self.down and self.loop.time() < self.retry_at

    def get(self, key: str, done: Any) -> Any:
        """PENDING (then `done(Entry | None | BYPASS)`), or BYPASS during an outage."""
        if self._skip():
            self.metrics.inc(ERRORS)
            return BYPASS
        task = self.loop.create_task(self.client.get(self.prefix + key))
        self.tasks.add(task)
        task.add_done_callback(partial(self._got, done))
        return PENDING

    def _got(self, done: Any, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        result: Any = BYPASS
        if task.cancelled():
            self.metrics.inc(ERRORS)
        else:
            exc = task.exception()
            if exc is not None:
                self._failed(exc)
            else:
                self._ok()
                raw = task.result()
                result = None if raw is None else Entry.decode(raw)
        done(result)

    def put(self, key: str, entry: Entry) -> None:
        if len(entry.body) > self.max_entry_bytes or self._skip():
            return
        task = self.loop.create_task(
            self.client.set(self.prefix + key, entry.encode(), px=self.ttl_ms)
        )
        self.tasks.add(task)
        task.add_done_callback(self._put_done)

    def _put_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed(exc)
        else:
            self._ok()

    def _failed(self, exc: BaseException) -> None:
        self.metrics.inc(ERRORS)
        self.retry_at = self.loop.time() + RETRY
        if not self.down:
            self.down = True
            log.warning(
                "response cache: redis unreachable (%s); serving uncached until it is back",
                exc or type(exc).__name__,
            )

    def _ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("response cache: redis reachable again")

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        try:
            await self.client.aclose()
            await self.pool.disconnect()
        except Exception:  # closing a pool whose server is gone
            pass
