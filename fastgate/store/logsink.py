"""The usage log sink: records leave the hot path through a bounded queue.

`append` is a list append (no I/O). A background thread wakes every
`flush_interval` seconds, takes what has queued and writes it as JSON lines to
the access log. If the queue is full, records are dropped and counted (the
count is exposed in /metrics and logged); `close()` flushes everything left.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import IO, Any

import orjson

log = logging.getLogger("fastgate.sink")


class LogSink:
    def __init__(
        self, access_log: str = "", *, max_queue: int = 1_000_000, flush_interval: float = 0.1
    ) -> None:
        self.access_log = access_log
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.queue: deque[Any] = deque()
        self.dropped = 0
        self.written = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.access_log == "-":
            self._file = sys.stdout.buffer
        elif self.access_log:
            self._file = open(self.access_log, "ab")  # noqa: SIM115 - lives as long as the sink
        self._thread = threading.Thread(target=self._run, name="fastgate-sink", daemon=True)
        self._thread.start()

    def append(self, record: Any) -> None:
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            return
        self.queue.append(record)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            q = self.queue
            if not q:
                return
            batch = []
            try:
                while True:
                    batch.append(q.popleft())
            except IndexError:
                pass
            if self._file is not None:
                # orjson encodes dataclasses natively (and fast).
                data = b"".join([orjson.dumps(r) + b"\n" for r in batch])
                self._file.write(data)
                self._file.flush()
            self.written += len(batch)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        if self.dropped:
            log.warning("usage sink dropped %d records (queue full)", self.dropped)
        if self._file is not None and self._file is not sys.stdout.buffer:
            self._file.close()
