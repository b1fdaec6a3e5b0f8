"""The usage sink: records leave the hot path through a bounded queue.

In the gateway this class runs inside the writer PROCESS (writer.py), driven
without its thread (`open`, `write_batch`, `flush`, `close`); the worker holds a
`WriterSink` (writer_sink.py). Used directly (with its thread), as below, it
serves an in-memory SQLite store, tools and tests. The backlogs live in
writer_spool.py.

Hot path: `append(record)` is a deque append plus a length check: no I/O, no
lock held by anyone for long. If the queue holds `max_queue` records the new
record is DROPPED and counted in `dropped`; the writer thread logs a warning
at most once per second saying how many were dropped. Nothing is dropped
silently.

Writer (one thread, "fastgate-sink"): wakes every `flush_interval` seconds, or
as soon as `batch_size` records are waiting, and handles what has queued in
batches of at most `batch_size`:

1. each record gets a `uid` if it has none (before anything can write it twice);
2. the optional access log gets one JSON line per record;
3. with a store, the batch goes to `store.write_usage` (one transaction; COPY on
   Postgres). If the database fails, the batch is appended to the spool and the
   sink is "degraded": later batches also go to the spool, behind it, so order is
   kept; the spool is retried with backoff (0.2 s doubling to 2 s) and replayed
   oldest first, 250 records at a time (a replay holds one such chunk in memory,
   whatever the file's size); a spool file is deleted only after all its rows
   are committed. Once a replay is done and nothing waits, the heap is trimmed
   (`trim_if_due`).
   Replays never duplicate a row: inserts skip uids already present.
   A batch the database rejects as bad data (not an outage) is retried record
   by record; records that still fail go to `<spool_dir>/rejected.jsonl` (or
   only the log without a spool dir) and are counted in `rejected`.

Spool: `<spool_dir>/spool-<n>.jsonl`, `n` a 20-digit increasing number (time in
ns, so file names sort in write order, also across processes). One JSON object
per line (the UsageRecord fields), appended and fsync'd per batch; a file is
rotated at `spool_file_records` records. The file being written is held under
an exclusive flock, as is a file being replayed, so several worker processes
can share one spool directory. Files left by a previous run (or a dead worker)
are replayed at start. Without `spool_dir`, failed batches wait in memory
(at most `max_queue` records; beyond that the oldest are dropped and counted).

`close()` (SIGTERM): stops the writer, then writes the queue and replays the
spool for at most `close_timeout` seconds (default 10). Records that still
cannot reach the database stay in the spool files for the next start; without
a spool directory they are counted in `dropped` and logged as lost.

Counters: `written` (records that reached their destination: the store if
there is one, else the access log), `dropped`, `rejected`, `replayed`,
`spooled` (records waiting in the spool now), `write_failures`, `degraded`,
`last_error`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import IO, Any

from fastgate.store.usage import with_uid
from fastgate.store.writer_spool import _DiskSpool, _json_line, _MemoryBacklog

__all__ = ["LogSink"]

log = logging.getLogger("fastgate.sink")

_BACKOFF_START = 0.2
_BACKOFF_MAX = 2.0
# Spooled records replayed per write: a replay holds this many parsed records at
# a time, about what a batch holds at full load (see writer_spool.chunks).
_REPLAY_CHUNK = 250


class LogSink:
    """Bounded queue + writer thread for usage records (see the module docs)."""

    def __init__(
        self,
        access_log: str = "",
        *,
        store: Any = None,
        spool_dir: str = "",
        max_queue: int = 200_000,
        flush_interval: float = 0.1,
        batch_size: int = 5_000,
        write_timeout: float = 10.0,
        close_timeout: float = 10.0,
        spool_file_records: int = 50_000,
    ) -> None:
        self.access_log = access_log
        self.store = store
        self.spool_dir = spool_dir
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.write_timeout = write_timeout
        self.close_timeout = close_timeout
        self.spool_file_records = spool_file_records
        self.queue: deque[Any] = deque()
        self.dropped = 0
        self.written = 0
        self.rejected = 0
        self.replayed = 0
        self.write_failures = 0
        self.last_error = ""
        self._backlog: _DiskSpool | _MemoryBacklog | None = None
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one writer at a time (thread, flush(), close())
        self._file: IO[bytes] | None = None
        self._file_name: str | None = ""
        self._thread: threading.Thread | None = None
        self._backoff = _BACKOFF_START
        self._retry_at = 0.0
        self._down = False  # a write failed and none succeeded since
        self.trim_due = False  # a replay ran: trim the heap once nothing waits
        self._dropped_reported = 0
        self._warned: dict[str, float] = {}
        # Called (from the writer thread) with each batch taken from the queue:
        # App sets it to fold the records into the metrics (which lock).
        self.observe: Any = None

    # -- public -------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        """Records waiting in the spool (or the in-memory backlog) for the database."""
        b = self._backlog
        return b.count if b is not None else 0

    @property
    def degraded(self) -> bool:
        """True while records go to the spool instead of the database."""
        b = self._backlog
        return b is not None and b.pending()

    def start(self) -> None:
        """Open the log and the spool, then start the writer thread."""
        self.open()
        self._thread = threading.Thread(target=self._run, name="fastgate-sink", daemon=True)
        self._thread.start()

    def open(self) -> None:
        """Open the log and the spool without a thread: the caller drives the writes
        with `write_batch` and `flush` (the writer process does)."""
        self._open_log()
        if self.store is not None:
            if self.spool_dir:
                self._backlog = _DiskSpool(self.spool_dir, self.spool_file_records)
                if self._backlog.pending():
                    log.info(
                        "usage spool %s holds %d records from an earlier run: replaying",
                        self.spool_dir,
                        self._backlog.count,
                    )
            else:
                self._backlog = _MemoryBacklog(self.max_queue)

    def append(self, record: Any) -> None:
        """Queue one record (hot path: O(1), no I/O). Full queue: drop and count."""
        q = self.queue
        if len(q) >= self.max_queue or self._closed:
            self.dropped += 1
            return
        q.append(record)
        if len(q) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def reopen(self) -> None:
        """Close and reopen the access log before the next write (log rotation:
        after `mv access.log access.log.1`, new lines go to a new access.log)."""
        self._file_name = None  # differs from any path: the next cycle reopens

    def flush(self) -> None:
        """Write what is queued now (and retry the spool); blocks the calling thread."""
        with self._lock:
            self._retry_at = 0.0
            self._cycle()
            self.trim_if_due()

    def tick(self) -> None:
        """Write what is queued now; retry the spool only when its backoff is over."""
        with self._lock:
            self._cycle()
            self.trim_if_due()

    def note_outage(self, message: str) -> None:
        """The caller knows the database is away (and says so): log `message` once
        instead of the first failed write."""
        if not self._down:
            self._down = True
            log.warning("%s", message)

    def retry_now(self) -> None:
        """The database is back (the caller knows): the next cycle replays the spool."""
        self._retry_at = 0.0
        self._backoff = _BACKOFF_START

    def write_batch(self, batch: list[Any]) -> None:
        """Settle `batch` now, in the calling thread: when this returns, every record
        is in the store, in the fsync'd spool, rejected (set aside) or counted as
        dropped. A spool replay that is due runs first (order is kept)."""
        with self._lock:
            self._cycle()
            self._handle(batch, None)

    def counters(self) -> dict[str, Any]:
        """The counters as one dict (what the writer process reports with its acks)."""
        return {
            "written": self.written,
            "dropped": self.dropped + getattr(self._backlog, "lost", 0),
            "rejected": self.rejected,
            "replayed": self.replayed,
            "spooled": self.spooled,
            "write_failures": self.write_failures,
            "degraded": self.degraded,
            "last_error": self.last_error,
        }

    async def aclose(self, timeout: float | None = None) -> None:
        """`close` from an event loop (in a thread: it blocks)."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the writer; flush the queue and the spool within `timeout` seconds."""
        if self._closed:
            return
        self._closed = True  # append() counts late records as dropped from now on
        budget = self.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        # The writer may still be inside one store call (bounded by write_timeout).
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic()) + 1.0):
            log.error(
                "usage sink: writer still busy at exit; %d records not flushed", len(self.queue)
            )
            self.dropped += len(self.queue)
            return
        try:
            self._retry_at = 0.0
            try:
                self._cycle(deadline=deadline)
                if self.queue:  # an append that raced with _closed being set
                    self._cycle(deadline=deadline)
                backlog = self._backlog
                if not getattr(self.store, "started", True):
                    backlog = None  # never opened (the writer waits for its worker): keep the spool
                while backlog is not None and backlog.pending():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if self._retry_at > time.monotonic():
                        time.sleep(min(self._retry_at - time.monotonic(), left))
                    self._replay(deadline)
            except Exception:
                log.exception("usage sink: final flush failed")
            self._finish()
        finally:
            self._lock.release()

    # -- writer -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                with self._lock:
                    self._cycle()
                    self.trim_if_due()
            except Exception:
                log.exception("usage sink: write cycle failed")

    def _cycle(self, deadline: float | None = None) -> None:
        """Retry the spool if due, then write what is queued now (not what arrives later)."""
        if self.access_log != self._file_name:
            self._open_log()
        self._report_drops()
        backlog = self._backlog
        if backlog is not None and backlog.pending() and time.monotonic() >= self._retry_at:
            self._replay(deadline)
        q = self.queue
        n = len(q)
        while n > 0:
            batch = []
            try:
                for _ in range(min(n, self.batch_size)):
                    batch.append(q.popleft())
            except IndexError:
                pass
            if not batch:
                break
            n -= len(batch)
            if self.observe is not None:
                try:
                    self.observe(batch)
                except Exception:  # the metrics must never cost a record
                    log.exception("usage sink: folding records into the metrics failed")
            self._handle(batch, deadline)

    def _handle(self, batch: list[Any], deadline: float | None) -> None:
        f = self._file
        if f is not None:
            try:
                f.write(b"".join([_json_line(r) for r in batch]))
                f.flush()
            except (OSError, TypeError) as exc:
                self._warn("access", "access log write failed: %s", exc)
        if self.store is None:
            self.written += len(batch)
            return
        batch[:] = [with_uid(r) for r in batch]
        backlog = self._backlog
        assert backlog is not None
        if backlog.pending() or (deadline is not None and time.monotonic() >= deadline):
            self._spool(batch)  # behind what is already spooled: order is kept
            return
        stored = self._db_write(batch, deadline)
        if stored is None:
            self._spool(batch)
        else:
            self.written += stored

    def _spool(self, batch: list[Any]) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            backlog.append(batch)
        except OSError as exc:
            # The disk refuses too: nothing left to keep these records in.
            self.dropped += len(batch)
            self._warn("spool", "usage spool write failed, %d records lost: %s", len(batch), exc)

    def _db_write(self, records: list[Any], deadline: float | None) -> int | None:
        """One attempt. None: the database is unavailable (spool and retry). Otherwise
        every record is settled: the number stored (the others were rejected as bad)."""
        store = self.store
        timeout = self.write_timeout
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            store.run(store.write_usage(records), timeout=timeout)
        except Exception as exc:
            if store.is_data_error(exc):
                return self._isolate(records, exc)
            self._failed(exc)
            return None
        self._backoff = _BACKOFF_START
        self._down = False
        return len(records)

    def _isolate(self, records: list[Any], exc: Exception) -> int | None:
        """A batch with bad data: write record by record, set the bad ones aside."""
        store = self.store
        log.error("usage batch of %d rejected as bad data (%s): isolating", len(records), exc)
        bad: list[Any] = []
        for r in records:
            try:
                store.run(store.write_usage([r], coerce=True), timeout=self.write_timeout)
            except Exception as one:
                if not store.is_data_error(one):
                    self._failed(one)
                    return None  # the whole batch is retried later (idempotent)
                bad.append(r)
        if bad:
            self.rejected += len(bad)
            self._save_rejected(bad)
        self._backoff = _BACKOFF_START
        return len(records) - len(bad)

    def _save_rejected(self, bad: list[Any]) -> None:
        if not self.spool_dir:
            log.error("usage sink: %d records rejected by the database (lost)", len(bad))
            return
        path = os.path.join(self.spool_dir, "rejected.jsonl")
        try:
            with open(path, "ab") as f:
                f.write(b"".join(_json_line(r) for r in bad))
                f.flush()
                os.fsync(f.fileno())
            log.error("usage sink: %d records rejected by the database, kept in %s", len(bad), path)
        except (OSError, TypeError) as exc:
            log.error("usage sink: %d rejected records lost: %s", len(bad), exc)

    def _failed(self, exc: BaseException) -> None:
        self.write_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        # Logged once per outage (the replay that ends it is logged too).
        if not self._down:
            self._down = True
            log.warning("usage store write failed (%s); spooling, retrying", self.last_error)
        else:
            log.debug("usage store write failed again: %s", self.last_error)

    def _replay(self, deadline: float | None) -> None:
        backlog = self._backlog
        assert backlog is not None
        done = 0
        while True:
            if not backlog.pending() and not (done and backlog.rescan()):
                break
            if deadline is not None and time.monotonic() >= deadline:
                return
            handle = backlog.oldest()
            if handle is None:
                break
            stored = seen = 0
            chunks = backlog.chunks(handle, min(self.batch_size, _REPLAY_CHUNK))
            try:
                for records in chunks:
                    n = self._db_write(records, deadline)
                    if n is None:
                        backlog.release(handle)
                        return
                    stored += n
                    seen += len(records)
                    del records
            finally:
                chunks.close()
            backlog.commit(handle)
            done += seen
            self.written += stored
            self.replayed += stored
        if done:
            log.info("usage store reachable again: replayed %d spooled records", done)
            self.trim_due = True

    def trim_if_due(self) -> None:
        """After a replay, once nothing waits (the queue, the spool): give the heap an
        outage grew back to the system (once; the writer process calls this on its
        idle ticks, after the worker's backlog has been written too)."""
        if self.trim_due and not self.queue and not self.degraded:
            self.trim_due = False
            _trim_heap()

    def _report_drops(self) -> None:
        lost = getattr(self._backlog, "lost", 0)
        total = self.dropped + lost
        if total > self._dropped_reported:
            now = time.monotonic()
            if now - self._warned.get("drop", 0.0) >= 1.0:
                self._warned["drop"] = now
                log.warning(
                    "usage sink: %d records dropped (queue full at max_queue=%d or backlog "
                    "over its limit); %d in total",
                    total - self._dropped_reported,
                    self.max_queue,
                    total,
                )
                self._dropped_reported = total

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, 0.0) >= 1.0:
            self._warned[key] = now
            log.warning(msg, *args)

    # -- files --------------------------------------------------------------------------

    def _open_log(self) -> None:
        old = self._file
        if old is not None and old is not sys.stdout.buffer:
            with contextlib.suppress(OSError):
                old.close()
        self._file = None
        self._file_name = self.access_log
        if self.access_log == "-":
            self._file = sys.stdout.buffer
        elif self.access_log:
            try:
                self._file = open(self.access_log, "ab")  # noqa: SIM115 - lives with the sink
            except OSError as exc:
                log.error("cannot open access log %s: %s", self.access_log, exc)

    def _finish(self) -> None:
        backlog = self._backlog
        if isinstance(backlog, _MemoryBacklog):
            if backlog.count:
                self.dropped += backlog.count
                log.error(
                    "usage sink: %d records could not be written to the database and are "
                    "lost (no spool directory configured)",
                    backlog.count,
                )
            self.dropped += backlog.lost
            backlog.lost = 0
        elif isinstance(backlog, _DiskSpool):
            backlog.close()
            if backlog.pending():
                log.warning(
                    "usage sink: %d records stay in %s; they are replayed at the next start",
                    backlog.count,
                    self.spool_dir,
                )
        self._report_drops()
        if self.dropped:
            log.warning("usage sink dropped %d records in total", self.dropped)
        f = self._file
        if f is not None:
            with contextlib.suppress(OSError):
                f.flush()
            if f is not sys.stdout.buffer:
                with contextlib.suppress(OSError):
                    f.close()
        self._file = None


def _trim_heap() -> None:
    """Give the memory an outage's backlog used back to the system (glibc keeps
    freed heap pages otherwise, and the process looks as if it had grown for good)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
