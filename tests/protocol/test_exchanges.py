"""Exact bytes both ways, for every case of `cases.py`, however the bytes arrive.

Each case is driven through a real App (ClientProtocol -> exchange ->
UpstreamProtocol) on fake transports, and fed:

- whole: the client's request in one read, each upstream answer in one read;
- split at every byte position into two reads, on the client side (the
  upstream answers whole) and, separately, on the upstream side;
- one byte a read on both sides (h11's test style);
- pipelined: two or three requests in one read, answered in order.

What is asserted: the exact request bytes written upstream, the exact response
bytes written to the client (framing-normalised by `kit.split_responses` only
where the split decides chunk boundaries, i.e. when the upstream answer is
split), whether the client connection is closed, and the usage records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.cases import CASES, CONFIG, Case, Exchange
from tests.protocol.kit import FakeTransport, Rig, connect_client, make_app, split_responses

Splitter = Callable[[int, bytes], list[bytes]]


def whole(_: int, data: bytes) -> list[bytes]:
    return [data]


def bytewise(_: int, data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def drive(
    tmp_path: Path,
    exchanges: list[Exchange],
    client_segments: list[bytes],
    upstream_split: Splitter = whole,
) -> tuple[Rig, FakeTransport]:
    """Feed the client's bytes, then answer each upstream request of each exchange in
    turn (asserting its exact bytes), splitting upstream answer `i` by `upstream_split`."""
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    for seg in client_segments:
        client.feed(seg)
    steps = [s for ex in exchanges for s in ex.steps]
    for i, step in enumerate(steps):
        up, request = rig.loop.next_request()
        assert up.peer == step.origin, f"step {i}: request went to {up.peer}"
        assert request == step.request, f"step {i}: upstream request bytes"
        for seg in upstream_split(i, step.response):
            if not up.feed(seg):
                break  # the gateway closed this connection (a failed attempt)
        if step.then_close:
            up.peer_close()
    assert not rig.loop.requests, "the gateway wrote an upstream request nobody expected"
    return rig, client


def check_records(rig: Rig, exchanges: list[Exchange], rids: list[str]) -> None:
    records = rig.sink.dicts()
    assert [r["request_id"] for r in records] == rids
    for rec, ex in zip(records, exchanges, strict=True):
        got = {k: rec[k] for k in ex.record}
        assert got == ex.record


def check_closed(client: FakeTransport, exchanges: list[Exchange]) -> None:
    assert client.closing == exchanges[-1].closes, client.events
    assert not client.aborted


def expected_parts(exchanges: list[Exchange]) -> list[tuple[bytes, bytes]]:
    return split_responses(b"".join(ex.response for ex in exchanges))


def run_case(
    tmp_path: Path,
    case: Case,
    client_split: Callable[[bytes], list[bytes]],
    upstream_split: Splitter,
    exact: bool,
    where: str,
) -> None:
    ex = case.make("req-1")
    try:
        rig, client = drive(tmp_path, [ex], client_split(ex.request), upstream_split)
        if exact:
            assert client.data == ex.response
        else:
            assert split_responses(client.data) == expected_parts([ex])
        check_closed(client, [ex])
        check_records(rig, [ex], ["req-1"])
    except AssertionError as exc:
        raise AssertionError(f"{case.id}, {where}: {exc}") from exc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_whole(tmp_path: Path, case: Case) -> None:
    ex = case.make("req-1")
    rig, client = drive(tmp_path, [ex], [ex.request])
    assert client.data == ex.response
    check_closed(client, [ex])
    check_records(rig, [ex], ["req-1"])
    # Every transport got explicit write-buffer limits (uvloop's default low mark is tiny).
    for t in (client, *rig.loop.upstreams):
        assert t.limits is not None and t.limits[0] > t.limits[1] > 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_client_split_everywhere(tmp_path: Path, case: Case) -> None:
    request = case.make("req-1").request
    for k in range(1, len(request)):
        # The upstream answers whole, so the client's bytes are exact whatever the split.
        run_case(
            tmp_path,
            case,
            lambda r, k=k: [r[:k], r[k:]],
            whole,
            exact=True,
            where=f"client request split at {k}",
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upstream_split_everywhere(tmp_path: Path, case: Case) -> None:
    for i, step in enumerate(case.make("req-1").steps):
        for k in range(1, len(step.response)):

            def split(j: int, data: bytes, i: int = i, k: int = k) -> list[bytes]:
                return [data[:k], data[k:]] if j == i else [data]

            run_case(
                tmp_path,
                case,
                lambda r: [r],
                split,
                exact=False,
                where=f"upstream answer {i} split at {k}",
            )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_byte_per_read(tmp_path: Path, case: Case) -> None:
    run_case(tmp_path, case, lambda r: bytewise(0, r), bytewise, False, "one byte per read")


PIPELINED = [c for c in CASES if c.pipeline]


@pytest.mark.parametrize("case", PIPELINED, ids=[c.id for c in PIPELINED])
@pytest.mark.parametrize("n", [2, 3])
def test_pipelined(tmp_path: Path, case: Case, n: int) -> None:
    rids = [f"req-{i}" for i in range(1, n + 1)]
    exchanges = [case.make(rid) for rid in rids]
    rig, client = drive(tmp_path, exchanges, [b"".join(ex.request for ex in exchanges)])
    assert client.data == b"".join(ex.response for ex in exchanges)
    check_closed(client, exchanges)
    check_records(rig, exchanges, rids)


@pytest.mark.parametrize("case", PIPELINED, ids=[c.id for c in PIPELINED])
def test_pipelined_upstream_bytewise(tmp_path: Path, case: Case) -> None:
    rids = ["req-1", "req-2"]
    exchanges = [case.make(rid) for rid in rids]
    rig, client = drive(tmp_path, exchanges, [b"".join(ex.request for ex in exchanges)], bytewise)
    assert split_responses(client.data) == expected_parts(exchanges)
    check_records(rig, exchanges, rids)


@pytest.mark.parametrize("closing", ["connection-close", "http10-nonstream"])
def test_pipelined_after_connection_close_is_not_answered(tmp_path: Path, closing: str) -> None:
    """The request that closes the connection (`Connection: close`, or HTTP/1.0) is
    served; one pipelined behind it in the same read is never served."""
    by_id: dict[str, Any] = {c.id: c for c in CASES}
    first = by_id[closing].make("req-1")
    second = by_id["nonstream"].make("req-2")
    rig, client = drive(tmp_path, [first], [first.request + second.request])
    assert client.data == first.response
    assert client.closing
    check_records(rig, [first], ["req-1"])


def test_keepalive_reuses_the_upstream_connection(tmp_path: Path) -> None:
    """Two requests on one client connection, answered with keep-alive: one upstream
    connection serves both."""
    by_id: dict[str, Any] = {c.id: c for c in CASES}
    exchanges = [by_id["nonstream"].make("req-1"), by_id["stream-injected-usage"].make("req-2")]
    rig = make_app(CONFIG, tmp_path)
    client = connect_client(rig)
    for ex in exchanges:
        client.feed(ex.request)
        up, request = rig.loop.next_request()
        assert request == ex.steps[0].request
        up.feed(ex.steps[0].response)
    assert client.data == b"".join(ex.response for ex in exchanges)
    assert len(rig.loop.upstreams) == 1
    assert not client.closing
    check_records(rig, exchanges, ["req-1", "req-2"])
