"""The usage ring's framing (ring.py): frames never wrap, the producer skips to
the boundary (with a SKIP mark, or without one when fewer than 4 bytes are
left), refuses what would overwrite unsettled bytes, and the consumer reads
back exactly what was put, in order, across many wraps."""

from __future__ import annotations

import os
import random

from fastgate.store.ring import BLOCK, COUNTS, SKIP, SLEEPING, SLOTS, U32, U64, Ring


def test_frames_round_trip_across_wraps_and_skips() -> None:
    ring = Ring.create(256)
    try:
        rnd = random.Random(7)
        head = settled = 0
        sent: list[bytes] = []
        got: list[bytes] = []
        for i in range(3000):
            payload = bytes([i % 251]) * rnd.randint(0, 60)
            new = ring.put(head, settled, payload)
            if new < 0:  # full: the consumer takes everything, then it fits
                frames = ring.frames(settled, head)
                got.extend(p for _, p in frames)
                assert not frames or frames[-1][0] <= head
                settled = head
                ring.settle(settled, len(got))
                new = ring.put(head, settled, payload)
                assert new > 0
            assert new - settled <= ring.capacity
            assert ring.head() == new
            head = new
            sent.append(payload)
        got.extend(p for _, p in ring.frames(settled, head))
        assert got == sent
        assert ring.settled_n() == len(got) - len(ring.frames(settled, head))
    finally:
        ring.close()


def test_skip_mark_and_short_tail() -> None:
    ring = Ring.create(64)
    try:
        head = ring.put(0, 0, b"x" * 50)  # 54 bytes: 10 left before the boundary
        assert head == 54
        assert ring.put(head, 0, b"y" * 20) == -1  # would overwrite unsettled bytes
        head2 = ring.put(head, head, b"y" * 20)  # settled: skip 10 (marked), write at 0
        assert head2 == 64 + 24
        assert U32.unpack_from(ring.data, 54)[0] == SKIP
        assert ring.frames(head, head2) == [(head2, b"y" * 20)]
        head3 = ring.put(head2, head2, b"z" * 34)  # ends 2 bytes before the boundary
        assert head3 == 128 - 2
        head4 = ring.put(head3, head3, b"w")  # 2 bytes left: skipped with no mark
        assert head4 == 128 + 5
        assert ring.frames(head2, head4) == [(head3, b"z" * 34), (head4, b"w")]
    finally:
        ring.close()


def test_a_second_mapping_sees_the_first_ones_frames() -> None:
    """The writer maps the worker's memfd: same bytes, same counters."""
    ring = Ring.create(4096)
    other = Ring(os.dup(ring.fd))
    try:
        head = ring.put(0, 0, b'["a"]')
        assert other.head() == head
        assert other.frames(0, other.head()) == [(head, b'["a"]')]
        other.settle(head, 1)
        assert ring.settled() == head and ring.settled_n() == 1
        other.set_sleeping(True)
        assert ring.mm[SLEEPING] == 1
    finally:
        other.close()
        ring.close()


def test_the_settle_block_is_whole_or_not_at_all() -> None:
    """A writer killed in the middle of a settle block (its `begin` and some fields
    stored, not its `end`) leaves the previous block the newest whole one: the
    next writer and the worker go on from it, counters and offset together."""
    ring = Ring.create(4096)
    other = Ring(os.dup(ring.fd))
    try:
        assert ring.block() == (0,) * (BLOCK.size // 8 - 1)
        other.settle(100, 3, (3, 0, 0, 0, 0))
        other.settle(200, 7, (6, 1, 0, 0, 0))
        assert ring.settled() == 200 and ring.settled_n() == 7
        assert ring.counts() == dict(zip(COUNTS, (6, 1, 0, 0, 0), strict=True))
        # The third block goes to the first slot: begin and two fields, then killed.
        off = SLOTS[3 % 2]
        U64.pack_into(other.mm, off + BLOCK.size - 8, 3)
        U64.pack_into(other.mm, off + 8, 300)
        U64.pack_into(other.mm, off + 16, 11)
        assert (ring.settled(), ring.settled_n(), ring.counts()["written"]) == (200, 7, 6)
        # The next writer settles over the torn slot; its block is the newest.
        other.settle(300, 11, (10, 1, 0, 0, 0))
        assert ring.block()[:4] == (3, 300, 11, 10)
        other.settle(400, 12, (11, 1, 0, 0, 0))
        assert ring.block()[:4] == (4, 400, 12, 11)
    finally:
        other.close()
        ring.close()
