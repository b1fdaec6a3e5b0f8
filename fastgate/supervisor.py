"""Supervisor: bind, fork the workers, forward signals, restart a dead worker.

One process by default. `--workers N` forks N processes that each accept on
the same port through their own SO_REUSEPORT socket (the kernel spreads
connections); the workers describe the whole instance to each other
(`siblings.py`: one scrape of /metrics, the admin status, breaker changes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from typing import Any

from fastgate.config import Config
from fastgate.logs import announce
from fastgate.server import _run_worker

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


def serve(
    cfg: Config, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Bind, announce, and serve until a stop signal; returns the exit code."""
    host = host if host is not None else cfg.server.host
    port = port if port is not None else cfg.server.port
    workers = workers if workers is not None else cfg.server.workers
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    announce(f"listening on http://{host}:{bound} (workers={workers}, pid={os.getpid()})")
    if workers <= 1:
        return _run_worker(cfg, sock)
    limited = [t.name for t in cfg.tokens if t.rpm or t.tpm or t.max_concurrency]
    limited += [c.name for c in cfg.channels if c.rpm]
    if limited and cfg.ratelimit.backend == "memory":
        log.warning(
            'rate limits are per worker with [ratelimit] backend = "memory": with %d '
            'workers %s may each see up to %d times its limits; set backend = "redis" '
            "to hold them for the whole instance (and fleet)",
            workers,
            ", ".join(limited[:5]) + (" ..." if len(limited) > 5 else ""),
            workers,
        )
    run_dir = tempfile.mkdtemp(prefix="fastgate-")  # 0700: the workers' sockets and counters
    if len(run_dir) > 90:  # a Unix socket path must fit in 108 bytes
        os.rmdir(run_dir)
        run_dir = tempfile.mkdtemp(prefix="fastgate-", dir="/tmp")
    try:
        return _supervise(cfg, sock, host, bound, workers, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _supervise(
    cfg: Config, sock: socket.socket, host: str, port: int, workers: int, run_dir: str
) -> int:
    """Fork the workers, forward signals, restart one that crashes, exit when all stopped.

    A restarted worker keeps its slot index: the same run-directory sockets and
    counters, and for worker 0 the inherited listening socket (still open here,
    so connections queued on it while no one accepted are served) and the admin API.
    """
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
                code = _run_worker(cfg, own, index, run_dir, workers)
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
                spawn(index)
    sock.close()
    return exit_code
