"""Quota write-behind: per-token quota usage charged on the data plane, synced
to the store in the background (atomic increments, totals back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastgate.store.base import Store

__all__ = ["QuotaSync", "WriteBehind"]

log = logging.getLogger("fastgate.store")


class WriteBehind:
    """The loop of a write-behind: `sync()` every `interval` seconds on the data
    plane's loop; failures warned at most every 5 s; `close` stops it and makes
    a last attempt to flush. Subclasses give `sync`, `unsaved` and `what`."""

    what = "sync"  # in the warning: "<what> sync failed"
    interval: float
    failures: int
    _task: asyncio.Task[None] | None
    _last_warn: float

    async def sync(self) -> None:
        raise NotImplementedError

    def unsaved(self) -> dict[str, int]:
        """What `close` must still write (empty: nothing)."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                now = time.monotonic()
                if now - self._last_warn >= 5:
                    self._last_warn = now
                    log.warning("%s sync failed (%d in a row): %s", self.what, self.failures, exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the loop and make a last attempt to flush (SIGTERM)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        pending = self.unsaved()
        if any(pending.values()):
            try:
                await asyncio.wait_for(self.sync(), timeout)
            except Exception as exc:
                log.error("%s not saved at exit: %s (%s)", self.what, exc, pending)


class QuotaSync(WriteBehind):
    """Write-behind of per-token quota usage, for the data plane (runs on ITS loop).

    `used` is the in-memory dict the hot path reads (token name -> micro-dollars
    used, e.g. App.quota_used); the hot path calls `charge()` instead of adding
    to it directly. Every `interval` seconds `sync()` sends the deltas charged
    since the last sync as atomic increments and gets every token's total back in
    the same transaction, then sets used = total + what was charged meanwhile:
    other instances' usage comes back, local charges are never lost. A failed
    sync keeps its deltas for the next one (a failure after the commit reached
    the database can count a delta twice: quotas err on the safe side).
    """

    what = "quota"

    def __init__(self, store: Store, used: dict[str, int], interval: float = 0.5) -> None:
        self.store = store
        self.used = used
        self.interval = interval
        self.pending: dict[str, int] = {}
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._last_warn = 0.0

    def charge(self, name: str, micros: int) -> None:
        """Hot path: count `micros` against `name` now; it reaches the store within `interval`."""
        self.used[name] = self.used.get(name, 0) + micros
        self.pending[name] = self.pending.get(name, 0) + micros

    async def sync(self) -> None:
        batch, self.pending = self.pending, {}
        try:
            totals = await self.store.call(self.store.sync_quota(batch))
        except BaseException:
            for k, v in batch.items():
                self.pending[k] = self.pending.get(k, 0) + v
            raise
        used, pending = self.used, self.pending
        for name in set(used) | set(totals):
            used[name] = totals.get(name, 0) + pending.get(name, 0)

    def unsaved(self) -> dict[str, int]:
        return self.pending
