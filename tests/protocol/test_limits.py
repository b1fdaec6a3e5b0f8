"""max_header_bytes bounds the request head, never the body (issue 7 item 6).

A body over `max_header_bytes` (but under `max_body_bytes`) must be served
whichever read it arrives in; a head over `max_header_bytes` gets 431 however
it is split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol.cases import (
    CONFIG,
    JSON_CT,
    PRIMARY,
    UP_HEADERS,
    client_head,
    client_request,
    completion,
    upstream_request,
    upstream_response,
)
from tests.protocol.kit import connect_client, make_app, normalise

SMALL_LIMIT = 1024
SMALL = CONFIG.replace("[routing]", f"[server]\nmax_header_bytes = {SMALL_LIMIT}\n\n[routing]", 1)
assert SMALL != CONFIG


_TOO_LARGE_BODY = (
    b'{"error":{"message":"request headers too large",'
    b'"type":"invalid_request_error","code":"headers_too_large"}}'
)
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n"
    b"x-request-id: fg-<id>\r\nconnection: close\r\n\r\n%b"
) % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)


def big_body(size: int) -> bytes:
    """A chat request body of exactly `size` bytes."""
    pre = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
    post = b'"}]}'
    return pre + b"x" * (size - len(pre) - len(post)) + post


def served(tmp_path: Path, config: str, body: bytes, segments: list[bytes]) -> None:
    """Feed `segments` (the request) and assert the request is forwarded and answered."""
    rig = make_app(config, tmp_path)
    client = connect_client(rig)
    for seg in segments:
        client.feed(seg)
    assert client.data == b"", normalise(client.data)[:200]
    up, request = rig.loop.next_request()
    assert request == upstream_request(PRIMARY, body)
    reply = completion()
    headers = (JSON_CT, *UP_HEADERS)
    up.feed(upstream_response(200, headers, [reply], "length"))
    framing = b"content-length: %d\r\n" % len(reply)
    assert client.data == client_head(200, headers, "req-1", framing, False) + reply
    (record,) = rig.sink.dicts()
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"]) == (200, 12, 5)


BODY_64K = 66_000  # about 64 KB: over the 64 KiB max_header_bytes default, far under 32 MiB


def test_64k_body_in_the_same_read_as_its_head_is_served(tmp_path: Path) -> None:
    body = big_body(BODY_64K)
    request = client_request("req-1", body)
    served(tmp_path, CONFIG, body, [request])


def test_64k_body_in_one_read_after_its_head_is_served(tmp_path: Path) -> None:
    body = big_body(BODY_64K)
    request = client_request("req-1", body)
    head_len = len(request) - len(body)
    served(tmp_path, CONFIG, body, [request[:head_len], request[head_len:]])


def test_body_over_header_limit_split_everywhere_is_served(tmp_path: Path) -> None:
    """The same with a 1 KiB header limit, so that every split position is cheap."""
    body = big_body(3 * SMALL_LIMIT)
    request = client_request("req-1", body)
    for k in range(1, len(request)):
        try:
            served(tmp_path, SMALL, body, [request[:k], request[k:]])
        except AssertionError as exc:
            raise AssertionError(f"split at {k}: {exc}") from exc


def test_body_over_header_limit_in_small_reads_is_served(tmp_path: Path) -> None:
    """Today's behaviour that must stay: a big body arriving in reads smaller than
    max_header_bytes is served."""
    body = big_body(BODY_64K)
    request = client_request("req-1", body)
    served(tmp_path, CONFIG, body, [request[i : i + 16384] for i in range(0, len(request), 16384)])


# --------------------------------------------------------------------------- heads over the limit


def oversized_head(limit: int) -> bytes:
    """A request whose head alone is over `limit` bytes (one long end-to-end header)."""
    body = big_body(200)
    pad = b"x-padding: " + b"p" * (limit + 100)
    request = client_request("req-1", body, extra=(pad,))
    head = request[: len(request) - len(body)]
    assert len(head) > limit + 100
    return request


def rejected(tmp_path: Path, config: str, segments: list[bytes]) -> None:
    rig = make_app(config, tmp_path)
    client = connect_client(rig)
    for seg in segments:
        client.feed(seg)
    assert normalise(client.data) == TOO_LARGE
    assert client.eof_written  # our side half-closed; the rest is discarded (lingering)
    assert not rig.loop.requests and not rig.loop.upstreams
    assert rig.sink.records == []
    # The lingering close ends within a second.
    rig.app.start_sweeper()
    rig.loop.advance(1.1)
    rig.app.stop_sweeper()
    assert client.closing and client.lost


def test_head_over_default_limit_gets_431_whole(tmp_path: Path) -> None:
    rejected(tmp_path, CONFIG, [oversized_head(65536)])


def test_head_over_default_limit_gets_431_in_small_reads(tmp_path: Path) -> None:
    request = oversized_head(65536)
    rejected(tmp_path, CONFIG, [request[i : i + 1000] for i in range(0, len(request), 1000)])


def test_head_over_limit_gets_431_split_everywhere(tmp_path: Path) -> None:
    request = oversized_head(SMALL_LIMIT)
    for k in range(1, len(request)):
        try:
            rejected(tmp_path, SMALL, [request[:k], request[k:]])
        except AssertionError as exc:
            raise AssertionError(f"split at {k}: {exc}") from exc


def test_head_over_limit_gets_431_one_byte_per_read(tmp_path: Path) -> None:
    request = oversized_head(SMALL_LIMIT)
    rejected(tmp_path, SMALL, [request[i : i + 1] for i in range(len(request))])


@pytest.mark.parametrize(
    "reads",
    [
        "one",
        "head-then-body",
    ],
)
def test_head_just_under_limit_is_served(tmp_path: Path, reads: str) -> None:
    """The bound is on the head: one just under it is served, whether its (small) body
    comes in the same read (today 431: the whole read is counted) or the next."""
    body = big_body(200)
    base = client_request("req-1", body, extra=(b"x-padding: ",))
    pad = b"x-padding: " + b"p" * (SMALL_LIMIT - (len(base) - len(body)) - 100)
    request = client_request("req-1", body, extra=(pad,))
    head_len = len(request) - len(body)
    assert head_len < SMALL_LIMIT < len(request)
    rig = make_app(SMALL, tmp_path)
    client = connect_client(rig)
    if reads == "one":
        client.feed(request)
    else:
        client.feed(request[:head_len])
        client.feed(request[head_len:])
    assert client.data == b"", normalise(client.data)[:200]
    _, upstream = rig.loop.next_request()
    assert upstream == upstream_request(
        PRIMARY, body, b"user-agent: prototest/1.0\r\n" + pad + b"\r\n"
    )
