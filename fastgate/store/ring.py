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
- `sleeping` (u8, both): the writer set it before it waits on its socket; the
  worker that sees it clears it and rings the doorbell (one byte frame on the
  socket). A doorbell lost to a race costs latency only: the writer's wait is
  bounded by its tick;
- the settle block (the writer only), in two slots written in turn: `settled`
  (bytes ever consumed and settled: committed to the store, fsync'd to the
  spool, or counted as dropped), `settled_n` (records ever settled) and the
  writer's cumulative counters (`COUNTS`: written, dropped, rejected, replayed,
  write failures, ever, over every writer of the ring). A seqlock makes a block
  all-or-nothing: a slot is `end`, the fields, `begin` (in address order); the
  writer stores `begin`, then the fields, then `end`, and a reader that sees
  `end == begin` read a whole block. A writer killed in the middle of one
  leaves that slot torn and the other one whole: the next writer, and the
  worker, go on from the newest whole block, so the counters never lose or
  count twice a batch (they did when they came only with the writer's report
  on its socket, sent after the settle: a SIGKILL between the two lost it).

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
HEAD, SLEEPING = 0, 64
# A settle block: end, settled, settled_n, the COUNTS, begin.
COUNTS = ("written", "dropped", "rejected", "replayed", "write_failures")
BLOCK = struct.Struct(f"<{3 + len(COUNTS) + 1}Q")
FIELDS = struct.Struct(f"<{2 + len(COUNTS)}Q")
SLOTS = (128, 256)  # each block on its own two cache lines
HEADER_SIZE = 384
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

    def block(self) -> tuple[int, ...]:
        """The newest whole settle block: (seq, settled, settled_n, *COUNTS). A writer
        at work tears only the older slot; both torn (it went round twice while
        this read) is read again."""
        mm = self.mm
        while True:
            best: tuple[int, ...] | None = None
            for off in SLOTS:
                b = BLOCK.unpack_from(mm, off)
                if b[0] == b[-1] and (best is None or b[0] > best[0]):
                    best = b[:-1]
            if best is not None:
                return best

    def settled(self) -> int:
        return self.block()[1]

    def settled_n(self) -> int:
        return self.block()[2]

    def counts(self) -> dict[str, int]:
        """The writers' cumulative counters as of the newest whole settle block."""
        return dict(zip(COUNTS, self.block()[3:], strict=True))

    def settle(self, offset: int, records: int, counts: tuple[int, ...] = ()) -> None:
        """Writer: everything before `offset` is settled (`records` in all, ever);
        `counts` are the COUNTS, ever. One block, in the slot after the newest."""
        seq = self.block()[0] + 1
        off = SLOTS[seq % 2]
        mm = self.mm
        U64.pack_into(mm, off + BLOCK.size - 8, seq)  # begin
        FIELDS.pack_into(mm, off + 8, offset, records, *(counts or (0,) * len(COUNTS)))
        U64.pack_into(mm, off, seq)  # end: the block is whole

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
