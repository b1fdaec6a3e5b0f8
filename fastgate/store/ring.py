"""A shared-memory ring of usage records, from a worker to its usage writer.

Why: a record must be out of the worker the moment its request ends, so that a
worker killed with SIGKILL right after loses nothing. A `send` per record on a
socket did that for about 14 µs per request (the system call, and one frame per
record to take apart in the writer). A copy into a shared mapping does it with
no system call: the bytes are in pages the writer maps too, so they outlive the
worker, and the writer takes them in batches on its own clock.

The memory is a memfd (anonymous, never on disk) of `HEADER_SIZE + capacity`
bytes. The worker creates it and passes its descriptor to every writer it
starts (a writer restarted after a crash maps the same ring and goes on from
what its predecessor settled).

Layout (little-endian, each field on its own 64-byte line):

- `head` (u64, written by the worker only): bytes ever produced;
- `settled` (u64, the writer only): bytes ever consumed and settled (committed
  to the store, fsync'd to the spool, or counted as dropped);
- `settled_n` (u64, the writer only): records ever settled;
- `sleeping` (u8, both): the writer set it before it waits on its socket; the
  worker that sees it clears it and rings the doorbell (one byte frame on the
  socket). A doorbell lost to a race costs latency only: the writer's wait is
  bounded by its tick.

Frames: u32 payload length, then the payload (one record encoded by orjson).
A frame never wraps: where the next one would not fit before the end of the
data area, the producer writes `SKIP` (if at least 4 bytes remain) and starts
again at offset 0; the consumer skips to the boundary on `SKIP`, or when fewer
than 4 bytes remain. Offsets are monotonic; position = offset % capacity.

Ordering: the worker writes a frame, then `head`. On x86-64 (TSO: stores are
seen in order) the writer that reads `head` sees the frame's bytes. Python has
no memory barrier to offer on weaker orderings (arm64): there a frame read too
early could fail to parse, and the writer would drop it with an error log
(writer.py `write`); fastgate's measurements and tests are on x86-64.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = ["CAPACITY", "HEADER_SIZE", "SKIP", "Ring"]

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
HEAD, SETTLED, SETTLED_N, SLEEPING = 0, 64, 128, 192
HEADER_SIZE = 256
SKIP = 0xFFFFFFFF
# 1 MiB (resident in both processes once used: the tree's RSS grows by twice
# that): at 15k records/s of ~600 bytes, 0.1 s of records. The writer takes a
# batch early when a quarter of it is used; a record that finds it full waits
# in the worker (bounded by max_queue) until the writer settles more.
CAPACITY = 1 << 20


class Ring:
    """One end of the ring: `Ring.create()` in the worker, `Ring(fd)` in the writer."""

    def __init__(self, fd: int, capacity: int = 0) -> None:
        size = os.fstat(fd).st_size
        self.fd = fd
        self.capacity = capacity or size - HEADER_SIZE
        self.mm = mmap.mmap(fd, HEADER_SIZE + self.capacity)
        self.data = memoryview(self.mm)[HEADER_SIZE:]

    @classmethod
    def create(cls, capacity: int = CAPACITY) -> Ring:
        fd = os.memfd_create("fastgate-usage-ring", os.MFD_CLOEXEC)
        os.ftruncate(fd, HEADER_SIZE + capacity)
        return cls(fd, capacity)

    def close(self) -> None:
        self.data.release()
        self.mm.close()
        os.close(self.fd)

    # -- the shared counters ------------------------------------------------------------

    def head(self) -> int:
        return U64.unpack_from(self.mm, HEAD)[0]

    def settled(self) -> int:
        return U64.unpack_from(self.mm, SETTLED)[0]

    def settled_n(self) -> int:
        return U64.unpack_from(self.mm, SETTLED_N)[0]

    def settle(self, offset: int, records: int) -> None:
        """Writer: everything before `offset` is settled (`records` in all, ever)."""
        U64.pack_into(self.mm, SETTLED_N, records)
        U64.pack_into(self.mm, SETTLED, offset)

    def set_sleeping(self, on: bool) -> None:
        self.mm[SLEEPING] = 1 if on else 0

    # -- producer (worker) --------------------------------------------------------------

    def put(self, head: int, settled: int, payload: bytes) -> int:
        """Copy one frame in at `head`; the new head, or -1 if it does not fit now
        (the caller re-reads `settled` or waits). Publishes the new head."""
        cap = self.capacity
        need = 4 + len(payload)
        pos = head % cap
        room = cap - pos
        if room < need:  # never wrap a frame: skip to the boundary
            if head + room + need - settled > cap:
                return -1
            if room >= 4:
                U32.pack_into(self.data, pos, SKIP)
            head += room
            pos = 0
        elif head + need - settled > cap:
            return -1
        U32.pack_into(self.data, pos, need - 4)
        self.data[pos + 4 : pos + need] = payload
        head += need
        U64.pack_into(self.mm, HEAD, head)
        return head

    # -- consumer (writer) --------------------------------------------------------------

    def frames(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The frames in [start, end) as (offset after the frame, payload)."""
        out = []
        cap = self.capacity
        data = self.data
        off = start
        while off < end:
            pos = off % cap
            room = cap - pos
            if room < 4:
                off += room
                continue
            n = U32.unpack_from(data, pos)[0]
            if n == SKIP:
                off += room
                continue
            if n > room - 4 or off + 4 + n > end:
                raise ValueError(f"usage ring: a frame of {n} bytes at {off} runs past {end}")
            out.append((off + 4 + n, bytes(data[pos + 4 : pos + 4 + n])))
            off += 4 + n
        return out
