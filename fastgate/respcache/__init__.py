"""The response cache's backends (docs/contract.md section 7), built once per worker.

`build_cache` returns what `App.cache` holds: None when `[cache] enabled` is
false, a `MemoryCache` (cachetools, this worker's own entries) or a
`RedisCache` (shared by every worker and instance). Both answer the calls the
policy (`fastgate.gateway.cache`) makes: `get(key, done)`, `put(key, entry)`,
and `aclose()` at shutdown. The policy never imports this package.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastgate.config.model import CacheConfig
from fastgate.gateway.cache import ENTRIES, HELD
from fastgate.metrics import Metrics
from fastgate.respcache.memory import MemoryCache

# `RedisCache` lives in `respcache.redis`, imported by `build_cache` only when a
# config asks for it (redis-py is not loaded otherwise).
__all__ = ["MemoryCache", "build_cache"]


def build_cache(cfg: CacheConfig, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> Any:
    """The backend `cfg` asks for, or None when the cache is off."""
    metrics.gauges.pop(ENTRIES, None)
    metrics.gauges.pop(HELD, None)
    if not cfg.enabled:
        return None
    if cfg.backend == "redis":
        from fastgate.respcache.redis import RedisCache

        return RedisCache(cfg, loop, metrics)
    return MemoryCache(cfg, metrics)
