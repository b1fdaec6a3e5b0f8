"""Supervisor: bind, fork the workers, relay signals and readiness, restart a dead worker.

One process by default: `serve` binds (without SO_REUSEPORT: a port another
program or another fastgate holds is refused with one line) and runs the
worker itself, which talks sd_notify to systemd.

`--workers N` forks N workers. Each binds its own SO_REUSEPORT socket on the
port (the kernel spreads connections over them) and listens once it can
serve; a worker that dies takes its socket out of the group, so no new
connection waits in a backlog nobody accepts. The supervisor holds no
listening socket: it probes the port without SO_REUSEPORT first (refused if
anything holds it), then keeps a bound, never listening SO_REUSEPORT socket
that reserves the port (port 0 resolved once; a respawned worker binds the
same port again). Its loop (`selectors`) wakes on signals (a wakeup fd), on
its workers' sd_notify lines (one SEQPACKET socketpair each) and on timers:

- READY=1 to systemd (and the "listening on" line) once every worker said
  READY=1; a worker that dies before that stops the instance (exit 1).
- SIGHUP: RELOADING=1, re-read the config (an invalid file keeps the last good
  one; keys that need a restart are named), SIGHUP to every worker, READY=1
  once each of them reloaded. A respawned worker runs the current config.
- SIGTERM/SIGINT: STOPPING=1, forwarded to every worker; exit when all exited.
- a worker that exits while not stopping is restarted in its slot (same
  index: run-directory sockets and counters, and the admin API for worker 0),
  at once, or with a backoff up to 5 s if its slot keeps dying.
- WatchdogSec: WATCHDOG=1 to systemd every half interval from this loop, and a
  worker silent for a whole interval (its loop stuck) is killed and restarted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from fastgate.config import Config, ConfigError, load_config
from fastgate.logs import announce
from fastgate.sdnotify import Notifier, parse
from fastgate.server import StartupError, _run_worker, note_early_hup, restart_needed

log = logging.getLogger("fastgate")

RELOAD_TIMEOUT = 10.0  # READY=1 after a reload at the latest this long after SIGHUP
_FORWARDED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    listen: bool = True,
    reuse_addr: bool = True,
    what: str = "",
) -> socket.socket:
    """A TCP socket bound to (host, port); StartupError (one line) if it cannot be.
    `reuse_port`: join the SO_REUSEPORT group of this instance's other workers."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(4096)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why += " (another fastgate or another program holds it)"
        raise StartupError(f"cannot listen on {what}{host}:{port}: {why}") from None
    sock.setblocking(False)
    return sock


def probe(host: str, port: int, what: str = "") -> int:
    """Bind without SO_REUSEPORT and let go: StartupError if anything holds the
    address (a SO_REUSEPORT group of another process included). The bound port."""
    with bind(host, port, listen=False, what=what) as sock:
        return int(sock.getsockname()[1])


def _reserve(host: str, port: int) -> socket.socket:
    """The supervisor's hold on the port: bound, never listening, SO_REUSEPORT
    (workers join it). Without SO_REUSEADDR it also keeps another program's
    probe out while no worker listens; with it if connections of an earlier
    run still linger in TIME_WAIT."""
    try:
        return bind(host, port, reuse_port=True, listen=False, reuse_addr=False)
    except StartupError:
        return bind(host, port, reuse_port=True, listen=False)


