"""One serving process (a worker): its loop, App, listening socket and store.

SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests
(and requests whose head has started arriving) finish, bounded by
drain_timeout; /ready answers 503 meanwhile; flush the usage sink, exit 0.
SIGHUP: reload the config file, swap the snapshot without dropping a
connection, reopen the access log (`RESTART_KEYS`: what a reload cannot
change). Each step is announced with sd_notify (`sdnotify.py`): to systemd
when this process is the service, else to the supervisor. Binding, forking the
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
import sys
import time
from typing import Any

import uvloop

from fastgate.app import App
from fastgate.config import Config, ConfigError, load_config
from fastgate.http.client import IDLE, READING, ClientProtocol
from fastgate.logs import announce
from fastgate.sdnotify import Notifier
from fastgate.siblings import Siblings
from fastgate.snapshot import build_snapshot
from fastgate.store.base import QuotaSync, merge
from fastgate.store.budget import BudgetSync
from fastgate.store.link import StoreLink
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
    "store",
)

# Keys a SIGHUP reload cannot apply (read once at start): changing one needs a
# restart. Everything else is re-applied (README "Run as a service").
RESTART_KEYS = (
    "server.host",
    "server.port",
    "server.workers",
    "server.connect_timeout",
    "server.upstream_max_connections",
    "server.upstream_keepalive",
    "admin.host",
    "admin.port",
    "admin.token",
    "admin.token_env",
    "database.url",
    "database.refresh_interval",
    "ratelimit.backend",
    "ratelimit.redis_url",
    "ratelimit.key_prefix",
    "ratelimit.on_redis_error",
    "logging.usage_spool_dir",
    "logging.level",
)


def restart_needed(old: Config, new: Config) -> list[str]:
    """The RESTART_KEYS whose value differs between two configs (names only: a
    value may be a secret)."""

    def get(cfg: Config, key: str) -> Any:
        section, _, name = key.partition(".")
        return getattr(getattr(cfg, section), name)

    return [k for k in RESTART_KEYS if get(old, k) != get(new, k)]


class StartupError(Exception):
    """A listening address cannot be taken: one line for the operator, exit 1."""


_early_hup = False  # a SIGHUP that came before the worker's loop handled signals
_early_stop = False  # a SIGTERM/SIGINT that did


def note_early_hup(_sig: int, _frame: Any) -> None:
    """SIGHUP handler until the loop's own is installed: the reload runs once
    the worker serves (a reload during start-up is not lost)."""
    global _early_hup
    _early_hup = True


def note_early_stop(_sig: int, _frame: Any) -> None:
    """SIGTERM/SIGINT handler until the loop's own is installed: the worker starts,
    then drains and exits 0 at once (a stop during start-up is a clean stop)."""
    global _early_stop
    _early_stop = True


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
        notify: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        # sd_notify: to systemd (one process), to the supervisor (a worker), or nowhere.
        self.notify = notify if notify is not None else Notifier()
        self.exit_code = 0
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
        self._admin_started = False
        self.link = StoreLink(cfg.database)  # the store's state: connecting, ok, unreachable
        self.version = 1
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._watchdog: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        self._ping_watchdog()
        if await self._open_store(loop):
            self.link.reached()
        merged = self._merged(cfg)
        sink = usage_sink(  # a writer process (store writes, access log, spool)
            cfg.logging.access_log,
            database=cfg.database.url,
            store=self.store,  # None: the writer spools until told the store is up
            spool_dir=self._spool_dir(cfg),
            batch_size=1000,  # bounds the memory a batch in flight holds
        )
        sink.start()
        app = self.app = App(merged, build_snapshot(merged, self.version), loop, sink)
        app.file_cfg = cfg
        app.workers = self.count
        if app.hooks is not None:
            app.hooks.start(self.count)
        app.store_status = self.link.view
        if self.index == 0 and app.snapshot.unpriced:  # once per instance, at start
            log.warning(
                "models routed with no price (served at cost 0, recorded unpriced): %s",
                ", ".join(app.snapshot.unpriced),
            )
        if self.store is not None:
            await self._store_up(at_start=True)
        else:  # serve the file's entries; retry in the background
            self._tasks.append(loop.create_task(self._connect_loop()))
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
        if self.index == 0 and not await self._start_admin():
            self.exit_code = 1  # the admin port is taken: nothing was served
            self._stop.set()
        else:
            self.server = await loop.create_server(
                lambda: ClientProtocol(app), sock=self.sock, backlog=4096
            )
            self._serving(loop)
        await self._stop.wait()
        await self.drain()
        if app.hooks is not None:
            await app.hooks.aclose()
        if self._watchdog is not None:
            self._watchdog.cancel()
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

    async def _open_store(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One attempt to open the store and load its state (see store/link.py);
        False: not reached (recorded in `self.link`), the file's entries serve.
        The caller marks the link reached once what it loaded serves."""
        store = await self.link.start()
        if store is None:
            return False
        self.store = store
        try:
            await self._load()
        except Exception as exc:
            self.store, self.state = None, None
            await loop.run_in_executor(None, store.stop)
            self.link.failed(exc)
            return False
        return True

    async def _connect_loop(self) -> None:
        """The store was not reached at start: retry with backoff until it is, then
        merge its entries into the snapshot and start what needs it."""
        loop = asyncio.get_running_loop()
        while True:
            await self.link.wait_retry()
            if await self._open_store(loop):
                break
        # The store's tokens serve from the swap on: their quota used and budget
        # spend are loaded first, so that their first request is admitted on them
        # (a swap before the load let a spent key through meanwhile).
        # (The snapshot built for the load lists their budgets; the one installed is
        # built again, from the configuration current after the load's await.)
        await self._load_spend(build_snapshot(self._merged(self.cfg), self.version))
        self._install(self.cfg)
        # /ready says "ok" from here, when the store's entries serve (marked at the
        # open, a probe could see "ok" beside the file's snapshot).
        self.link.reached()
        log.info("store entries merged: snapshot %d", self.version)
        await self._store_up(at_start=False)

    async def _load_spend(self, snapshot: Any = None) -> None:
        """Quota used and budget spend from the store, before `snapshot` (the one
        serving, by default) serves: the quota and budget write-behinds."""
        app = self.app
        assert app is not None and self.store is not None and self.state is not None
        # Charges made while the store was away (file tokens) are deltas to add.
        quota = self.quota = QuotaSync(self.store, app.quota_used)
        quota.pending = {name: used for name, used in app.quota_used.items() if used}
        for name, used in self.state.quota_used.items():
            app.quota_used[name] = used + quota.pending.get(name, 0)
        app.charge_hook = quota.charge
        # Budgets: the current periods' spend (and what was charged meanwhile)
        # before the first request, then write-behind every 0.5 s.
        self.budget_sync = BudgetSync(self.store, app.budgets)
        try:
            await self.budget_sync.sync(snapshot)
        except Exception as exc:
            log.warning("budget spend not loaded at start (retrying): %s", exc)

    async def _store_up(self, at_start: bool) -> None:
        """The store is reached: quota and budget write-behinds (loaded first at
        start; `_connect_loop` loads them before its swap), the refresh task, the
        writer's replay of the spool, the admin API (worker 0)."""
        app = self.app
        assert app is not None and self.store is not None and self.state is not None
        if at_start:
            await self._load_spend()
        store = self.store  # batch billing asks it whether a file was billed already
        app.uids_present = lambda uids: store.call(store.uids_present(uids))
        assert self.quota is not None and self.budget_sync is not None
        self.quota.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._refresh_loop()))
        self.budget_sync.start()
        if not at_start:
            store_up = getattr(app.sink, "store_up", None)  # (no writer for :memory:)
            if store_up is not None:
                store_up()  # the writer opens the database and replays the spool
            if self.index == 0:  # (at start, run() starts it once the data plane listens)
                try:
                    await self._start_admin()
                except Exception as exc:
                    log.error("admin API not started: %s", exc)

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
                self.link.reached()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.link.failed(exc)  # logged when it begins and when it ends

    # -- admin --------------------------------------------------------------------------

    async def _start_admin(self) -> bool:
        """Start the admin API if configured; False if its port cannot be bound."""
        admin = self.cfg.admin
        token = admin.resolve_token()
        if not token or self.store is None or self._admin_started:
            return True  # without a store it starts when the store is reached (_store_up)
        self._admin_started = True
        from aiohttp import web

        from fastgate.admin.app import AdminContext, build_admin_app

        ctx = AdminContext(
            store=self.store,
            token=token,
            config=lambda: self.cfg,
            status=self.instance_status,
            routers=self.routers_report,
        )
        runner = web.AppRunner(build_admin_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, admin.host, admin.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            print(
                f"fastgate: cannot listen on admin {admin.host}:{admin.port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
                flush=True,
            )
            return False
        self.admin_runner = runner
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        announce(f"admin on http://{admin.host}:{bound}")
        return True

    def status(self) -> dict[str, Any]:
        app = self.app
        assert app is not None
        snap = app.snapshot
        file_names = {c.name for c in self.cfg.channels}
        return {
            "snapshot_version": snap.version,
            "store_version": self.store_version,
            "ready": app.ready,
            "store": self.link.status(),
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

    def routers_report(self) -> dict[str, Any]:
        """GET /admin/routers: this worker's routing order and latency measurements."""
        from fastgate.gateway.route_report import describe

        app = self.app
        assert app is not None
        return {**describe(app.snapshot, app.latency), "worker": self.index, "pid": os.getpid()}

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

    def _serving(self, loop: asyncio.AbstractEventLoop) -> None:
        """The port accepts and the snapshot is loaded: take the signals, run a
        reload asked for during start-up, and say READY=1."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._terminate)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if _early_hup:
            self.reload()
        if _early_stop:
            self._terminate()
        self.notify.ready(f"serving (snapshot {self.version})")

    def _terminate(self) -> None:
        if not self._stop.is_set():
            self.notify.stopping()
            if self.app is not None:
                self.app.stopping = True  # /ready: 503 from now on
            self._stop.set()

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 every half interval, from this loop: a stuck loop stops it."""
        interval = self.notify.watchdog_interval
        if interval > 0:
            self.notify.watchdog()
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(interval, self._ping_watchdog)

    def reload(self) -> None:
        """SIGHUP: re-read the file (an invalid one is logged and the running
        config kept), swap the snapshot, re-apply [cache], [routing], the
        per-connection [server] limits and the access log, which is reopened
        (log rotation). RELOADING=1 ... READY=1 around it."""
        global _early_hup
        _early_hup = False
        app = self.app
        path = self.cfg.path
        if app is None or path is None:
            return
        self.notify.reloading()
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config:\n%s", exc)
            self.notify.ready("reload failed: running the last good config")
            return
        if self.run_dir is None:  # one process; with workers the supervisor says it once
            changed = restart_needed(self.cfg, cfg)
            if changed:
                log.warning("changed keys that need a restart to apply: %s", ", ".join(changed))
        self.cfg = cfg
        self._install(cfg)
        app.sink.access_log = cfg.logging.access_log
        app.sink.reopen()
        log.info("config reloaded (snapshot %d)", self.version)
        self.notify.ready(f"serving (snapshot {self.version})")

    async def drain(self) -> None:
        """Stop accepting, close idle connections, let what is in flight finish
        (and requests whose head has started arriving: they get an answer with
        `Connection: close`), bounded by drain_timeout."""
        app = self.app
        assert app is not None
        app.stopping = True
        if self.server is not None:
            self.server.close()  # stop accepting
        for c in list(app.clients):
            if c.exchange is None and not c.queue and c.state == IDLE:
                c.close()
        deadline = time.monotonic() + self.cfg.server.drain_timeout
        while time.monotonic() < deadline and (
            app.inflight > 0 or any(c.state == READING for c in app.clients)
        ):
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
    cfg: Config,
    sock: socket.socket,
    index: int = 0,
    run_dir: str | None = None,
    count: int = 1,
    notify: Notifier | None = None,
) -> int:
    """Serve until SIGTERM; the exit code (1: the admin port could not be bound)."""
    signal.signal(signal.SIGHUP, note_early_hup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, note_early_stop)
    _tune_gc()
    worker = Worker(cfg, sock, index, run_dir, count, notify)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(worker.run())
    return worker.exit_code
