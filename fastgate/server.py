"""Server: bind, workers, signals, drain, reload.

One process by default. `--workers N` forks N processes that each accept on
the same port through their own SO_REUSEPORT socket (the kernel spreads
connections). SIGTERM/SIGINT: stop accepting, let in-flight requests finish
(bounded by drain_timeout), flush the usage sink, exit 0. SIGHUP: reload the
config file and swap the snapshot without dropping a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from fastgate.http.client import ClientProtocol
from fastgate.snapshot import build_snapshot
from fastgate.store.logsink import LogSink

log = logging.getLogger("fastgate")


def bind(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Worker:
    """One serving process: an event loop, an App, a listening socket."""

    def __init__(self, cfg: Config, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        self.app: App | None = None
        self.server: asyncio.base_events.Server | None = None
        self.version = 1
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        sink = LogSink(cfg.logging.access_log)
        sink.start()
        app = self.app = App(cfg, build_snapshot(cfg, self.version), loop, sink)
        app.start_sweeper()
        self.server = await loop.create_server(
            lambda: ClientProtocol(app), sock=self.sock, backlog=4096
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self._stop.wait()
        await self.drain()
        sink.close()

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
        self.version += 1
        app.swap(build_snapshot(cfg, self.version), cfg)
        app.sink.access_log = cfg.logging.access_log
        self.cfg = cfg
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


def _run_worker(cfg: Config, sock: socket.socket) -> int:
    worker = Worker(cfg, sock)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(worker.run())
    return 0


def serve(
    cfg: Config, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Bind, announce, and serve until a stop signal; returns the exit code."""
    host = host if host is not None else cfg.server.host
    port = port if port is not None else cfg.server.port
    workers = workers if workers is not None else cfg.server.workers
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    print(
        f"fastgate: listening on http://{host}:{bound} (workers={workers}, pid={os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    if workers <= 1:
        return _run_worker(cfg, sock)
    return _supervise(cfg, sock, host, bound, workers)


def _supervise(cfg: Config, sock: socket.socket, host: str, port: int, workers: int) -> int:
    """Fork the workers, forward signals, restart one that crashes, exit when all stopped."""
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                own = sock if index == 0 else bind(host, port)
                if index != 0:
                    sock.close()
                code = _run_worker(cfg, own)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(workers):
        spawn(i)
    # Worker 0 keeps the inherited socket; the parent must not accept on it.
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            exit_code = exit_code or 1
            if not stopping and index is not None:
                log.error("worker %d (pid %d) exited with %d; restarting", index, pid, code)
                exit_code = 0
                spawn(index if index != 0 else workers)  # a new socket for a respawned worker 0
    sock.close()
    return exit_code
