"""The writes of one loop iteration, sent together when its I/O callbacks are done.

Why: on loopback, a write() to a peer that sleeps in epoll_wait wakes that peer
from inside the writer's system call (the receive path runs in the sender's
context, then the wake-up). A gateway is slower than the client and the upstream
it sits between, so they are usually asleep when it writes; written at once, every
answer and every upstream request paid a wake-up. Measured under `wrk -c32` in
front of the bench stub (`python bench/writer_probe.py --duration 6 --connections
32 --strace 0`): about a fifth of the data-plane thread's samples were in that
path. Queued and sent back to back at the end of the iteration, only the first
write finds the peer asleep.

How: every data-plane write (answers to clients, requests and streamed bodies to
upstreams) goes into ONE queue per loop, in order. The first write of an iteration
schedules `flush` with `call_soon`; uvloop runs it once the callbacks of the
current poll are done, before it polls again, so a write waits for the other
events of the same batch, never for the next one. Whoever closes or half-closes a
transport calls `flush()` first (a close never overtakes queued bytes); bytes
queued for a transport that is closing by the time of the flush (its peer left,
or it was aborted, which means "drop what is buffered") are dropped, as its own
buffer would be.

Backpressure is unchanged: the queue holds at most `LIMIT` bytes (all transports
together); a write that takes it past that flushes at once, so a transport's
`pause_writing` still comes within 64 KiB of its high-water mark, and a bulk body
(a stream behind a slow reader, a large upload) leaves in 64 KiB batches, as
before in its reads' sizes. The wake-ups saved are those of small writes.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LIMIT", "WriteQueue"]

LIMIT = 64 * 1024  # bytes the queue holds before it is written at once

log = logging.getLogger("fastgate.http")


class WriteQueue:
    """Writes queued in order: transport, bytes, transport, bytes, ..."""

    __slots__ = ("flush", "loop", "pending", "size")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.pending: list[Any] = []
        self.size = 0  # bytes in `pending`
        self.flush = self._flush  # one bound method, scheduled again and again

    def write(self, transport: Any, data: bytes) -> None:
        """Queue `data` for `transport` (the hot callers inline these lines)."""
        pending = self.pending
        if not pending:
            self.loop.call_soon(self.flush)
        pending.append(transport)
        pending.append(data)
        self.size += len(data)
        if self.size > LIMIT:
            self._flush()

    def _flush(self) -> None:
        """Write everything queued, in order (also called before a close)."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.size = 0
        for i in range(0, len(pending), 2):
            transport = pending[i]
            if transport.is_closing():
                continue
            try:
                transport.write(pending[i + 1])
            except Exception:  # one transport's failure must not hold the others' bytes
                log.exception("write to %r failed", transport)
