"""The loop's write queue (fastgate/http/cork.py), seen on the fake transports.

What a callback writes waits for the end of the loop's turn and then leaves in
order, with the other writes of that turn; a close or a half-close never
overtakes queued bytes; a transport that closed meanwhile loses its bytes (as
its own buffer would) without costing the others theirs; bulk bytes are not
held (the queue is written at once past 64 KiB, so backpressure still comes
from the transport's own high-water mark).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastgate.http.cork import LIMIT, WriteQueue
from tests.protocol.cases import CASES, CONFIG, split_at_event
from tests.protocol.kit import FakeLoop, connect_client, make_app

BY_ID = {c.id: c for c in CASES}


def test_answers_leave_when_the_loop_turn_ends(tmp_path: Path) -> None:
    """Two clients answered in the same turn: nothing is written from inside the
    upstream callbacks; both answers leave when the turn ends, in the order they
    were written, each in one write."""
    rig = make_app(CONFIG, tmp_path)
    a, b = connect_client(rig), connect_client(rig, ("203.0.113.8", 50124))
    ex_a, ex_b = (BY_ID["nonstream"].make(rid) for rid in ("req-a", "req-b"))
    a.feed(ex_a.request)
    b.feed(ex_b.request)
    (up_a, _), (up_b, _) = rig.loop.next_request(), rig.loop.next_request()
    up_b.protocol.data_received(ex_b.steps[0].response)
    up_a.protocol.data_received(ex_a.steps[0].response)
    assert a.writes == [] and b.writes == []  # still inside the turn
    order: list[str] = []
    for name, tr in (("a", a), ("b", b)):
        tr.write = lambda data, tr=tr, name=name: (order.append(name), tr.writes.append(data))
    rig.loop.run_ready()
    assert order == ["b", "a"]
    assert a.data == ex_a.response and b.data == ex_b.response


def test_upstream_request_leaves_when_the_turn_ends(tmp_path: Path) -> None:
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    ex = BY_ID["nonstream"].make("req-1")
    client.feed(ex.request)  # opens the connection; the first request is written
    up, _ = rig.loop.next_request()
    up.feed(ex.steps[0].response)
    assert client.data == ex.response
    ex2 = BY_ID["nonstream"].make("req-2")
    client.protocol.data_received(ex2.request)  # a kept-alive connection: queued
    assert not rig.loop.requests
    rig.loop.run_ready()
    up2, sent = rig.loop.next_request()
    assert up2 is up and sent == ex2.steps[0].request


def test_a_closing_answer_is_written_before_the_close(tmp_path: Path) -> None:
    ex = BY_ID["connection-close"].make("req-1")
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.feed(ex.steps[0].response)
    assert client.data == ex.response
    kinds = [e[0] for e in client.events if e[0] in ("write", "close")]
    assert kinds == ["write", "close"]


def test_an_error_answer_then_eof_in_the_same_turn(tmp_path: Path) -> None:
    """A bad request and the client's EOF before the loop turns: the 400 is written,
    then the half-close; nothing is lost to the close that follows the EOF."""
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.protocol.data_received(b"GARBAGE / HTTP/1.1\r\n\r\n")
    client.peer_close()
    assert client.data.startswith(b"HTTP/1.1 400 ")  # (a closed transport drops writes)
    kinds = [e[0] for e in client.events if e[0] in ("write", "write_eof")]
    assert kinds == ["write", "write_eof"]
    assert client.closing


def test_a_request_answered_then_eof_in_the_same_turn(tmp_path: Path) -> None:
    """The answer is queued in the turn whose last callback is the client's EOF
    (uvloop closes the transport when eof_received returns): it still leaves."""
    ex = BY_ID["nonstream"].make("req-1")
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.protocol.data_received(ex.steps[0].response)  # the answer is queued...
    client.peer_close()  # ... and the client half-closes before the turn ends
    assert client.closing
    assert client.data == ex.response  # written before the close (it drops writes)


def test_bulk_bytes_are_not_held(tmp_path: Path) -> None:
    """A stream's bytes past 64 KiB in one turn are written at once, so the client
    transport's pause_writing (its high-water mark) pauses the upstream read in the
    same turn, as it did before the queue."""
    ex = BY_ID["stream-injected-usage"].make("req-1")
    head, _ = split_at_event(ex.steps[0].response, 1)
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.feed(head)
    written = len(client.data)
    event = b"data: " + b'{"choices":[{"index":0,"delta":{"content":"' + b"x" * 4000 + b'"}}]}'
    chunk = b"%x\r\n%b\n\n\r\n" % (len(event) + 2, event)
    fed = 0
    while len(client.data) == written:  # all in one turn: no run_ready
        up.protocol.data_received(chunk)
        fed += len(chunk)
        assert fed <= LIMIT + len(chunk), "bytes held past the limit"
    assert len(client.data) - written > LIMIT  # the queue, written at once


class _Tr:
    def __init__(self, closing: bool = False, fail: bool = False) -> None:
        self.closing = closing
        self.fail = fail
        self.got: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("handle is closed")
        self.got.append(data)


def test_queue_order_skips_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    loop = FakeLoop()
    q = WriteQueue(loop)
    a, b, gone, bad = _Tr(), _Tr(), _Tr(), _Tr(fail=True)
    for tr, data in ((a, b"1"), (bad, b"x"), (b, b"2"), (gone, b"y"), (a, b"3")):
        q.write(tr, data)
    assert len(loop.ready) == 1  # one flush scheduled for the turn
    gone.closing = True  # its peer left before the turn ended
    with caplog.at_level(logging.ERROR, "fastgate.http"):
        loop.run_ready()
    assert a.got == [b"1", b"3"] and b.got == [b"2"] and gone.got == []
    assert "handle is closed" in caplog.text  # logged, and the others still written
    q.write(a, b"4")  # the next turn schedules its own flush
    assert len(loop.ready) == 1
    loop.run_ready()
    assert a.got == [b"1", b"3", b"4"]


def test_a_write_during_the_flush_goes_in_the_next_batch() -> None:
    loop = FakeLoop()
    q = WriteQueue(loop)
    b = _Tr()

    class Echo(_Tr):
        def write(self, data: bytes) -> None:
            super().write(data)
            q.write(b, data + b"!")  # a pause_writing callback could write

    a = Echo()
    q.write(a, b"1")
    loop.run_ready()
    assert a.got == [b"1"] and b.got == [b"1!"]
