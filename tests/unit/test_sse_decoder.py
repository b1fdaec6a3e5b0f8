"""SSEDecoder: spec behaviour, equivalence under any split, bounds.

Expectations come from two independent places: events built from their parts
(the test knows what it put in), and `reference_decode`, a slow line-by-line
reading of the SSE spec written here without the decoder's search tricks.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastgate.sse.decoder import (
    SSEDecoder,
    SSEError,
    SSEEvent,
    last_event_end,
    next_event_end,
    parse_event,
)

BOM = b"\xef\xbb\xbf"

# -- the oracle -----------------------------------------------------------------------


def _lines(stream: bytes, start: int):
    """(content_start, content_end, next_line_start, terminated) per line."""
    i, n = start, len(stream)
    while i < n:
        j = i
        while j < n and stream[j] not in b"\r\n":
            j += 1
        if j == n:
            yield i, j, n, False
            return
        k = j + 2 if stream[j : j + 2] == b"\r\n" else j + 1
        yield i, j, k, True
        i = k


def reference_decode(stream: bytes) -> tuple[list[SSEEvent], list[int]]:
    """Decode a whole stream as the spec reads it (plus a final flush at EOF).

    Returns the events and the raw length of every event, dropped ones included.
    """
    events: list[SSEEvent] = []
    sizes: list[int] = []
    skip = 3 if stream.startswith(BOM) else 0
    ev_start: int | None = None
    data: list[bytes] = []
    name: str | None = None
    ident: str | None = None

    def dispatch(end: int) -> None:
        assert ev_start is not None
        sizes.append(end - ev_start)
        if data or name is not None:
            events.append(SSEEvent(name, b"\n".join(data), ident, stream[ev_start:end]))

    for a, b, c, terminated in _lines(stream, 0):
        content_start = a + skip if a == 0 else a
        line = stream[content_start:b]
        if not line and terminated and not (a == 0 and skip):
            if ev_start is not None:
                dispatch(c)
            ev_start, data, name, ident = None, [], None, None
            continue
        if ev_start is None:
            ev_start = a
        if not line or line.startswith(b":"):
            continue
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"id" and b"\0" not in value:
            ident = value.decode("utf-8", "replace")
    if ev_start is not None:
        dispatch(len(stream))
    return events, sizes


# -- helpers ----------------------------------------------------------------------------


def decode_pieces(pieces: list[bytes], max_event_bytes: int = 16 * 1024 * 1024) -> list[SSEEvent]:
    dec = SSEDecoder(max_event_bytes)
    out: list[SSEEvent] = []
    for p in pieces:
        out += dec.feed(p)
    return out + dec.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    pieces, prev = [], 0
    for c in points:
        pieces.append(data[prev:c])
        prev = c
    pieces.append(data[prev:])
    return pieces


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- hand-written cases ---------------------------------------------------------------


def ev(data: bytes, raw: bytes, event: str | None = None, id: str | None = None) -> SSEEvent:
    return SSEEvent(event, data, id, raw)


EXAMPLES = [
    (b"data: hello\n\n", [ev(b"hello", b"data: hello\n\n")]),
    (b"data:hello\n\n", [ev(b"hello", b"data:hello\n\n")]),
    (b"data:  two spaces\n\n", [ev(b" two spaces", b"data:  two spaces\n\n")]),
    (b"data: a\ndata: b\n\n", [ev(b"a\nb", b"data: a\ndata: b\n\n")]),
    (b"data\n\n", [ev(b"", b"data\n\n")]),
    (b"data\ndata\n\n", [ev(b"\n", b"data\ndata\n\n")]),
    (b"data:\n\n", [ev(b"", b"data:\n\n")]),
    (
        b"event: message_start\ndata: {}\nid: 42\n\n",
        [ev(b"{}", b"event: message_start\ndata: {}\nid: 42\n\n", "message_start", "42")],
    ),
    (b"event: ping\n\n", [ev(b"", b"event: ping\n\n", "ping")]),
    (b"event\n\n", [ev(b"", b"event\n\n", "")]),
    (b": keepalive\n\n", []),
    (b"id: 7\n\n", []),
    (b"retry: 100\n\n", []),
    (b"retry: 100\ndata: x\n\n", [ev(b"x", b"retry: 100\ndata: x\n\n")]),
    (b"foo: bar\ndata: x\n\n", [ev(b"x", b"foo: bar\ndata: x\n\n")]),
    (b": c1\ndata: x\n: c2\n\n", [ev(b"x", b": c1\ndata: x\n: c2\n\n")]),
    (b"id: a\x00b\ndata: x\n\n", [ev(b"x", b"id: a\x00b\ndata: x\n\n")]),
    (b"data: x\r\n\r\n", [ev(b"x", b"data: x\r\n\r\n")]),
    (b"data: x\r\rdata: y\r\r", [ev(b"x", b"data: x\r\r"), ev(b"y", b"data: y\r\r")]),
    (b"data: x\r\ndata: y\n\r\n", [ev(b"x\ny", b"data: x\r\ndata: y\n\r\n")]),
    (b"data: x\r\n\n", [ev(b"x", b"data: x\r\n\n")]),
    (b"data: x\n\r", [ev(b"x", b"data: x\n\r")]),
    (b"\n\n\r\ndata: x\n\n\n\ndata: y\n\n", [ev(b"x", b"data: x\n\n"), ev(b"y", b"data: y\n\n")]),
    (b"data: a: b\n\n", [ev(b"a: b", b"data: a: b\n\n")]),
    (b"data: x\ra\r\rdata: y\r\r", [ev(b"x", b"data: x\ra\r\r"), ev(b"y", b"data: y\r\r")]),
    (b"data: x\na\n\n", [ev(b"x", b"data: x\na\n\n")]),
    (b"data: x\r\na\r\n\r\n", [ev(b"x", b"data: x\r\na\r\n\r\n")]),
    (b"data: tail", [ev(b"tail", b"data: tail")]),
    (b"data: tail\n", [ev(b"tail", b"data: tail\n")]),
    (b"data: tail\r", [ev(b"tail", b"data: tail\r")]),
    (b"data: x\n\ndata: tail\r\n", [ev(b"x", b"data: x\n\n"), ev(b"tail", b"data: tail\r\n")]),
    (BOM + b"data: x\n\n", [ev(b"x", BOM + b"data: x\n\n")]),
    (b"data: " + BOM + b"x\n\n", [ev(BOM + b"x", b"data: " + BOM + b"x\n\n")]),
    (b"data: caf\xc3\xa9\n\n", [ev(b"caf\xc3\xa9", b"data: caf\xc3\xa9\n\n")]),
    (b"", []),
    (b"\r\n\r\n\n", []),
]


@pytest.mark.parametrize(("stream", "expected"), EXAMPLES)
def test_examples_whole_and_bytewise(stream: bytes, expected: list[SSEEvent]) -> None:
    assert decode_pieces([stream]) == expected
    assert decode_pieces(bytewise(stream)) == expected
    # the oracle agrees with the hand-written expectations
    assert reference_decode(stream)[0] == expected


def test_events_are_returned_as_soon_as_complete() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a") == []
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\n") == [ev(b"a", b"data: a\n\n")]
    assert dec.feed(b"data: b\n\ndata: c\n\nda") == [
        ev(b"b", b"data: b\n\n"),
        ev(b"c", b"data: c\n\n"),
    ]
    assert dec.feed(b"ta: d\r\n\r\n") == [ev(b"d", b"data: d\r\n\r\n")]
    assert dec.close() == []


def test_crlf_split_across_feeds() -> None:
    """A CR at the end of a feed may be half of a CRLF: the event waits for one byte."""
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\n\r") == []  # blank line CR... or CRLF: unknown yet
    assert dec.feed(b"\n") == [ev(b"a", b"data: a\r\n\r\n")]
    assert dec.feed(b"data: b\r\r") == []
    assert dec.feed(b"data: c\r\r") == [ev(b"b", b"data: b\r\r")]
    assert dec.close() == [ev(b"c", b"data: c\r\r")]


def test_close_on_empty_and_twice() -> None:
    dec = SSEDecoder()
    assert dec.close() == []
    dec.feed(b"data: x")
    assert dec.close() == [ev(b"x", b"data: x")]
    assert dec.close() == []


# -- property tests ----------------------------------------------------------------------

TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: e",
    b"id:",
    b"id: 1",
    b"retry: 5",
    b":",
    b": c",
    b"x",
    b"yz",
    b" ",
    b"\x00",
    b"\xc3\xa9",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b"\r\n\r\n",
]
streams = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)
bom_streams = st.tuples(st.booleans(), streams).map(
    lambda t: (BOM + t[1]) if t[0] and t[1][:1] not in (b"\r", b"\n") else t[1]
)


@settings(max_examples=300, deadline=None)
@given(stream=bom_streams, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_split_matches_the_reference(stream: bytes, cuts: list[int]) -> None:
    expected, _ = reference_decode(stream)
    assert decode_pieces([stream]) == expected
    assert decode_pieces(split_at(stream, cuts)) == expected


@settings(max_examples=300, deadline=None)
@given(stream=streams)
def test_parse_event_reads_each_event_as_the_reference(stream: bytes) -> None:
    # parse_event gets one event's raw bytes, terminator included (the stream usage
    # scanner's call); its one-data-line shortcut must agree with the full reading.
    for expected in reference_decode(stream)[0]:
        got = parse_event(expected.raw)
        assert got is not None
        assert (got.event, got.data, got.id) == (expected.event, expected.data, expected.id)


@pytest.mark.parametrize(
    "raw",
    [b"data: {}\n\n", b"data:{}\r\n\r\n", b"data: {}\n", b"data: {}", b"\n\ndata: {}\n\n"],
)
def test_parse_event_one_data_line_any_terminator(raw: bytes) -> None:
    got = parse_event(raw)
    assert got is not None and (got.event, got.data, got.id) == (None, b"{}", None)


@settings(max_examples=100, deadline=None)
@given(stream=streams)
def test_byte_by_byte_matches_the_reference(stream: bytes) -> None:
    assert decode_pieces(bytewise(stream)) == reference_decode(stream)[0]


field_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)


@st.composite
def built_streams(draw):
    """Streams assembled from events whose decoded form is known by construction."""
    eols = draw(st.sampled_from([["\n"], ["\r\n"], ["\r"], ["\n", "\r\n", "\r"]]))
    parts: list[bytes] = []
    expected: list[SSEEvent] = []
    prev_eol = ""
    for _ in range(draw(st.integers(0, 6))):
        lines: list[tuple[str, str]] = []
        data: list[str] = []
        name = ident = None
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["data", "data", "event", "id", "comment", "retry"]))
            value = draw(field_text)
            sep = draw(st.sampled_from([":", ": "]))
            if kind == "comment":
                lines.append((":" + value, kind))
                continue
            if kind == "retry":
                lines.append(("retry: 1000", kind))
                continue
            stored = value[1:] if sep == ":" and value.startswith(" ") else value
            stored_id = None if kind == "id" and "\0" in stored else stored
            lines.append((f"{kind}{sep}{value}", kind))
            if kind == "data":
                data.append(stored)
            elif kind == "event":
                name = stored
            elif stored_id is not None:
                ident = stored_id
        raw = b""
        for text, _kind in lines:
            eol = draw(st.sampled_from(eols))
            raw += text.encode() + eol.encode()
            prev_eol = eol
        # the blank line: after a lone CR it may not be a lone LF (that is one CRLF)
        blank_choices = [e for e in eols if not (prev_eol == "\r" and e == "\n")] or ["\r\n"]
        blank = draw(st.sampled_from(blank_choices))
        raw += blank.encode()
        prev_eol = blank
        parts.append(raw)
        if data or name is not None:
            expected.append(SSEEvent(name, "\n".join(data).encode(), ident, raw))
    return b"".join(parts), expected


@settings(max_examples=200, deadline=None)
@given(built=built_streams(), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_built_streams_decode_to_their_parts(built, cuts) -> None:
    stream, expected = built
    assert decode_pieces(split_at(stream, cuts)) == expected
    assert reference_decode(stream)[0] == expected


# -- boundary helpers -----------------------------------------------------------------


def brute_pairs(buf: bytes, lo: int, hi: int, cr: bool) -> list[int]:
    """End offsets of blank-line terminators whose starting pair lies in [lo, hi)."""
    pairs = (b"\n\n", b"\n\r", b"\r\r") if cr else (b"\n\n",)
    ends = []
    for i in range(lo, hi - 1):
        if buf[i : i + 2] in pairs:
            end = i + 2
            if buf[i + 1] == 13 and buf[end : end + 1] == b"\n":
                end += 1
            ends.append(end)
    return ends


@settings(max_examples=300, deadline=None)
@given(
    buf=st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\r\n", b"bc"]), max_size=30).map(b"".join),
    lo=st.integers(0, 40),
    hi=st.integers(0, 40),
)
@example(buf=b"\ra\r\r", lo=0, hi=4)
@example(buf=b"a\nb\n\na\n\n", lo=0, hi=8)
@example(buf=b"\r\n\r\n\r\n", lo=1, hi=6)
def test_boundary_helpers_match_brute_force(buf: bytes, lo: int, hi: int) -> None:
    hi = min(hi, len(buf))
    lo = min(lo, hi)
    for cr in (True, False):
        if not cr and b"\r" in buf:
            continue
        ends = brute_pairs(buf, lo, hi, cr)
        assert next_event_end(buf, lo, hi, cr) == (ends[0] if ends else -1)
        assert last_event_end(buf, lo, hi, cr) == (ends[-1] if ends else -1)


# -- bounds -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    stream=streams,
    limit=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_oversize_error_is_split_independent(stream: bytes, limit: int, cuts: list[int]) -> None:
    expected, sizes = reference_decode(stream)
    too_big = any(s > limit for s in sizes)
    for pieces in ([stream], split_at(stream, cuts)):
        if too_big:
            with pytest.raises(SSEError):
                decode_pieces(pieces, limit)
        else:
            assert decode_pieces(pieces, limit) == expected


def test_event_of_exactly_the_limit_passes() -> None:
    event = b"data: " + b"x" * 10 + b"\n\n"
    assert decode_pieces([event], len(event)) == [ev(b"x" * 10, event)]
    with pytest.raises(SSEError):
        decode_pieces([event], len(event) - 1)


def test_oversize_without_terminator_raises_early_and_stays_failed() -> None:
    dec = SSEDecoder(max_event_bytes=1000)
    dec.feed(b"data: " + b"x" * 900)
    with pytest.raises(SSEError):
        dec.feed(b"x" * 200)  # raised before any terminator arrives
    with pytest.raises(SSEError):
        dec.feed(b"\n\n")
    with pytest.raises(SSEError):
        dec.close()


def test_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_big_event_in_small_pieces_is_linear(eol: bytes) -> None:
    """A 16 MiB event fed in 1 KiB pieces: each piece is searched once, not the pending bytes."""
    size = 16 * 1024 * 1024
    line = b"data: " + b"a" * 1000 + eol
    body = line * (size // len(line))
    stream = body + eol + b"data: next" + eol + eol
    pieces = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    dec = SSEDecoder(max_event_bytes=32 * 1024 * 1024)
    t0 = time.perf_counter()
    events = []
    for p in pieces:
        events += dec.feed(p)
    elapsed = time.perf_counter() - t0
    assert [e.data for e in events][1:] == [b"next"]
    assert events[0].data == b"\n".join([b"a" * 1000] * (size // len(line)))
    assert events[0].raw == body + eol
    # rescanning the pending event on every feed would be ~16k x 8 MiB of searching
    assert elapsed < 20


# -- feed_data: the converters' cut, which has a fast path for `data: ` streams -------


def data_pieces(pieces: list[bytes], max_event_bytes: int = 16 * 1024 * 1024) -> list[bytes]:
    """What a converter reads: feed_data per piece, then the data of close()."""
    dec = SSEDecoder(max_event_bytes)
    out: list[bytes] = []
    for p in pieces:
        out += dec.feed_data(p)
    return out + [e.data for e in dec.close()]


# Mostly the shape the fast path takes (whole `data: ` events), with the tokens that
# must send a chunk to `feed` instead: a second line, a blank line too many, a CR,
# a field other than data, a BOM, `data:` without its space, an event cut short.
DATA_TOKENS = [
    b"data: {}\n\n",
    b"data: [DONE]\n\n",
    b'data: {"a":"data: x"}\n\n',
    b"data: \n\n",
    b"data: a\ndata: b\n\n",
    b"\n",
    b"\r\n",
    b"data:x\n\n",
    b"event: e\n",
    b": c\n\n",
    b"data: part",
    BOM,
]


def token_streams(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """Streams of up to 30 tokens, the first four (the fast cut's shape) favoured."""
    return st.lists(st.sampled_from(tokens[:4]) | st.sampled_from(tokens), max_size=30).map(
        b"".join
    )


data_streams = token_streams(DATA_TOKENS)


# Named events (Anthropic's shape: `event: NAME` then one `data: ` line) and the
# tokens that must send such a chunk to `feed`.
NAMED_TOKENS = [
    b'event: content_block_delta\ndata: {"t":"x"}\n\n',
    b"event: ping\ndata: {}\n\n",
    b"event: \ndata: \n\n",
    b'event: e\ndata: {"a":"event: x"}\n\n',
    b"event: e\ndata: a\ndata: b\n\n",
    b"event: e\nid: 1\ndata: y\n\n",
    b"event:e\ndata: x\n\n",
    b"event: e\ndata:x\n\n",
    b"event: e\n\n",
    b"data: plain\n\n",
    b"\n",
    b"event: cut\ndata: par",
]
named_streams = token_streams(NAMED_TOKENS)
# `data:`-only events with CRLF line ends (Google's alt=sse), and what must send
# such a chunk to `feed`.
CRLF_TOKENS = [
    b'data: {"a":1}\r\n\r\n',
    b"data: [DONE]\r\n\r\n",
    b"data: \r\n\r\n",
    b'data: {"t":"\\r\\n\\r\\ndata: "}\r\n\r\n',
    b"data: a\r\ndata: b\r\n\r\n",
    b"data: x\r\n\r\n\r\n",
    b"data: y\n\n",
    b"data: z\r\r",
    b"event: e\r\ndata: w\r\n\r\n",
    b"data: part\r\n",
    b"data: cr\rinside\r\n\r\n",
    b"\r\n",
]
crlf_streams = token_streams(CRLF_TOKENS)


@settings(max_examples=700, deadline=None)
@given(
    stream=data_streams | named_streams | crlf_streams,
    cuts=st.lists(st.integers(0, 600), max_size=8),
)
def test_feed_data_is_the_data_of_feed(stream: bytes, cuts: list[int]) -> None:
    """`data:`-only streams (LF or CRLF) and named-event streams, whole and cut
    anywhere."""
    expected = [e.data for e in decode_pieces(split_at(stream, cuts))]
    assert data_pieces([stream]) == [e.data for e in decode_pieces([stream])]
    assert data_pieces(split_at(stream, cuts)) == expected


class NoFeed(SSEDecoder):
    """A decoder whose general path fails: what it returns came from the fast cut."""

    def feed(self, data: bytes) -> list[SSEEvent]:
        raise AssertionError("the fast cut should have taken this chunk")


def test_feed_data_cuts_whole_named_events_without_feed() -> None:
    chunk = b"".join(b'event: e%d\ndata: {"i":%d}\n\n' % (i, i) for i in range(21))
    assert NoFeed().feed_data(chunk) == [b'{"i":%d}' % i for i in range(21)]
    assert NoFeed().feed_data(b"event: e\ndata: \n\n") == [b""]


def test_feed_data_cuts_whole_crlf_events_without_feed() -> None:
    chunk = b"".join(b'data: {"i":%d}\r\n\r\n' % i for i in range(21))
    dec = NoFeed()
    assert dec.feed_data(chunk) == [b'{"i":%d}' % i for i in range(21)]
    # the decoder now knows the stream has CRs: a CR-ended blank line waits for
    # its next byte in `feed`, as it would have without the cut
    assert SSEDecoder.feed(dec, b"data: x\r\n\r") == []
    assert [e.data for e in SSEDecoder.feed(dec, b"\ndata: y\r\n\r\n")] == [b"x", b"y"]


@settings(max_examples=100, deadline=None)
@given(stream=bom_streams, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_feed_data_matches_feed_on_any_stream(stream: bytes, cuts: list[int]) -> None:
    pieces = split_at(stream, cuts)
    assert data_pieces(pieces) == [e.data for e in decode_pieces(pieces)]


def test_feed_data_fast_shape_and_what_follows() -> None:
    dec = SSEDecoder()
    assert dec.feed_data(b'data: {"n":1}\n\ndata: [DONE]\n\n') == [b'{"n":1}', b"[DONE]"]
    # a BOM counts only as the stream's first bytes: after the fast cut it is data
    assert dec.feed_data(BOM + b"data: x\n\n") == []  # an unknown field name: no event
    assert dec.feed_data(b"data: y\n") == []  # pending, then completed by the next feed
    assert dec.feed_data(b"\ndata: z\n\n") == [b"y", b"z"]
    assert SSEDecoder().feed_data(BOM + b"data: x\n\n") == [b"x"]  # at the start: dropped


def test_feed_data_keeps_the_event_limit() -> None:
    # the limit counts an event's bytes with its blank line, as feed does
    assert SSEDecoder(18).feed_data(b"data: 0123456789\n\n") == [b"0123456789"]
    with pytest.raises(SSEError):
        SSEDecoder(17).feed_data(b"data: 0123456789\n\n")
    # events under the limit in a chunk over it: all of them
    assert SSEDecoder(10).feed_data(b"data: a\n\n" * 5) == [b"a"] * 5


def test_feed_data_cuts_a_whole_data_chunk_without_feed() -> None:
    chunk = b"".join(b'data: {"i":%d}\n\n' % i for i in range(21)) + b"data: [DONE]\n\n"
    assert NoFeed().feed_data(chunk) == [b'{"i":%d}' % i for i in range(21)] + [b"[DONE]"]


@pytest.mark.parametrize(
    "chunk",
    [
        b"data: \n\n",
        b"data: a\n\ndata: \n\n",
        b"data: a\n\n\n",  # a blank line too many at the end
        b"data: x\n\n\ndata: y\n\n",  # and between two events
        b"data: a\ndata: b\n\ndata: c\n\n",  # a two-line event
        b'data: {"t":"\\n\\ndata: "}\n\n',  # the separator's text escaped in a value
        b"data: a\n\n: comment\n\ndata: b\n\n",
        b"data: a\n\nevent: e\ndata: b\n\n",
        b"data: a\n\ndata:b\n\n",  # no space after the colon
        b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n",
        b"event: a\ndata: 1\n\n\nevent: b\ndata: 2\n\n",
        b"event: a\ndata: 1\ndata: 2\n\n",
        b"event: a\ndata: 1\n\ndata: 2\n\n",  # a named event, then a plain one
        b"event: a\n\n",  # a name and no data
        b"event: a\ndata: 1\n\n: c\n\n",
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\n\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\ndata: b\r\n\r\n",
        b"data: a\rb\r\n\r\n",
        b"data: a\nb\r\n\r\n",
        b"data: a\r\n\r\ndata: b\n\n\r\n\r\n",
    ],
)
def test_feed_data_fast_cut_edges_match_feed(chunk: bytes) -> None:
    assert SSEDecoder().feed_data(chunk) == [e.data for e in SSEDecoder().feed(chunk)]
