"""The usage writer process: store writes, access log and spool, off the data plane.

Why a process: the writes (JSON encoding, SQLite/Postgres round trips, fsync)
used to run on two threads of the worker (the sink and the store thread); each
batch took the GIL from the data-plane thread for milliseconds and the hand-offs
showed as futex time (bench/WRITER-NOTES.md). Here they run in a child of the
worker, started as `python -m fastgate.store.writer <socket fd> <ring fd>
<config json>` (no fork of the uvloop worker, no import-time side effects):

- the records come through a shared-memory ring (ring.py): the worker copies
  each record in as its request ends (no system call; the pages outlive a
  worker killed with SIGKILL). The writer takes them in batches: `flush_interval`
  after the first waiting record (sooner when a quarter of the ring is used),
  at most `_MERGE_LIMIT` records a write, and moves the ring's `settled` offset
  past each write once it is settled (committed to the store, fsync'd to the
  spool, rejected and set aside, or counted as dropped). A writer started after
  a crash goes on from `settled`; records carry a uid, so what the dead one had
  written but not settled is inserted at most once.
- worker -> writer, on one AF_UNIX stream socket (the inherited fd): frames
  `HEADER` (payload length, kind). `CONTROL`: an orjson object ({"access_log":
  path}, {"store": "up"} or {"reopen": true}) with "at", the ring's head when it
  was sent: the records before it are written first, so it applies in order.
  `DOORBELL`: the writer said it was going to sleep (the ring's flag) and a
  record came. EOF (the worker shut its write side, or died; a worker that
  died with an ack unread shows as ECONNRESET, taken as EOF): write what the
  ring holds, drain and exit.
- writer -> worker: one orjson object per line, {"ack": records settled, ever,
  <counters>}; the last line carries "final": true. A line is sent after each
  write and when counters move (a spool replay finished, say).

The writing itself is `LogSink` (logsink.py) driven without its thread:
`write_batch` per write, `tick` on idle ticks for the spool replay with
backoff, and `close` at EOF.

Signals: SIGINT, SIGTERM and SIGHUP are ignored. A group-wide SIGTERM must not
stop the writer before the worker has drained into it; EOF on the socket is the
only way to stop it (and the worker's death causes exactly that).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

import orjson

from fastgate.store.ring import COUNTS, Ring

__all__ = ["CONTROL", "DOORBELL", "HEADER", "main"]

# Frame header, worker -> writer: payload length, kind.
HEADER = struct.Struct("<IQ")
CONTROL, DOORBELL = 0, 1

log = logging.getLogger("fastgate.writer")

# Attempts to open a store that failed to start: 0.5 s doubling to 30 s (the
# worker's "store up" frame makes the next attempt at once).
_START_RETRY = 0.5
_START_RETRY_MAX = 30.0
_RECV_SIZE = 64 << 10  # bytes read from the socket at a time (controls only)
# Records written together at most (and settled after): about a full-load batch,
# so that catching up after an outage needs no more memory than the steady state.
_MERGE_LIMIT = 250
# While records wait for their interval, the ring's fill is looked at this often.
GATHER_CHECK = 0.02


class _Writer:
    def __init__(self, sock: socket.socket, ring: Ring, cfg: dict[str, Any]) -> None:
        from fastgate.store.logsink import LogSink

        self.sock = sock
        self.ring = ring
        self.settled_n = 0
        self.settled_at = 0  # the ring's offset settled up to
        self.published: tuple[int, ...] = ()  # the counters in the newest settle block
        self.orphan = False  # the worker died: reports go nowhere
        self.cfg = cfg
        self.store: Any = None
        self.next_start = 0.0
        self.retry = _START_RETRY
        self.unavailable = False  # logged once per outage, and when it ends
        # The worker has not reached the store yet: spool until its "store up" frame
        # (it migrates the database; opening it first could create an empty file).
        self.waiting = bool(cfg.get("wait_store"))
        database = cfg.get("database") or ""
        if database.startswith("sqlite:///") and not database.endswith(":memory:"):
            # Usage inserts only, in this thread: no config, event loop or store
            # thread loaded for SQLite (the worker migrated the file already).
            from fastgate.store.sqlite_usage import UsageOnlySQLite

            opts = cfg.get("store_options", {})
            self.store = UsageOnlySQLite(
                database[len("sqlite:///") :], float(opts.get("busy_timeout", 10.0))
            )
        elif database:
            from fastgate.store.base import store_for

            self.store = store_for(database, **cfg.get("store_options", {}))
        self.sink = LogSink(
            cfg.get("access_log", ""),
            store=self.store,
            spool_dir=cfg.get("spool_dir", ""),
            max_queue=cfg.get("max_queue", 200_000),
            batch_size=cfg.get("batch_size", 1000),
            write_timeout=cfg.get("write_timeout", 10.0),
            close_timeout=cfg.get("close_timeout", 10.0),
            spool_file_records=cfg.get("spool_file_records", 2_000),
        )
        self.reported: dict[str, Any] = {}  # the last message sent

    def open_store(self) -> None:
        """Start the store if it is not; while it cannot start, writes fail as an
        outage (the store is "not started") and go to the spool."""
        store = self.store
        if store is None or store.started or self.waiting or time.monotonic() < self.next_start:
            return
        try:
            store.start(migrate=False, timeout=5.0)
        except Exception as exc:
            self.next_start = time.monotonic() + self.retry
            self.retry = min(self.retry * 2, _START_RETRY_MAX)
            if not self.unavailable:
                self.unavailable = True
                self.sink.note_outage(f"usage writer: database unavailable ({exc}); spooling")
            return
        self.retry = _START_RETRY
        if self.unavailable:
            self.unavailable = False
            log.info("usage writer: database opened; replaying the spool")
        self.sink.retry_now()

    def store_is_up(self) -> None:
        """The worker reached the store: open it now (and replay the spool)."""
        self.waiting = False
        self.next_start = 0.0
        self.retry = _START_RETRY
        self.open_store()

    def publish(self, offset: int) -> None:
        """Settle the ring up to `offset`, with the counters as they are now (one
        settle block: the next writer and the worker read both from it)."""
        c = self.sink.counters()
        self.published = tuple(int(c[k]) for k in COUNTS)
        self.settled_at = offset
        self.ring.settle(offset, self.settled_n, self.published)

    def send(self, final: bool = False) -> None:
        msg = dict(self.sink.counters(), ack=self.settled_n)
        if tuple(int(msg[k]) for k in COUNTS) != self.published:
            self.publish(self.settled_at)  # counters that moved with no settle (a replay)
        if self.orphan or (msg == self.reported and not final):
            return
        self.reported = dict(msg)
        if final:
            msg["final"] = True
        try:
            self.sock.sendall(orjson.dumps(msg) + b"\n")
        except OSError:
            # The worker is gone (killed): nobody reads the reports, but what
            # its ring holds is still written, to the end.
            self.orphan = True

    def control(self, payload: bytes) -> None:
        ctl = orjson.loads(payload)
        if "access_log" in ctl:
            self.sink.access_log = ctl["access_log"]
        if ctl.get("store") == "up":
            self.store_is_up()
        if ctl.get("reopen"):
            self.sink.reopen()

    def write(self, payloads: list[bytes], offset: int) -> None:
        """Write records taken from the ring, then settle them up to `offset`."""
        try:
            batch = orjson.loads(b"[" + b",".join(payloads) + b"]")
        except orjson.JSONDecodeError:
            batch = []
            for p in payloads:  # find the bad one(s); keep the rest
                try:
                    batch.append(orjson.loads(p))
                except orjson.JSONDecodeError as exc:
                    log.error("usage writer: a record unreadable, dropped: %s", exc)
                    self.sink.dropped += 1
        if batch:
            self.sink.write_batch(batch)
        self.settled_n += len(payloads)
        self.publish(offset)
        self.send()

    def take(self, start: int, end: int) -> int:
        """Write the ring's records in [start, end) in writes of at most
        `_MERGE_LIMIT`; settled up to `end` after. Returns `end`."""
        self.open_store()
        try:
            frames = self.ring.frames(start, end)
        except ValueError as exc:  # a producer bug: do not loop on it
            log.error("%s; the rest of the batch is dropped", exc)
            frames = []
            self.sink.dropped += 1
        limit = min(self.sink.batch_size, _MERGE_LIMIT)
        for i in range(0, len(frames), limit):
            chunk = frames[i : i + limit]
            self.write([p for _, p in chunk], chunk[-1][0])
        self.publish(end)  # a trailing skip to the boundary
        return end

    def run(self) -> None:
        self.sink.open()
        if self.waiting and self.store is not None:
            self.sink.note_outage(
                "usage writer: the worker has not reached the database yet; records go "
                "to the spool until it does"
            )
        self.open_store()
        tick = float(self.cfg.get("flush_interval", 0.1))
        ring = self.ring
        # Where the previous writer (if any) stopped, and its counters: this one
        # goes on counting from them (cumulative over the ring's writers).
        _, read, self.settled_n, *counts = ring.block()
        self.settled_at = read
        self.published = tuple(counts)
        for name, value in zip(COUNTS, counts, strict=True):
            setattr(self.sink, name, value)  # LogSink's counter of that name
        early = ring.capacity // 4  # this much waiting: write before the interval ends
        sock = self.sock
        hsize = HEADER.size
        buf = bytearray()
        rbuf = memoryview(bytearray(_RECV_SIZE))
        due = 0.0  # when the oldest unwritten record must be written (0: none waits)
        eof = False
        while not eof:
            if not due:
                if ring.head() > read:
                    due = time.monotonic() + tick
                    continue
                # Idle: ask for the doorbell, look again (a record may have come
                # between the two), then wait on the socket for at most a tick.
                ring.set_sleeping(True)
                if ring.head() > read:
                    ring.set_sleeping(False)
                    continue
                ready = bool(select.select([sock], [], [], tick)[0])
                ring.set_sleeping(False)
            else:
                wait = max(0.0, min(due - time.monotonic(), GATHER_CHECK))
                ready = bool(select.select([sock], [], [], wait)[0])
            if ready:
                while True:  # controls, doorbells, EOF
                    try:
                        got = sock.recv_into(rbuf, 0, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        # The worker died with an ack of ours unread: Linux reports
                        # ECONNRESET on an AF_UNIX socket then, not EOF. It is the
                        # worker's end all the same: write what the ring holds.
                        got = 0
                    if not got:
                        eof = True
                        break
                    buf += rbuf[:got]
                while len(buf) >= hsize:
                    n, kind = HEADER.unpack_from(buf)
                    if len(buf) < hsize + n:
                        break
                    payload = bytes(buf[hsize : hsize + n])
                    del buf[: hsize + n]
                    if kind == CONTROL:
                        at = orjson.loads(payload).get("at", 0)
                        if at > read:  # the records before it first, in order
                            read = self.take(read, at)
                            due = 0.0
                        self.control(payload)
                        self.send()
            head = ring.head()
            if head > read and due and (eof or time.monotonic() >= due or head - read >= early):
                read = self.take(read, head)
                due = 0.0
                if self.sink.trim_due and ring.head() == read:
                    self.sink.trim_if_due()  # after a replay, and the worker's backlog
            elif not due and not ready:
                self.open_store()
                self.sink.tick()  # spool replay when due (backoff), access log reopen
                self.send()
        head = ring.head()  # EOF: the worker closed or died; what it wrote is here
        if head > read:
            read = self.take(read, head)
        if buf:
            log.error("usage writer: %d bytes of a partial frame at EOF", len(buf))
        self.next_start = 0.0  # one last attempt, whatever the backoff says
        self.open_store()
        self.sink.close()
        self.send(final=True)
        if self.store is not None and self.store.started:
            self.store.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m fastgate.store.writer <fd> <ring fd> <config json>`."""
    args = sys.argv[1:] if argv is None else argv
    fd, ring_fd, cfg = int(args[0]), int(args[1]), orjson.loads(args[2])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    from fastgate import logs

    logs.setup(
        cfg.get("log_level", logging.INFO),
        cfg.get("log_format", "text"),
        f"%(asctime)s %(levelname)s %(name)s[writer {os.getpid()}]: %(message)s",
    )
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        _Writer(sock, Ring(ring_fd), cfg).run()
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
