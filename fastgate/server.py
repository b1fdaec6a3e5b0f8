"""One serving process (a worker): its loop, App, listening socket and store.

SIGTERM/SIGINT: stop accepting, let in-flight requests finish (bounded by
drain_timeout), flush the usage sink, exit 0. SIGHUP: reload the config file
and swap the snapshot without dropping a connection. Binding, forking the
workers and restarting them is `supervisor.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from typing import Any

import uvloop

from fastgate.app import App
from fastgate.config import Config, ConfigError, load_config
from fastgate.http.client import ClientProtocol
from fastgate.logs import announce
from fastgate.siblings import Siblings
from fastgate.snapshot import build_snapshot
from fastgate.store.base import QuotaSync, merge, store_for
from fastgate.store.budget import BudgetSync
from fastgate.store.writer_sink import usage_sink

log = logging.getLogger("fastgate")


# What the admin status lists per worker (from each worker's Worker.status()).
WORKER_FIELDS = (
    "index",
    "pid",
    "ready",
    "inflight",
    "client_connections",
    "upstream_connections",
    "snapshot_version",
    "store_version",
    "breakers",
    "responses",
    "usage_sink",
)


class Worker:
    """One serving process: an event loop, an App, a listening socket, the store.

    The store (SQLite or Postgres) runs on its own thread; this loop only awaits
    futures from it off the hot path: the startup load, the refresh task, quota
    write-behind, the admin API. If the store cannot be reached the worker serves
    the file's entries and keeps retrying; /ready says so.
    """

    def __init__(
        self,
        cfg: Config,
        sock: socket.socket,
        index: int = 0,
        run_dir: str | None = None,
        count: int = 1,
    ) -> None:
        self.cfg = cfg
        self.sock = sock
        self.index = index
        self.run_dir = run_dir  # the supervisor's run directory (None: one process)
        self.count = count
        self.siblings: Siblings | None = None
        self.app: App | None = None
        self.server: asyncio.base_events.Server | None = None
        self.store: Any = None
        self.state: Any = None  # last StoreState loaded
        self.store_version = -1
        self.quota: Any = None
        self.budget_sync: Any = None
        self.admin_runner: Any = None
        self.version = 1
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        await self._open_store(loop)
        merged = self._merged(cfg)
        sink = usage_sink(  # a writer process (store writes, access log, spool)
            cfg.logging.access_log,
            database=cfg.database.url,
            store=self.store,
            spool_dir=self._spool_dir(cfg),
            batch_size=1000,  # bounds the memory a batch in flight holds
        )
        sink.start()
        app = self.app = App(merged, build_snapshot(merged, self.version), loop, sink)
        app.file_cfg = cfg
        if self.state is not None:
            app.quota_used.update(self.state.quota_used)
        if self.store is not None:
            self.quota = QuotaSync(self.store, app.quota_used)
            app.charge_hook = self.quota.charge
            self.quota.start()
            self._tasks.append(loop.create_task(self._refresh_loop()))
            # Budgets: the current periods' spend before the first request, then
            # write-behind every 0.5 s.
            self.budget_sync = BudgetSync(self.store, app.budgets)
            try:
                await self.budget_sync.sync()
            except Exception as exc:
                log.warning("budget spend not loaded at start (retrying): %s", exc)
            self.budget_sync.start()
        if app.fleet is not None:
            with contextlib.suppress(Exception):
                await app.budgets.refresh()
        app.start_sweeper()
        self._tasks += app.limits.start(loop, app.apply_cooldown)
        self._tasks += app.budgets.start(loop)
        if self.run_dir is not None:
            siblings = Siblings(self.run_dir, self.index, self.count, app, self.status)
            try:
                await siblings.start()
                self.siblings = app.siblings = siblings
            except OSError as exc:  # serve anyway; /metrics is then this worker's own
                log.error("worker %d cannot reach its siblings: %s", self.index, exc)
                await siblings.close()
        self.server = await loop.create_server(
            lambda: ClientProtocol(app), sock=self.sock, backlog=4096
        )
        if self.index == 0:
            await self._start_admin()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self._stop.wait()
        await self.drain()
        for task in self._tasks:
            task.cancel()
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        if self.siblings is not None:
            await self.siblings.close()
        if self.quota is not None:
            await self.quota.close()
        if self.budget_sync is not None:
            await self.budget_sync.close()
        await sink.aclose()
        if app.fleet is not None:
            await app.fleet.close()
        if app.cache is not None:
            await app.cache.aclose()
        if self.store is not None:
            await loop.run_in_executor(None, self.store.stop)

    # -- the store ------------------------------------------------------------------

    @staticmethod
    def _spool_dir(cfg: Config) -> str:
        if cfg.logging.usage_spool_dir:
            return cfg.logging.usage_spool_dir
        return str(cfg.base_dir / "usage-spool")

    async def _open_store(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            store = store_for(self.cfg.database)
            await loop.run_in_executor(None, store.start)
        except Exception as exc:
            log.error("database unavailable, serving the config file only: %s", exc)
            self.store_error = str(exc)
            return
        self.store = store
        try:
            await self._load()
        except Exception as exc:
            log.error("loading state from the database failed: %s", exc)
            self.store_error = str(exc)

    store_error = ""

    async def _load(self) -> bool:
        """Load the store's state if its version moved; True if it did."""
        store = self.store
        version = await store.call(store.version())
        if version == self.store_version and self.state is not None:
            return False
        state = await store.call(store.load())
        for problem in state.problems:
            log.warning("store entry not usable: %s", problem)
        self.state = state
        self.store_version = state.version
        return True

    def _merged(self, cfg: Config) -> Config:
        if self.state is None:
            return cfg
        warnings: list[str] = []
        merged = merge(cfg, self.state, warnings=warnings)
        for w in warnings:
            log.warning("%s", w)
        return merged

    def _install(self, cfg: Config) -> None:
        app = self.app
        assert app is not None
        self.version += 1
        merged = self._merged(cfg)
        app.swap(build_snapshot(merged, self.version), merged)
        app.file_cfg = cfg

    async def _refresh_loop(self) -> None:
        """Rebuild the snapshot when the store changes (NOTIFY or polling)."""
        loop = asyncio.get_running_loop()
        store = self.store
        wake = self._wake

        def notified(_version: int) -> None:  # runs on the store's thread
            loop.call_soon_threadsafe(wake.set)

        try:
            await store.call(store.listen(notified))
        except Exception as exc:
            log.warning("LISTEN unavailable, polling the store: %s", exc)
        interval = self.cfg.database.refresh_interval
        if self.store.__class__.__name__ == "SQLiteStore":
            interval = min(interval, 0.5)  # polling is the only signal between processes
        while True:
            try:
                async with asyncio.timeout(interval if store.listening else min(interval, 1.0)):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            try:
                if await self._load():
                    self._install(self.cfg)
                    log.info("store changed: snapshot %d", self.version)
                if self.store_error:
                    log.info("store reachable again")
                self.store_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.store_error:
                    log.error("store refresh failed, serving the last good snapshot: %s", exc)
                self.store_error = str(exc) or exc.__class__.__name__
            if self.app is not None:
                self.app.store_error = self.store_error

    # -- admin --------------------------------------------------------------------------

    async def _start_admin(self) -> None:
        admin = self.cfg.admin
        token = admin.resolve_token()
        if not token or self.store is None:
            return
        from aiohttp import web

        from fastgate.admin.app import AdminContext, build_admin_app

        ctx = AdminContext(
            store=self.store,
            token=token,
            config=lambda: self.cfg,
            status=self.instance_status,
        )
        runner = web.AppRunner(build_admin_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, admin.host, admin.port)
        await site.start()
        self.admin_runner = runner
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        announce(f"admin on http://{admin.host}:{bound}")

    def status(self) -> dict[str, Any]:
        app = self.app
        assert app is not None
        snap = app.snapshot
        file_names = {c.name for c in self.cfg.channels}
        return {
            "snapshot_version": snap.version,
            "store_version": self.store_version,
            "ready": app.ready,
            "store": {"ok": not self.store_error, "error": self.store_error},
            "channels": [
                {
                    "name": c.name,
                    "type": c.type,
                    "enabled": c.enabled,
                    "models": list(c.models),
                    "priority": c.priority,
                    "weight": c.weight,
                    "source": "file" if c.name in file_names else "store",
                }
                for c in app.cfg.channels
            ],
            "breakers": app.breakers.states(),
            "cooldowns": app.cooldowns(),
            "inflight": app.inflight,
            "pid": os.getpid(),
            "index": self.index,
            "client_connections": len(app.clients),
            "upstream_connections": len(app.pool.all),
            "responses": {str(k): n for k, n in sorted(app.metrics.status.items())},
            "usage_sink": {
                "written": app.sink.written,
                "dropped": app.sink.dropped,
                "spooled": getattr(app.sink, "spooled", 0),
            },
        }

    async def instance_status(self) -> dict[str, Any]:
        """The admin API's status: this worker's (top level, as one process shows
        it) plus `workers`, every worker that answered (itself first), and
        `inflight` summed over them."""
        own = self.status()
        answers = [own]
        if self.siblings is not None:
            answers += [
                st for _i, st in await self.siblings.gather(b"status") if isinstance(st, dict)
            ]
        out = dict(own)
        out["workers"] = [{k: st.get(k) for k in WORKER_FIELDS} for st in answers]
        out["workers_expected"] = self.count
        out["inflight"] = sum(st.get("inflight", 0) for st in answers)
        return out

    # -- signals --------------------------------------------------------------------------

    def reload(self) -> None:
        app = self.app
        path = self.cfg.path
        if app is None or path is None:
            return
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config:\n%s", exc)
            return
        self.cfg = cfg
        self._install(cfg)
        app.sink.access_log = cfg.logging.access_log
        log.info("config reloaded (snapshot %d)", self.version)

    async def drain(self) -> None:
        app = self.app
        assert app is not None and self.server is not None
        app.stopping = True
        self.server.close()  # stop accepting
        for c in list(app.clients):
            if c.exchange is None and not c.queue:
                c.close()
        deadline = time.monotonic() + self.cfg.server.drain_timeout
        while app.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in list(app.clients):
            c.close()
        app.pool.close_all()
        app.stop_sweeper()
        await asyncio.sleep(0)


def _tune_gc() -> None:
    """Everything loaded at start is permanent: move it out of the collector's
    sight, and let the young generation grow before a collection (the hot path
    allocates a few short-lived objects per request, almost never a cycle)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _run_worker(
    cfg: Config, sock: socket.socket, index: int = 0, run_dir: str | None = None, count: int = 1
) -> int:
    _tune_gc()
    worker = Worker(cfg, sock, index, run_dir, count)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(worker.run())
    return 0
