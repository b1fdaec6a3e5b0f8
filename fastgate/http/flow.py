"""Flow control: reading paused for several independent reasons.

A transport's reading is paused while at least one reason holds and resumed only
when the last one is lifted, so two parts of the code never undo each other's
pause. Pause and resume are idempotent per reason.
"""

from __future__ import annotations

import asyncio

PEER_SLOW = 1  # the other side's write buffer is over its high-water mark
PIPELINE = 2  # too many pipelined requests are queued
DRAINING = 4  # shutting down: take no new requests
UPLOAD = 8  # a streamed request body waits for its upstream connection (http/upload.py)

# Explicit limits on every transport (uvloop's default low-water mark is tiny,
# which makes resume_writing fire on almost every write).
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024


class ReadGate:
    __slots__ = ("reasons", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reasons = 0

    def pause(self, reason: int) -> None:
        if not self.reasons:
            try:
                self.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons:
                try:
                    self.transport.resume_reading()
                except (RuntimeError, AttributeError):
                    pass

    @property
    def paused(self) -> bool:
        return bool(self.reasons)
