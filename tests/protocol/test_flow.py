"""Backpressure both ways and a vanishing client, seen on the fake transports.

docs/contract.md section 3: a slow client slows the upstream read (the client transport's
`pause_writing` pauses reading the upstream); a slow upstream slows reading the
client; a client that goes away cancels the upstream request and its connection
is closed, and what was used is still logged.
"""

from __future__ import annotations

from pathlib import Path

from tests.protocol.cases import CASES, CONFIG, split_at_event
from tests.protocol.kit import connect_client, make_app

BY_ID = {c.id: c for c in CASES}


def test_slow_client_pauses_the_upstream_read(tmp_path: Path) -> None:
    ex = BY_ID["stream-injected-usage"].make("req-1")
    step = ex.steps[0]
    first, rest = split_at_event(step.response, 2)
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.feed(first)
    assert up.reading
    client.protocol.pause_writing()
    assert not up.reading
    client.protocol.pause_writing()  # idempotent
    client.protocol.resume_writing()
    assert up.reading
    assert up.events.count(("pause_reading",)) == 1
    up.feed(rest)
    assert client.data == ex.response
    # Released clean: the connection is kept for the next request.
    assert not up.closing


def test_client_paused_before_the_response_head(tmp_path: Path) -> None:
    """A pause that comes before the upstream answers holds the upstream read as soon
    as the answer starts."""
    ex = BY_ID["stream-injected-usage"].make("req-1")
    first, rest = split_at_event(ex.steps[0].response, 1)
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    client.protocol.pause_writing()
    up.feed(first)
    assert not up.reading
    client.protocol.resume_writing()
    assert up.reading
    up.feed(rest)
    assert client.data == ex.response


def test_slow_upstream_pauses_reading_the_client(tmp_path: Path) -> None:
    ex = BY_ID["nonstream"].make("req-1")
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.protocol.pause_writing()
    assert not client.reading
    up.protocol.resume_writing()
    assert client.reading
    up.feed(ex.steps[0].response)
    assert client.data == ex.response


def test_client_gone_mid_stream_cancels_the_upstream(tmp_path: Path) -> None:
    ex = BY_ID["stream-injected-usage"].make("req-1")
    first, _ = split_at_event(ex.steps[0].response, 2)
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.feed(first)
    client.peer_close()
    assert up.closing and up.lost  # cancelled: its connection closed, never reused
    assert client.closing
    (record,) = rig.sink.dicts()
    assert (record["status"], record["error_code"], record["attempts"]) == (499, "client_closed", 1)
    # usage not seen yet: estimated, ceil(characters / 4), from the prompt ("Say hello")
    # and the text the client was sent (the role chunk and "Hello")
    assert record["estimated"] is True
    assert (record["prompt_tokens"], record["completion_tokens"]) == (3, 2)


def test_client_gone_after_usage_bills_it(tmp_path: Path) -> None:
    """The usage chunk arrived, then the client left before [DONE]: it is still billed."""
    ex = BY_ID["stream-injected-usage"].make("req-1")
    first, _ = split_at_event(ex.steps[0].response, 5)  # through the usage-only chunk
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.feed(ex.request)
    up, _ = rig.loop.next_request()
    up.feed(first)
    client.peer_close()
    (record,) = rig.sink.dicts()
    assert record["status"] == 499
    assert (record["prompt_tokens"], record["completion_tokens"], record["cost_micros"]) == (
        12,
        5,
        64,
    )


def test_client_gone_while_connecting_cancels_the_attempt(tmp_path: Path) -> None:
    ex = BY_ID["nonstream"].make("req-1")
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    client.protocol.data_received(ex.request)  # no run_ready: the connect is pending
    client.peer_close()
    assert not rig.loop.requests and not rig.loop.upstreams
    (record,) = rig.sink.dicts()
    assert record["status"] == 499


ONE_CONNECTION = CONFIG.replace(
    "[routing]", "[server]\nupstream_max_connections = 1\n\n[routing]", 1
)


def test_client_gone_while_connecting_frees_the_connection_slot(tmp_path: Path) -> None:
    ex = BY_ID["nonstream"].make("req-1")
    rig = make_app(ONE_CONNECTION, tmp_path)
    gone = connect_client(rig)
    gone.protocol.data_received(ex.request)  # the same loop iteration as its EOF
    gone.peer_close()
    client = connect_client(rig, peer=("203.0.113.8", 50124))
    client.feed(ex.request)
    assert rig.loop.requests, "the only connection slot of the origin was never freed"
    up, request = rig.loop.next_request()
    assert request == ex.steps[0].request
    up.feed(ex.steps[0].response)
    assert client.data == ex.response