def serve(
    cfg: Config, host: str | None = None, port: int | None = None, workers: int | None = None
) -> int:
    """Bind, announce, and serve until a stop signal; returns the exit code."""
    host = host if host is not None else cfg.server.host
    port = port if port is not None else cfg.server.port
    workers = workers if workers is not None else cfg.server.workers
    notifier = Notifier.from_env()
    try:
        admin = cfg.admin
        if admin.port and admin.resolve_token():
            probe(admin.host, admin.port, what="admin ")
        if workers <= 1:
            sock = bind(host, port)
            port = sock.getsockname()[1]
        else:
            port = probe(host, port)
            reserve = _reserve(host, port)
    except StartupError as exc:
        print(f"fastgate: {exc}", file=sys.stderr, flush=True)
        return 1
    if workers <= 1:
        announce(f"listening on http://{host}:{port} (workers=1, pid={os.getpid()})")
        return _run_worker(cfg, sock, notify=notifier)
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
        return Supervisor(cfg, host, port, workers, run_dir, notifier, reserve).run()
    finally:
        reserve.close()
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class _Slot:
    """One worker slot: its process (pid 0: none now) and link."""

    index: int
    pid: int = 0
    link: socket.socket | None = None  # our end of its SEQPACKET socketpair
    ready: bool = False
    reloading: bool = False
    heard: float = 0.0  # monotonic time of its last message
    respawn_at: float = 0.0  # > 0: to be started then
    deaths: list[float] = field(default_factory=list)


