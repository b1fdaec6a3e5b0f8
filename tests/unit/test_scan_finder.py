"""The one JSON-object finder (`fastgate.scan.jsonfind`) and the Anthropic and Gemini
usage scanners built on it, fed whole, byte by byte and split at random points.

Streams are generated from their parts, so the expected objects and usage are
known without asking the code under test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgate.scan import AnthropicUsage, GeminiUsage, ObjectFinder
from fastgate.vocab.usage import Usage, merge_anthropic_usage, usage_from_gemini


class Collect(ObjectFinder):
    __slots__ = ("found",)

    def __init__(self, key: bytes = b"usage", cap: int = 64 * 1024) -> None:
        super().__init__(key, cap)
        self.found: list[dict[str, Any]] = []

    def on_object(self, obj: dict[str, Any]) -> None:
        self.found.append(obj)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


def find_all(pieces: list[bytes], key: bytes = b"usage", cap: int = 64 * 1024) -> list[dict]:
    c = Collect(key, cap)
    for p in pieces:
        c.find(p)
    c.finish()
    return c.found


def dump(obj: object, style: str) -> bytes:
    if style == "compact":
        return orjson.dumps(obj)
    if style == "spaced":
        return json.dumps(obj).encode()
    return json.dumps(obj, indent=2).encode()


# -- the finder --------------------------------------------------------------------------

leaf = st.one_of(
    st.integers(-5, 10**6),
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(['"usage": {', "}{", "\\", '{"usage":1}', '"usage"']),
)
json_docs = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "usage", "b"]), inner, max_size=3),
    ),
    max_leaves=15,
)


def objects_in_order(doc: object) -> list[dict]:
    """The "usage" object values in serialization order, not looking inside one."""
    out: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "usage" and isinstance(v, dict):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return out


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["x", "usage"]), json_docs, max_size=3),
    style=st.sampled_from(["compact", "spaced", "pretty"]),
    cuts=st.lists(st.integers(0, 3000), max_size=15),
)
def test_finder_any_document_any_split(doc: dict, style: str, cuts: list[int]) -> None:
    data = dump(doc, style)
    expected = objects_in_order(doc)
    assert find_all([data]) == expected
    assert find_all(split_at(data, cuts)) == expected


@settings(max_examples=60, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["x", "usage"]), json_docs, max_size=3))
def test_finder_byte_by_byte(doc: dict) -> None:
    data = orjson.dumps(doc)
    assert find_all([data[i : i + 1] for i in range(len(data))]) == objects_in_order(doc)


def test_finder_skips_null_values_escaped_keys_and_string_values() -> None:
    data = (
        b'{"usage":null,"a":"\\"usage\\": {\\"x\\":1}","x\\"usage":{"no":1},'
        b'"type":"usage","usage" : {"yes": "}{"}}'
    )
    for step in (1, 2, 3, 7, len(data)):
        assert find_all([data[i : i + step] for i in range(0, len(data), step)]) == [{"yes": "}{"}]


def test_finder_other_keys() -> None:
    data = b'data: {"usageMetadata": {"promptTokenCount": 3}, "usage": {"a": 1}}\r\n\r\n'
    assert find_all([data], b"usageMetadata") == [{"promptTokenCount": 3}]


def test_finder_drops_an_object_over_the_cap_and_goes_on() -> None:
    big = b'{"usage":{"pad":"' + b"x" * 5000 + b'"},"usage":{"n":1}}'
    for step in (100, 999, len(big)):
        pieces = [big[i : i + step] for i in range(0, len(big), step)]
        assert find_all(pieces, cap=1024) == [{"n": 1}]


def test_finder_object_spanning_many_chunks_is_linear() -> None:
    """No rescans: an object fed in small pieces costs about what it costs whole."""

    def run(n: int) -> float:
        data = b'{"usage":{"pad":"' + b"x" * n + b'","n":1}}'
        pieces = [data[i : i + 64] for i in range(0, len(data), 64)]
        t = time.perf_counter()
        assert find_all(pieces, cap=10**7) == [{"pad": "x" * n, "n": 1}]
        return time.perf_counter() - t

    run(1000)
    small = min(run(20_000) for _ in range(3))
    big = min(run(320_000) for _ in range(3))
    assert big < small * 16 * 4  # 16x the bytes: well under quadratic (256x)


# -- Anthropic -----------------------------------------------------------------------------


def sse(event: str, obj: dict, style: str) -> bytes:
    return (
        b"event: " + event.encode() + b"\ndata: " + dump(obj, style).replace(b"\n", b"") + b"\n\n"
    )


counts = st.one_of(st.integers(0, 10**6), st.none())


@st.composite
def anthropic_streams(draw):
    style = draw(st.sampled_from(["compact", "spaced"]))
    start_usage = {
        "input_tokens": draw(counts),
        "cache_read_input_tokens": draw(counts),
        "cache_creation_input_tokens": draw(counts),
        "output_tokens": draw(counts),
    }
    delta_usage = {"output_tokens": draw(counts)}
    if draw(st.booleans()):
        delta_usage["input_tokens"] = draw(counts)
    texts = draw(st.lists(st.sampled_from(['"usage": {}', "usage", "}{", "hi", "\\"]), max_size=4))
    parts = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "msg_1", "role": "assistant", "usage": start_usage},
            },
            style,
        ),
        sse("content_block_start", {"type": "content_block_start", "index": 0}, style),
    ]
    for t in texts:
        parts.append(
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": t}},
                style,
            )
        )
    parts.append(
        sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage},
            style,
        )
    )
    parts.append(sse("message_stop", {"type": "message_stop"}, style))
    merged: dict = {}
    merge_anthropic_usage(merged, start_usage)
    expected = merge_anthropic_usage(merged, delta_usage)
    return b"".join(parts), expected


def run_scanner(scanner: Any, pieces: list[bytes]) -> Usage:
    out = []
    for p in pieces:
        out.append(scanner.feed(p))
    out.append(scanner.close())
    assert b"".join(out) == b"".join(pieces)  # passthrough: bytes untouched
    return scanner.usage


@settings(max_examples=200, deadline=None)
@given(gen=anthropic_streams(), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_anthropic_stream_any_split(gen, cuts) -> None:
    data, expected = gen
    assert run_scanner(AnthropicUsage(), [data]) == expected
    assert run_scanner(AnthropicUsage(), split_at(data, cuts)) == expected


@settings(max_examples=30, deadline=None)
@given(gen=anthropic_streams())
def test_anthropic_stream_byte_by_byte(gen) -> None:
    data, expected = gen
    assert run_scanner(AnthropicUsage(), [data[i : i + 1] for i in range(len(data))]) == expected


def test_anthropic_body() -> None:
    body = orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "content": [{"type": "text", "text": '"usage": {"input_tokens": 999}'}],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 3},
        }
    )
    assert run_scanner(AnthropicUsage(), [body]) == Usage(15, 3, 5, 0, True)


# -- Gemini ----------------------------------------------------------------------------------


@st.composite
def gemini_streams(draw):
    sse_mode = draw(st.booleans())
    n = draw(st.integers(1, 4))
    chunks = []
    last = None
    for i in range(n):
        meta = {
            "promptTokenCount": draw(st.integers(0, 10**5)),
            "candidatesTokenCount": i + draw(st.integers(0, 10**5)),
        }
        if draw(st.booleans()):
            meta["thoughtsTokenCount"] = draw(st.integers(0, 100))
        text = draw(st.sampled_from(["hi", '"usageMetadata": {', "}"]))
        chunks.append(
            {
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}}],
                "usageMetadata": meta,
            }
        )
        last = meta
    if sse_mode:
        data = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)
    else:
        data = json.dumps(chunks, indent=2).encode()  # streamGenerateContent without alt=sse
    return data, usage_from_gemini(last)


@settings(max_examples=200, deadline=None)
@given(gen=gemini_streams(), cuts=st.lists(st.integers(0, 3000), max_size=20))
def test_gemini_stream_any_split(gen, cuts) -> None:
    data, expected = gen
    assert run_scanner(GeminiUsage(), [data]) == expected
    assert run_scanner(GeminiUsage(), split_at(data, cuts)) == expected


def test_no_usage_is_not_found() -> None:
    assert run_scanner(GeminiUsage(), [b'{"candidates": []}']) == Usage()
    assert run_scanner(AnthropicUsage(), [b'{"usage": null}']) == Usage()


# -- last_object: the finder run backwards over a whole buffer (fast path, non-stream)


def test_last_object_reads_the_usage_at_the_tail() -> None:
    from fastgate.scan.jsonfind import last_object

    body = (
        b'{"id":"x","choices":[{"message":{"content":"say \\"usage\\": {\\"a\\":1}"}}],'
        b'"usage": {"prompt_tokens":3,"completion_tokens":4,'
        b'"prompt_tokens_details":{"cached_tokens":1}},"system_fingerprint":"fp"}'
    )
    assert last_object(body, b'"usage"') == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_last_object_ignores_keys_inside_strings_and_non_objects() -> None:
    from fastgate.scan.jsonfind import last_object

    assert last_object(b'{"a":"x \\"usage\\": {\\"p\\":1}"}', b'"usage"') is None
    assert last_object(b'{"usage":null}', b'"usage"') is None
    assert last_object(b'{"usage":"text {"}', b'"usage"') is None
    assert last_object(b'{"choices":[]}', b'"usage"') is None
    assert last_object(b'{"usage":{"p":1', b'"usage"') is None  # cut short


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 3, "completion_tokens": 4},
        {"a": {"b": {"c": 1}}, "d": [{"e": 2}, {}], "f": {}},
        {"note": "a } in a string", "n": 1},  # fools the count: short, parse fails
        {"note": "a { in a string", "n": 1},  # fools the count: long, trailing bytes
        {"note": "{{}}}{", "x": {"y": "}"}},
        {"big": 2**70, "neg": -1, "f": 0.5},  # out of orjson's range: the C scanner
    ],
)
@pytest.mark.parametrize("after", [b"}", b',"system_fingerprint":"fp_{x}"}', b',"z":{"k":1}}'])
def test_last_object_ends_where_the_value_ends(usage: dict, after: bytes) -> None:
    """The brace count finds the end and orjson proves it; when a brace inside a
    string fools the count, the C scanner gives the same answer."""
    from fastgate.scan.jsonfind import last_object

    body = b'{"id":"x","usage":' + json.dumps(usage).encode() + after
    assert last_object(body, b'"usage"') == usage


def test_last_object_reads_by_brace_count_without_the_c_scanner(monkeypatch) -> None:
    """The common case never reaches the fallback: with the C scanner gone, a
    nested usage object is still read; one whose string holds a brace needs it."""
    from fastgate.scan import jsonfind

    def gone(*_: Any) -> Any:
        raise AssertionError("the C scanner was used")

    monkeypatch.setattr(jsonfind, "_scan_value", gone)
    usage = {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}, "d": {"e": {}}}
    body = b'{"id":"x","usage":' + json.dumps(usage).encode() + b',"system_fingerprint":"fp"}'
    assert jsonfind.last_object(body, b'"usage"') == usage
    with pytest.raises(AssertionError, match="C scanner"):
        jsonfind.last_object(b'{"usage":{"note":"}","n":1}}', b'"usage"')
