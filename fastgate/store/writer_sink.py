"""The data plane's side of the usage writer process (see writer.py).

Why: the sink and store threads used to take the GIL from the data-plane thread
for every batch they encoded and wrote. Here the worker keeps no thread:

- `append(record)` (hot path) encodes the record and copies it into the
  shared-memory ring (ring.py) at once: no system call, and once it returns
  the record is in pages the writer process maps too, so a worker killed with
  SIGKILL right after a response ended loses no record (the writer sees EOF on
  its socket, writes what the ring holds and exits). The writer takes the ring
  in batches (`flush_interval`, at most 250 records a write). A writer that
  waits idle sets the ring's flag and the next record rings it (one small
  frame on the socket): that is the only send of the hot path, once per idle
  period.
- the records also wait in a list for the metrics (`observe`, the per-request
  families folded in batches: they cost the hot path a list append): the first
  of a batch arms one timer (`flush_interval`); a scrape folds at once (`ship`).
- a record stays in the ring until the writer settles it (committed, fsync'd
  to the spool, set aside or counted as dropped). If the writer dies (EOF on
  the socket), a new one is started on the same ring (after a short backoff if
  they keep dying) and goes on from what the last one settled; uids (set
  before the record is copied) make that replay idempotent.
- a record that finds the ring full waits in the worker, in order, until the
  writer settles more (these, and only these, would be lost to a SIGKILL of the
  worker). Records not yet settled are bounded by `max_queue`; a record beyond
  it is DROPPED and counted in `dropped` (logged at most once a second).
- the counters (`written`, `dropped`, `rejected`, `replayed`, `spooled`,
  `write_failures`, `degraded`, `last_error`) come back on the socket, a line
  after each write; the cumulative ones count over every writer of the ring:
  each writer stores them with every settle (ring.py's settle block), a new
  one goes on from the newest block, and the worker reads them from it when a
  writer dies (its last report may never have come).
- `reopen()` (SIGHUP), a new access log and "the store is up" are control
  frames on the socket, each carrying the ring's head: the writer writes the
  records before it first, so they apply in order with the records.

`aclose()` (SIGTERM, after the drain): shuts the socket's write side and waits
for the writer's final report (it writes everything and replays the spool for
at most `close_timeout` s); a writer that dies meanwhile is restarted on the
ring until the deadline.

One writer (and one ring) per worker process (not per instance): each worker
owns its socket, ring and restarts with no coordination, the spool directory is
already safe to share between processes (flock), and a writer crash touches one
worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

import orjson

from fastgate import logs
from fastgate.store.ring import CAPACITY, SLEEPING, Ring
from fastgate.store.usage import with_uid
from fastgate.store.writer import CONTROL, DOORBELL, HEADER

__all__ = ["WriterSink"]

log = logging.getLogger("fastgate.sink")

_LONG = 1024  # characters a string keeps in a record too big for the ring
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WriterSink:
    """Usage records to a writer process in batches (see the module docs)."""

    def __init__(
        self,
        access_log: str = "",
        *,
        database: str = "",
        spool_dir: str = "",
        max_queue: int = 200_000,
        flush_interval: float = 0.1,
        batch_size: int = 1000,
        write_timeout: float = 10.0,
        close_timeout: float = 10.0,
        spool_file_records: int = 2_000,  # what a replay cut mid-file writes again
        store_options: dict[str, Any] | None = None,
        wait_store: bool = False,
        ring_bytes: int = CAPACITY,
    ) -> None:
        self.ring_bytes = ring_bytes  # the shared ring's data area (ring.py)
        # A record takes at most a quarter of the ring (strings cut beyond).
        self._max_frame = max(ring_bytes // 4 - 4, 1024)
        self._access_log = access_log
        # True: the worker has not reached the store yet; the writer spools and
        # opens the database only once told (`store_up`), after the worker migrated it.
        self.wait_store = wait_store
        self.store_options = store_options or {}  # store_for keywords (busy_timeout=...)
        self.database = database
        self.spool_dir = spool_dir
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.write_timeout = write_timeout
        self.close_timeout = close_timeout
        self.spool_file_records = spool_file_records
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ring: Ring | None = None
        self._mm: Any = None  # the ring's mapping (its sleeping flag)
        self._head = 0  # bytes copied into the ring, ever
        self._settled = 0  # the writer's settled offset, as last read
        self._n = 0  # records copied into the ring, ever
        self._settled_n = 0  # records the writer settled, as last read
        self._wait: list[bytes] = []  # encoded records the full ring could not take
        self._doorbell = HEADER.pack(0, DOORBELL)
        self._out = bytearray()  # control bytes the socket has not taken yet
        self._in = bytearray()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._old: list[subprocess.Popen[bytes]] = []
        self._now: dict[str, Any] = {}  # the current writer's last report
        self._dropped_here = 0
        self._dropped_reported = 0
        self._warned_at = 0.0
        self._closing = False
        self._final = False
        self._changed: asyncio.Event | None = None
        self._restarts: list[float] = []
        self._restart_timer: asyncio.TimerHandle | None = None
        self.restarts = 0
        # Called with the records appended since the last call (every
        # `flush_interval`, and at a scrape): App folds them into the metrics.
        self.observe: Any = None
        self._fold: list[Any] = []
        self._fold_timer: asyncio.TimerHandle | None = None

    # -- counters -----------------------------------------------------------------------

    def _count(self, name: str) -> int:
        return int(self._now.get(name, 0))

    @property
    def written(self) -> int:
        return self._count("written")

    @property
    def dropped(self) -> int:
        return self._count("dropped") + self._dropped_here

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    @property
    def replayed(self) -> int:
        return self._count("replayed")

    @property
    def write_failures(self) -> int:
        return self._count("write_failures")

    @property
    def spooled(self) -> int:
        return int(self._now.get("spooled", 0))

    @property
    def degraded(self) -> bool:
        return bool(self._now.get("degraded", False))

    @property
    def last_error(self) -> str:
        return str(self._now.get("last_error", ""))

    @property
    def pending(self) -> int:
        """Records not yet settled by the writer (in the ring or waiting for room)."""
        if self._ring is not None:
            self._settled_n = self._ring.settled_n()
        return self._n - self._settled_n + len(self._wait)

    @property
    def writer_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def access_log(self) -> str:
        return self._access_log

    @access_log.setter
    def access_log(self, path: str) -> None:
        """Reload: the writer reopens the log (a control frame, in order with batches)."""
        if path != self._access_log:
            self._access_log = path
            self._send(self._control({"access_log": path}))  # no writer: its config has it

    def store_up(self) -> None:
        """The worker reached the store (after a start without it): the writer opens
        the database now and replays its spool (a control frame; a writer started
        later is told by its config)."""
        if self.wait_store:
            self.wait_store = False
            self._send(self._control({"store": "up"}))

    def reopen(self) -> None:
        """SIGHUP: the writer closes and reopens the access log (log rotation)."""
        self._send(self._control({"reopen": True}))

    # -- hot path -----------------------------------------------------------------------

    def append(self, record: Any) -> None:
        """Ship one record now (the data plane's cost: one encode, one copy)."""
        if (
            self._n - self._settled_n + len(self._wait) >= self.max_queue
            and self.pending >= self.max_queue  # re-read from the ring
        ):
            self._dropped_here += 1
            self._warn_drops()
            return
        try:
            payload = orjson.dumps(with_uid(record))
            if len(payload) > self._max_frame:
                payload = self._shrink(record, len(payload))
        except TypeError as exc:
            self._dropped_here += 1
            log.error("usage sink: a record not serialisable, dropped: %s", exc)
            return
        ring = self._ring
        if ring is None or self._wait:
            self._wait.append(payload)  # before start(), or behind others waiting
        else:
            head = ring.put(self._head, self._settled, payload)
            if head < 0:
                self._settled = ring.settled()
                head = ring.put(self._head, self._settled, payload)
            if head < 0:
                self._wait.append(payload)
            else:
                self._head = head
                self._n += 1
                if self._mm[SLEEPING]:  # the writer waits idle: wake it
                    self._mm[SLEEPING] = 0
                    self._send(self._doorbell)
        fold = self._fold
        fold.append(record)
        if len(fold) == 1 and self._loop is not None:
            self._fold_timer = self._loop.call_later(self.flush_interval, self.ship)

    def _shrink(self, record: Any, size: int) -> bytes:
        """A record too big for the ring (a client's megabyte of `model` or tag):
        its long strings are cut to `_LONG` characters, and that is logged."""

        def cut(v: Any) -> Any:
            return v[:_LONG] + "..." if type(v) is str and len(v) > _LONG else v

        if isinstance(record, tuple | list):
            small: Any = type(record)(cut(v) for v in record)
        else:  # a dict, or a record object (UsageRecord): as a dict
            d = record if isinstance(record, dict) else dataclasses.asdict(record)
            small = {k: cut(v) for k, v in d.items()}
        log.warning(
            "usage sink: a record of %d bytes (more than a quarter of the ring): its "
            "strings longer than %d characters are cut",
            size,
            _LONG,
        )
        return orjson.dumps(with_uid(small))

    def _move_waiting(self) -> None:
        """Copy the records that waited for room into the ring, in order."""
        ring = self._ring
        waiting = self._wait
        if ring is None or not waiting:
            return
        self._settled = ring.settled()
        i = 0
        for payload in waiting:
            head = ring.put(self._head, self._settled, payload)
            if head < 0:
                break
            self._head = head
            self._n += 1
            i += 1
        del waiting[:i]
        if i and self._mm[SLEEPING]:
            self._mm[SLEEPING] = 0
            self._send(self._doorbell)

    def ship(self) -> None:
        """Fold the records appended since the last time into the metrics (the
        timer, or a scrape: the metrics are then exact)."""
        if self._fold_timer is not None:
            self._fold_timer.cancel()
            self._fold_timer = None
        batch = self._fold
        if not batch:
            return
        self._fold = []
        if self.observe is not None:
            try:
                self.observe(batch)
            except Exception:  # the metrics must never cost a record
                log.exception("usage sink: folding records into the metrics failed")

    def _append_closed(self, record: Any) -> None:
        self._dropped_here += 1

    def _control(self, msg: dict[str, Any]) -> bytes:
        payload = orjson.dumps(dict(msg, at=self._head))
        return HEADER.pack(len(payload), CONTROL) + payload

    def _warn_drops(self) -> None:
        if self._dropped_here == self._dropped_reported:
            return  # nothing new to report
        now = time.monotonic()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            log.warning(
                "usage sink: %d records dropped (more than max_queue=%d waiting for the writer)",
                self._dropped_here - self._dropped_reported,
                self.max_queue,
            )
            self._dropped_reported = self._dropped_here

    # -- the socket ---------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        sock = self._sock
        if sock is None:
            return  # no writer now: records are in the ring, controls in its config
        if self._out:
            self._out += frame
            return
        try:
            n = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return  # the writer is gone; the reader sees EOF and restarts it
        if n < len(frame):
            self._out += memoryview(frame)[n:]
            self._loop.add_writer(sock, self._writable)  # type: ignore[union-attr]

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            n = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._loop.remove_writer(sock)  # type: ignore[union-attr]
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(sock)  # type: ignore[union-attr]
            self._wake()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._in += data
        end = self._in.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self._in[:end]).split(b"\n")
        del self._in[: end + 1]
        for line in lines:
            msg = orjson.loads(line)
            ack = msg.pop("ack", 0)
            if msg.pop("final", False):
                self._final = True
            self._now = msg
            self._settled_n = max(self._settled_n, ack)
        self._move_waiting()
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- the process --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the writer process (call on the event loop that will append)."""
        self._loop = loop or asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._ring = Ring.create(self.ring_bytes)
        self._mm = self._ring.mm
        self._move_waiting()
        self._spawn()

    def _config(self) -> dict[str, Any]:
        return {
            "access_log": self._access_log,
            "database": self.database,
            "spool_dir": self.spool_dir,
            "max_queue": self.max_queue,
            "flush_interval": self.flush_interval,
            "batch_size": self.batch_size,
            "write_timeout": self.write_timeout,
            "close_timeout": self.close_timeout,
            "spool_file_records": self.spool_file_records,
            "store_options": self.store_options,
            "wait_store": self.wait_store,
            "log_level": logging.getLogger("fastgate").getEffectiveLevel(),
            "log_format": logs.current,
        }

    def _spawn(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        env = dict(os.environ)
        # `-S`: no `site`, so none of the environment's .pth hooks and customizations
        # (editable-install finders, CA bundles, ...) load into the writer; it gets
        # this process's import path instead, which already holds what they added.
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (_PKG_PARENT, *sys.path) if p))
        assert self._ring is not None
        ring_fd = self._ring.fd
        cmd = [sys.executable, "-S", "-m", "fastgate.store.writer", str(theirs.fileno())]
        cmd.append(str(ring_fd))
        cmd.append(orjson.dumps(self._config()).decode())
        try:
            self._proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(), ring_fd), stdin=subprocess.DEVNULL, env=env
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self._in.clear()
        self._now = {}
        self._final = False
        self._loop.add_reader(mine, self._readable)  # type: ignore[union-attr]
        # Controls a dead writer did not read need not go again: the new one's
        # config has the current access log and store state, and opens the log anew.
        self._out.clear()

    def _drop_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        loop = self._loop
        assert loop is not None
        loop.remove_reader(sock)
        loop.remove_writer(sock)
        sock.close()
        self._sock = None
        self._out.clear()

    def _lost(self) -> None:
        """EOF from the writer: it exited (or crashed). Restart it unless closing."""
        self._drop_socket()
        proc = self._proc
        self._proc = None
        if proc is not None:
            self._old.append(proc)
        self._reap()
        kept = {k: self._now[k] for k in ("spooled", "degraded", "last_error") if k in self._now}
        # The cumulative counters as the ring's newest settle block holds them: the
        # dead writer's last report may not have come (killed between its settle
        # and its report); the next writer goes on counting from the same block.
        if self._ring is not None:
            kept.update(self._ring.counts())
        final, self._now = self._final, kept
        if final and self._closing:
            self._wake()
            return
        rc = proc.poll() if proc is not None else None
        log.error(
            "usage writer (pid %s) exited (rc=%s); restarting it, %d records not settled",
            proc.pid if proc is not None else "?",
            rc,
            self.pending,
        )
        self._wake()
        if self._closing:
            return  # aclose() restarts it within its deadline
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 10.0] + [now]
        delay = min(0.05 * 2 ** (len(self._restarts) - 1), 2.0) if len(self._restarts) > 2 else 0
        self._restart_timer = self._loop.call_later(delay, self._restart)  # type: ignore[union-attr]

    def _restart(self) -> None:
        self._restart_timer = None
        if self._sock is None and not self._closing:
            self.restarts += 1
            self._spawn()

    def _reap(self) -> None:
        self._old = [p for p in self._old if p.poll() is None]

    # -- shutdown -----------------------------------------------------------------------

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the writer settled everything appended."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await self._wait_change(deadline)
        return not self.pending

    async def _wait_change(self, deadline: float) -> None:
        ev = self._changed
        assert ev is not None
        ev.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), max(0.01, min(0.5, deadline - time.monotonic())))

    async def aclose(self, timeout: float | None = None) -> None:
        """Write everything appended, then stop the writer (bounded, see module docs)."""
        if self._closing:
            return
        self.append = self._append_closed  # type: ignore[method-assign]
        self._closing = True
        self.ship()
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        budget = self.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget + 5.0  # the writer's own close is bounded too
        while time.monotonic() < deadline:
            if self._sock is None:
                if self._final:
                    break
                self.restarts += 1
                self._spawn()
            while (
                (self._out or self._wait) and self._sock is not None and time.monotonic() < deadline
            ):
                self._move_waiting()
                await self._wait_change(deadline)
            sock = self._sock
            if sock is not None and not self._out:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)  # EOF: the writer drains and exits
                while self._sock is sock and time.monotonic() < deadline:
                    await self._wait_change(deadline)
            if self._final and not self.pending:
                break
        self._drop_socket()
        proc = self._proc
        self._proc = None
        if proc is not None:
            self._old.append(proc)
        for p in self._old:
            try:
                await asyncio.wait_for(asyncio.to_thread(p.wait), 5.0)
            except TimeoutError:
                log.error("usage writer (pid %d) did not exit: killed", p.pid)
                p.kill()
        self._old = []
        lost = self.pending
        if lost:
            self._dropped_here += lost
            log.error("usage sink: %d records not settled by the writer at exit", lost)
            self._wait.clear()
            self._n = self._settled_n = self._ring.settled_n() if self._ring else 0
        if self._ring is not None:
            self._ring.close()
            self._ring = self._mm = None
        self._warn_drops()


def usage_sink(access_log: str, *, database: str, store: Any, spool_dir: str, **kw: Any) -> Any:
    """The worker's usage sink: a `WriterSink` feeding a writer process that opens
    `database` itself. `store` None: the worker has not reached the database yet;
    the writer spools every record until `store_up()`. An in-memory SQLite
    database cannot be shared with another process: its records stay with an
    in-process `LogSink`."""
    if database.endswith(":memory:"):
        from fastgate.store.logsink import LogSink

        return LogSink(access_log, store=store, spool_dir=spool_dir, **kw)
    return WriterSink(
        access_log, database=database, spool_dir=spool_dir, wait_store=store is None, **kw
    )