class Supervisor:
    """The parent of `--workers N` (see the module docs)."""

    def __init__(
        self,
        cfg: Config,
        host: str,
        port: int,
        count: int,
        run_dir: str,
        notifier: Notifier,
        reserve: socket.socket,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.port = port
        self.count = count
        self.run_dir = run_dir
        self.notifier = notifier
        self.reserve = reserve
        self.slots = [_Slot(i) for i in range(count)]
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.started = False  # every worker was ready once (READY=1 sent)
        self.stopping = False
        self.reload_until = 0.0  # > 0: a reload is waiting for its workers
        self.next_ping = 0.0
        self.exit_code = 0

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        old = {sig: signal.signal(sig, _noop) for sig in sigs}
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not self.stopping or any(s.pid for s in self.slots):
                for key, _ in self.sel.select(self._timeout()):
                    if key.data is None:
                        self._signals()
                    else:
                        self._messages(key.data)
                self._reap()
                self._timers()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()
        return self.exit_code

    def _timeout(self) -> float | None:
        times = [s.respawn_at for s in self.slots if s.respawn_at]
        if self.reload_until:
            times.append(self.reload_until)
        if self.notifier.watchdog_interval and not self.stopping:
            times.append(self.next_ping)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _signals(self) -> None:
        try:
            data = self.wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for sig in data:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(sig)
            elif sig == signal.SIGHUP:
                self._reload()

    def _messages(self, slot: _Slot) -> None:
        link = slot.link
        while link is not None:
            try:
                data = link.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the worker is gone (reaped below)
                self._unlink(slot)
                return
            slot.heard = time.monotonic()
            if parse(data).get("READY") == "1":
                slot.ready = True
                slot.reloading = False
                self._check_ready()

    def _check_ready(self) -> None:
        """READY=1 when every worker first served, and when a reload is done."""
        if not self.started:
            if not all(s.ready for s in self.slots):
                return
            self.started = True
            announce(
                f"listening on http://{self.host}:{self.port} "
                f"(workers={self.count}, pid={os.getpid()})"
            )
        elif not self.reload_until or any(s.reloading for s in self.slots):
            return
        else:
            log.info("every worker reloaded")
        self.reload_until = 0.0
        self.notifier.ready(f"serving on {self.host}:{self.port}, {self.count} workers")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            self._unlink(slot)
            slot.pid = 0
            was_ready, slot.ready, slot.reloading = slot.ready, False, False
            code = os.waitstatus_to_exitcode(status)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            if self.stopping:
                # -SIGTERM: one still starting (its handlers not installed yet).
                if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    self.exit_code = 1
                    log.error("worker %d (pid %d) %s while stopping", slot.index, pid, how)
                continue
            if not self.started and not was_ready:
                log.error("worker %d (pid %d) %s before it served: stopping", slot.index, pid, how)
                self.exit_code = 1
                self._stop(signal.SIGTERM)
                continue
            now = time.monotonic()
            slot.deaths = [t for t in slot.deaths if now - t < 10.0] + [now]
            n = len(slot.deaths)
            delay = 0.0 if n <= 2 else min(0.1 * 2 ** (n - 3), 5.0)
            log.error(
                "worker %d (pid %d) %s; restarting it%s",
                slot.index,
                pid,
                how,
                f" in {delay:.1f} s" if delay else "",
            )
            slot.respawn_at = now + delay if delay else 0.0
            if not delay:
                self._spawn(slot)
            self._check_ready()  # a reload may have been waiting for it

    def _timers(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.respawn_at and now >= slot.respawn_at and not self.stopping:
                slot.respawn_at = 0.0
                self._spawn(slot)
        if self.reload_until and now >= self.reload_until:
            late = [s.index for s in self.slots if s.reloading]
            log.warning("workers %s did not confirm the reload within %.0f s", late, RELOAD_TIMEOUT)
            for s in self.slots:
                s.reloading = False
            self._check_ready()
        interval = self.notifier.watchdog_interval
        if interval and not self.stopping and now >= self.next_ping:
            self.notifier.watchdog()
            self.next_ping = now + interval
            for s in self.slots:  # workers ping every `interval` too: allow two
                if s.pid and s.ready and now - s.heard > 2 * interval:
                    log.error(
                        "worker %d (pid %d) silent for %.1f s (watchdog): killing it",
                        s.index,
                        s.pid,
                        now - s.heard,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(s.pid, signal.SIGKILL)

    # -- signals --------------------------------------------------------------------------

    def _stop(self, sig: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.notifier.stopping()
        for slot in self.slots:
            slot.respawn_at = 0.0
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _reload(self) -> None:
        if self.stopping:
            return
        self.notifier.reloading()
        path = self.cfg.path
        if path is not None:
            try:
                cfg = load_config(path)
            except ConfigError as exc:
                log.error("reload failed, keeping the running config:\n%s", exc)
            else:
                changed = restart_needed(self.cfg, cfg)
                if changed:
                    log.warning("changed keys that need a restart to apply: %s", ", ".join(changed))
                self.cfg = cfg  # what a restarted worker runs
        for slot in self.slots:
            if slot.pid:
                slot.reloading = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGHUP)
        self.reload_until = time.monotonic() + RELOAD_TIMEOUT
        self._check_ready()

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Signals wait until the child has its own handlers (ours would write to
        # our wakeup fd: the child's SIGHUP would look like the supervisor's).
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
            ours.close()
            theirs.close()
            log.error("cannot start worker %d: %s; retrying in 1 s", slot.index, exc)
            slot.respawn_at = time.monotonic() + 1.0
            return
        if pid == 0:  # the worker
            ours.close()
            self._child(slot.index, theirs)  # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        theirs.close()
        ours.setblocking(False)
        self.sel.register(ours, selectors.EVENT_READ, slot)
        slot.pid, slot.link, slot.ready, slot.heard = pid, ours, False, time.monotonic()

    def _unlink(self, slot: _Slot) -> None:
        if slot.link is not None:
            self.sel.unregister(slot.link)
            slot.link.close()
            slot.link = None

    def _child(self, index: int, link: socket.socket) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)  # the supervisor's; before anything else
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, note_early_hup)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
            # What only the supervisor uses (fork copied every descriptor).
            self.sel.close()
            for s in (self.wake_r, self.wake_w, self.reserve):
                s.close()
            for slot in self.slots:
                if slot.link is not None:
                    slot.link.close()
            sock = bind(self.host, self.port, reuse_port=True, listen=False)
            notify = Notifier(sock=link, watchdog_usec=self.notifier.watchdog_usec)
            code = _run_worker(self.cfg, sock, index, self.run_dir, self.count, notify)
        except StartupError as exc:
            print(f"fastgate: worker {index}: {exc}", file=sys.stderr, flush=True)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)


def _noop(_sig: int, _frame: object) -> None:
    """Signals reach the loop through the wakeup fd (the handler must be Python's)."""
