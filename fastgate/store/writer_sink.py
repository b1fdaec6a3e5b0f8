"""The data plane's side of the usage writer process (see writer.py).

Why: the sink and store threads used to take the GIL from the data-plane thread
for every batch they encoded and wrote. Here the worker keeps no thread:

- `append(record)` (hot path) encodes the record as a one-record frame and
  sends it on the AF_UNIX socket to the writer process at once (one `send`,
  about a microsecond): once it returns the record is out of the worker, in
  the socket's buffer, so a worker killed with SIGKILL right after a response
  ended loses no record (the writer reads what is buffered, then EOF). The
  writer batches (`flush_interval`, `batch_size`). What the socket does not
  take waits in an outbox written when the loop says the socket is writable.
- the records also wait in a list for the metrics (`observe`, the per-request
  families folded in batches: they cost the hot path a list append): the first
  of a batch arms one timer (`flush_interval`); a scrape folds at once (`ship`).
- every record is kept (as its encoded frame) until the writer acks it as
  settled. If the writer dies (EOF on the socket), a new one is started (after
  a short backoff if they keep dying) and every unacked frame is sent again, in
  order; uids (set before the first send) make the replay idempotent.
- records waiting in the worker (not yet acked) are bounded by `max_queue`; a
  record beyond it is DROPPED and counted in `dropped` (logged at most once a
  second), as before.
- the counters (`written`, `dropped`, `rejected`, `replayed`, `spooled`,
  `write_failures`, `degraded`, `last_error`) come back with the acks;
  cumulative ones are summed over writer restarts.
- `reopen()` (SIGHUP) has the writer reopen the access log (log rotation): a
  control frame, in order with the records.

`aclose()` (SIGTERM, after the drain): shuts the socket's write side and waits
for the writer's final report (it writes everything and replays the spool for
at most `close_timeout` s); a writer that dies meanwhile is restarted and given
the unacked records again until the deadline.

One writer per worker process (not per instance): each worker owns its socket,
acks and restarts with no coordination, the spool directory is already safe to
share between processes (flock), and a writer crash touches one worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

import orjson

from fastgate import logs
from fastgate.store.usage import with_uid
from fastgate.store.writer import HEADER

__all__ = ["WriterSink"]

log = logging.getLogger("fastgate.sink")

_CUMULATIVE = ("written", "dropped", "rejected", "replayed", "write_failures")
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
    ) -> None:
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
        self._seq = 0
        self._unacked: dict[int, tuple[bytes, int]] = {}  # seq -> (frame, records)
        self._inflight = 0  # records in _unacked
        self._out = bytearray()  # bytes the socket has not taken yet
        self._in = bytearray()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._old: list[subprocess.Popen[bytes]] = []
        self._base = dict.fromkeys(_CUMULATIVE, 0)  # from writers that have exited
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
        return self._base[name] + int(self._now.get(name, 0))

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
        """Records not yet acked by the writer (in flight or being written)."""
        return self._inflight

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
        """Ship one record now (the data plane's cost: one encode, one send)."""
        if self._inflight >= self.max_queue:
            self._dropped_here += 1
            self._warn_drops()
            return
        try:
            payload = orjson.dumps((with_uid(record),))
        except TypeError as exc:
            self._dropped_here += 1
            log.error("usage sink: a record not serialisable, dropped: %s", exc)
            return
        self._seq += 1
        frame = HEADER.pack(len(payload), self._seq) + payload
        self._unacked[self._seq] = (frame, 1)
        self._inflight += 1
        self._send(frame)
        fold = self._fold
        fold.append(record)
        if len(fold) == 1 and self._loop is not None:
            self._fold_timer = self._loop.call_later(self.flush_interval, self.ship)

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
        payload = orjson.dumps(msg)
        return HEADER.pack(len(payload), 0) + payload

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
            return  # no writer now: the frame is in _unacked, re-sent on restart
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
            unacked = self._unacked
            while unacked:
                seq = next(iter(unacked))
                if seq > ack:
                    break
                self._inflight -= unacked.pop(seq)[1]
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- the process --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the writer process (call on the event loop that will append)."""
        self._loop = loop or asyncio.get_running_loop()
        self._changed = asyncio.Event()
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
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_PARENT, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "fastgate.store.writer", str(theirs.fileno())]
        cmd.append(orjson.dumps(self._config()).decode())
        try:
            self._proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self._in.clear()
        self._now = {}
        self._final = False
        self._loop.add_reader(mine, self._readable)  # type: ignore[union-attr]
        # Everything not acked goes again, in order (a fresh writer has seen none of it).
        self._out = bytearray(b"".join(frame for frame, _ in self._unacked.values()))
        if self._out:
            self._loop.add_writer(mine, self._writable)  # type: ignore[union-attr]

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
        for name in _CUMULATIVE:
            self._base[name] += int(self._now.get(name, 0))
        kept = {k: self._now[k] for k in ("spooled", "degraded", "last_error") if k in self._now}
        final, self._now = self._final, kept
        if final and self._closing:
            self._wake()
            return
        rc = proc.poll() if proc is not None else None
        log.error(
            "usage writer (pid %s) exited (rc=%s); restarting it, re-sending %d records",
            proc.pid if proc is not None else "?",
            rc,
            self._inflight,
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
        """Wait until the writer acked everything appended."""
        deadline = time.monotonic() + timeout
        while self._unacked and time.monotonic() < deadline:
            await self._wait(deadline)
        return not self._unacked

    async def _wait(self, deadline: float) -> None:
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
            while self._out and self._sock is not None and time.monotonic() < deadline:
                await self._wait(deadline)
            sock = self._sock
            if sock is not None and not self._out:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)  # EOF: the writer drains and exits
                while self._sock is sock and time.monotonic() < deadline:
                    await self._wait(deadline)
            if self._final and not self._unacked:
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
        if self._unacked:
            lost = self._inflight
            self._dropped_here += lost
            log.error("usage sink: %d records not acknowledged by the writer at exit", lost)
            self._unacked.clear()
            self._inflight = 0
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
