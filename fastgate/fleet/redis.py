"""One Redis connection pool per worker, and what an outage means.

Every shared engine calls Redis through `FleetRedis.run`. A connection error
or a timeout marks Redis down for `RETRY_AFTER` seconds: during that time the
engines do not try it at all (no request waits on a dead Redis twice), they
fall back as `[ratelimit] on_redis_error` says: "open" serves on the worker's
own exact limits, "closed" answers 503. The first failure of an outage is
logged once, and every failed or skipped call is counted in /metrics
(`fastgate_redis_errors_total`). After the pause the next call tries again;
its success ends the outage (logged once): Redis coming back needs no restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastgate.errors import SharedStateUnavailable
from fastgate.fleet import ERRORS, OUTAGES

log = logging.getLogger("fastgate.fleet")

T = TypeVar("T")

RETRY_AFTER = 1.0  # seconds Redis is left alone after a failure
TIMEOUT = 0.5  # connect and command timeout, seconds

__all__ = ["ERRORS", "OUTAGES", "FleetRedis", "FleetUnavailable"]


class FleetUnavailable(SharedStateUnavailable):
    """Redis cannot be used now; the caller applies the on_redis_error policy."""


class FleetRedis:
    """A worker's Redis client: prefix, timeouts, outage state."""

    def __init__(self, url: str, prefix: str, on_error: str, metrics: Any) -> None:
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            health_check_interval=0,
            max_connections=64,
        )
        self.url = url
        self.prefix = prefix
        self.fail_open = on_error != "closed"
        self.metrics = metrics
        self.down_until = 0.0  # monotonic; > now while an outage pause lasts
        self.outage = False

    @property
    def available(self) -> bool:
        return not self.outage or time.monotonic() >= self.down_until

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, lua: str) -> Any:
        return self.client.register_script(lua)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await `call()`; a Redis failure becomes FleetUnavailable (and an outage)."""
        if self.outage and time.monotonic() < self.down_until:
            self.metrics.inc(ERRORS)
            raise FleetUnavailable("redis unavailable")
        try:
            result = await call()
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise FleetUnavailable(str(exc)) from exc
        except RedisError as exc:  # a script or protocol error: a bug, not an outage
            self.metrics.inc(ERRORS)
            log.error("redis command failed: %s", exc)
            raise FleetUnavailable(str(exc)) from exc
        if self.outage:
            self.outage = False
            log.warning("redis at %s is reachable again; shared limits resume", self._where())
        return result

    def _failed(self, exc: BaseException) -> None:
        self.metrics.inc(ERRORS)
        self.down_until = time.monotonic() + RETRY_AFTER
        if not self.outage:
            self.outage = True
            self.metrics.inc(OUTAGES)
            how = "serving on this worker's own limits" if self.fail_open else "answering 503"
            log.warning("redis at %s unreachable (%s); %s", self._where(), exc or "timeout", how)

    def _where(self) -> str:
        return self.url.split("@")[-1]

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a pool whose server is gone
            pass
