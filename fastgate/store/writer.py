"""The usage writer process: store writes, access log and spool, off the data plane.

Why a process: the writes (JSON encoding, SQLite/Postgres round trips, fsync)
used to run on two threads of the worker (the sink and the store thread); each
batch took the GIL from the data-plane thread for milliseconds and the hand-offs
showed as futex time (bench/WRITER-NOTES.md). Here they run in a child of the
worker, started as `python -m fastgate.store.writer <fd> <config json>` (no fork
of the uvloop worker, no import-time side effects), talking over one AF_UNIX
stream socket (the inherited fd):

- worker -> writer: frames `HEADER` (payload length, seq) + payload. seq > 0: an
  orjson array of records (tuples in RECORD_FIELDS order arrive as arrays; dicts
  as objects); the worker sends one frame per record as its request ends. seq
  == 0: a control object ({"access_log": path} or {"reopen": true}: log
  rotation). EOF (the worker shut its write side, or died): write what was
  received, drain and exit. Frames are written in batches: `flush_interval`
  after the first of them arrived (`batch_size` records a transaction);
  meanwhile the writer empties the socket every 10 ms without waiting on it,
  so the worker's sends wake no one and its buffer never fills.
- writer -> worker: one orjson object per line, {"ack": seq, <counters>}: every
  batch up to `seq` is settled (committed to the store, fsync'd to the spool,
  rejected and set aside, or counted as dropped), so the worker forgets it. The
  last line carries "final": true. Lines without a new ack report counters that
  moved (a spool replay finished, say).

The writing itself is `LogSink` (logsink.py) driven without its thread:
`write_batch` per received batch (frames that arrived together are merged up
to 250 records, so catching up after an outage holds no more than the steady
state), `tick` on idle ticks for the spool replay with backoff, and `close` at
EOF. Records carry a uid before they leave the worker, so a batch
re-sent after a writer crash is inserted at most once.

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

__all__ = ["HEADER", "main"]

# Frame header, worker -> writer: payload length, batch sequence number.
HEADER = struct.Struct("<IQ")

log = logging.getLogger("fastgate.writer")

# Attempts to open a store that failed to start: 0.5 s doubling to 30 s (the
# worker's "store up" frame makes the next attempt at once).
_START_RETRY = 0.5
_START_RETRY_MAX = 30.0
_RECV_SIZE = 256 << 10  # bytes read from the worker at a time
# Frames that arrived together are merged into one write up to this many records:
# about a full-load batch, so that catching up after an outage (when the worker's
# backlog arrives at once) needs no more memory than the steady state.
_MERGE_LIMIT = 250
DRAIN = 0.01  # seconds between two reads of the socket while a batch gathers
# Frames gathered before a write at the latest (a worker's backlog after an
# outage arrives at once: bounded so it needs no more memory than steady state).
_MAX_FRAMES = 1000


def _records(payload: bytes | bytearray) -> list[Any]:
    """A batch as the worker sent it: records as lists in RECORD_FIELDS order (the
    store and the spool take them as they are) or dicts."""
    return orjson.loads(payload)


class _Writer:
    def __init__(self, sock: socket.socket, cfg: dict[str, Any]) -> None:
        from fastgate.store.logsink import LogSink

        self.sock = sock
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
        self.acked = 0
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

    def send(self, final: bool = False) -> None:
        msg = dict(self.sink.counters(), ack=self.acked)
        if msg == self.reported and not final:
            return
        self.reported = dict(msg)
        if final:
            msg["final"] = True
        self.sock.sendall(orjson.dumps(msg) + b"\n")

    def handle(self, frames: list[tuple[int, bytearray]]) -> None:
        batch: list[Any] = []
        last = 0
        limit = min(self.sink.batch_size, _MERGE_LIMIT)
        for seq, payload in frames:
            if seq == 0:
                ctl = orjson.loads(payload)
                if "access_log" in ctl:
                    self.sink.access_log = ctl["access_log"]
                if ctl.get("store") == "up":
                    self.store_is_up()
                if ctl.get("reopen"):
                    self.sink.reopen()
                continue
            try:
                batch.extend(_records(payload))
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                log.error("usage writer: batch %d unreadable, dropped: %s", seq, exc)
                self.sink.dropped += 1
            last = seq
            if len(batch) >= limit:
                self.sink.write_batch(batch)
                batch = []
                self.acked = last
                self.send()
        if batch:
            self.sink.write_batch(batch)
        if last:
            self.acked = last
        self.send()

    def run(self) -> None:
        self.sink.open()
        if self.waiting and self.store is not None:
            self.sink.note_outage(
                "usage writer: the worker has not reached the database yet; records go "
                "to the spool until it does"
            )
        self.open_store()
        tick = float(self.cfg.get("flush_interval", 0.1))
        buf = bytearray()
        # One receive buffer for the life of the process, of a size that bounds what
        # is parsed at once when the worker has a backlog to send (after an outage).
        rbuf = memoryview(bytearray(_RECV_SIZE))
        sock = self.sock
        hsize = HEADER.size
        frames: list[tuple[int, bytes]] = []  # received, not yet written
        due = 0.0  # when the oldest of them must be written
        eof = False
        while not eof:
            if frames:
                # Records gather here until the oldest is due (one write per
                # interval); the socket is emptied every DRAIN s meanwhile, so it
                # never fills, and the worker's sends wake no one.
                time.sleep(min(DRAIN, max(0.0, due - time.monotonic())))
                ready = True
            else:
                ready = bool(select.select([sock], [], [], tick)[0])
            if ready:
                while len(frames) < _MAX_FRAMES:  # what the socket holds now
                    try:
                        got = sock.recv_into(rbuf, 0, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not got:
                        eof = True
                        break
                    buf += rbuf[:got]
                    if not frames:
                        due = time.monotonic() + tick
                    while len(buf) >= hsize:
                        n, seq = HEADER.unpack_from(buf)
                        if len(buf) < hsize + n:
                            break
                        frames.append((seq, bytes(buf[hsize : hsize + n])))
                        del buf[: hsize + n]
            if frames and (eof or len(frames) >= _MAX_FRAMES or time.monotonic() >= due):
                self.open_store()
                self.handle(frames)
                frames = []
                if self.sink.trim_due and not select.select([sock], [], [], 0)[0]:
                    self.sink.trim_if_due()  # after a replay, and the worker's backlog
            elif not ready:
                self.open_store()
                self.sink.tick()  # spool replay when due (backoff), access log reopen
                self.send()
        if frames:
            self.open_store()
            self.handle(frames)
        if buf:
            log.error("usage writer: %d bytes of a partial frame at EOF (not acked)", len(buf))
        self.next_start = 0.0  # one last attempt, whatever the backoff says
        self.open_store()
        self.sink.close()
        try:
            self.send(final=True)
        except OSError:
            pass
        if self.store is not None and self.store.started:
            self.store.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m fastgate.store.writer <fd> <config json>`."""
    args = sys.argv[1:] if argv is None else argv
    fd, cfg = int(args[0]), orjson.loads(args[1])
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
        _Writer(sock, cfg).run()
    except BrokenPipeError:
        return 1  # the worker is gone: what was not acked, it re-sends to the next writer
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
