"""The memory backend: a cachetools TTLCache per worker.

Bounded by `max_entries` (the least recently used entry makes room, counted
in `fastgate_cache_evictions_total`) and `max_entry_bytes` (a larger body is
refused), so it holds at most max_entries x max_entry_bytes body bytes. Entries
older than `ttl` are not served. Everything happens on the worker's loop thread:
no lock, and `get` answers at once.
"""

from __future__ import annotations

from typing import Any

from cachetools import Cache, TTLCache

from fastgate.config.model import CacheConfig
from fastgate.gateway.cache import ENTRIES, EVICTIONS, HELD, Entry
from fastgate.metrics import Metrics


class _Entries(TTLCache):
    """A TTLCache that keeps the sum of its bodies' sizes and counts evictions."""

    def __init__(self, maxsize: int, ttl: float, metrics: Metrics) -> None:
        super().__init__(maxsize, ttl)
        self.held = 0
        self.metrics = metrics

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()  # the least recently used entry, to make room
        self.held -= len(value.body)
        self.metrics.inc(EVICTIONS)
        return key, value

    def expire(self, time: float | None = None) -> Any:
        expired = super().expire(time)
        for _key, value in expired:
            self.held -= len(value.body)
        return expired


class MemoryCache:
    def __init__(self, cfg: CacheConfig, metrics: Metrics) -> None:
        self.max_entry_bytes = cfg.max_entry_bytes
        self.entries = _Entries(cfg.max_entries, cfg.ttl, metrics)
        metrics.gauges[ENTRIES] = self.count
        metrics.gauges[HELD] = self.held_bytes

    def get(self, key: str, done: Any) -> Entry | None:
        """The entry under `key`, or None (never later: `done` is not called)."""
        return self.entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        size = len(entry.body)
        if size > self.max_entry_bytes:
            return
        entries = self.entries
        with entries.timer as now:  # one instant for the expiry and the insert
            entries.expire(now)
            try:
                old = Cache.__getitem__(entries, key)  # raises KeyError when absent
            except KeyError:
                old = None
            if old is not None:
                entries.held -= len(old.body)
            entries[key] = entry
            entries.held += size

    def count(self) -> int:
        self.entries.expire()
        return len(self.entries)

    def held_bytes(self) -> int:
        self.entries.expire()
        return self.entries.held

    async def aclose(self) -> None:
        self.entries.clear()
