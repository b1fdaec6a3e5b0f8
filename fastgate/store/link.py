"""A worker's link to its store: reached at start, or retried in the background.

Why: a database that is down (Postgres refusing, a SQLite file whose directory
cannot be created yet) when a worker starts must not stop it from serving, and
must not be given up on either. The worker makes one attempt before it serves
(so a reachable store's entries serve from the first request); when that fails
it serves the config file's entries, the usage writer spools, and
`StoreLink.wait_retry()` paces the retries (0.5 s doubling to 30 s). Once a retry
reaches the store the worker merges its entries and starts what needs it (quota
and budget write-behinds, the refresh task, the admin API on worker 0, the
writer's replay of the spool).

States (`state`), as `/ready` and the admin `status` show them:

- "connecting": not reached since the worker started; the file's entries
  serve and usage records wait in the spool. `retries` counts failed attempts.
- "ok": reached; the snapshot holds the file's and the store's entries.
- "unreachable": reached once, then a refresh failed; the last good snapshot
  serves. `retries` counts failed refreshes since.

`since` is the unix time the state began. A state is logged when it begins
(the first failure) and when it ends, not at every retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastgate.config import DatabaseConfig
from fastgate.store.base import Store, store_for

__all__ = ["RETRY_MAX", "RETRY_START", "StoreLink"]

log = logging.getLogger("fastgate")

RETRY_START = 0.5  # seconds before the first background retry
RETRY_MAX = 30.0  # the delay doubles up to this


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


class StoreLink:
    """The store's state for one worker (see the module docs)."""

    def __init__(self, database: DatabaseConfig) -> None:
        self.database = database
        self.state = "connecting"
        self.error = ""
        self.retries = 0
        self.since = time.time()
        self._delay = RETRY_START
        # What /ready shows: the App holds this very dict (updated in place).
        self.view: dict[str, Any] = {"store": "connecting"}

    # -- attempts -----------------------------------------------------------------------

    async def start(self) -> Store | None:
        """One attempt to open the store (migrations included): the started store,
        or None (the failure is recorded)."""
        store = store_for(self.database)
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed(exc)
            return None
        return store

    async def wait_retry(self) -> None:
        """Sleep before the next background retry: 0.5 s, doubling to 30 s."""
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, RETRY_MAX)

    # -- state --------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def failed(self, exc: BaseException) -> None:
        """An attempt (while connecting) or a refresh (once reached) failed."""
        error = _describe(exc)
        if self.state == "ok":
            log.error("store refresh failed, serving the last good snapshot: %s", error)
            self._enter("unreachable")
        elif self.retries == 0:
            if self.state == "connecting":
                log.error(
                    "database unreachable at start, serving the config file's entries "
                    "(usage records go to the spool); retrying in the background: %s",
                    error,
                )
        else:
            log.debug("store still unreachable (%d failures): %s", self.retries + 1, error)
        self.retries += 1
        self.error = error
        self._show()

    def reached(self) -> None:
        """The store answered (opened and loaded, or a refresh succeeded)."""
        if self.state == "ok":
            return
        took = time.time() - self.since
        if self.state == "connecting" and self.retries:
            log.info(
                "database reached after %d failed attempts (%.1f s)",
                self.retries,
                took,
            )
        elif self.state == "unreachable":
            log.info("store reachable again after %.1f s", took)
        self._enter("ok")
        self._show()

    def _enter(self, state: str) -> None:
        self.state = state
        self.since = time.time()
        self.retries = 0
        self.error = ""

    def _show(self) -> None:
        view = self.view
        view.clear()
        view["store"] = self.state
        if self.error:
            view["store_error"] = self.error

    def status(self) -> dict[str, Any]:
        """The admin status's "store" (one worker's view)."""
        return {
            "ok": self.ok,
            "state": self.state,
            "error": self.error,
            "retries": self.retries,
            "since": round(self.since, 3),
            "backend": "postgres" if self.database.is_postgres else "sqlite",
        }
