"""OpenAI usage scanners (`fastgate.scan.openai`): SSE streams (observe / strip), JSON bodies.

Streams and bodies are generated from their parts (chunk dicts, usage numbers),
so the expected usage and, in strip mode, the expected forwarded bytes (the same
parts minus the usage-only event) are known without asking the code under test.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgate.scan.openai import SMALL_BODY, OpenAIBodyUsage, OpenAIStreamUsage, body_usage
from fastgate.vocab.usage import Usage

CREATED = 1_700_000_000

# -- stream generators -------------------------------------------------------------------

content_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            '"usage": {"x"',
            '"usage":{"prompt_tokens":999}',
            "usage",
            "data: x\n\n",
            "\r\n\r\n",
            '"choices":[]',
            "\\",
            "}{",
            '{"usage": null}',
        ]
    ),
)
styles = st.sampled_from(["compact", "spaced", "loose", "pretty"])
eols = st.sampled_from([b"\n", b"\r\n", b"\r"])
counts = st.integers(0, 10**6)


def dump(obj: object, style: str) -> bytes:
    if style == "compact":
        return orjson.dumps(obj)
    if style == "spaced":
        return json.dumps(obj).encode()
    if style == "loose":
        return json.dumps(obj, separators=(" , ", " : ")).encode()
    return json.dumps(obj, indent=1).encode()  # several data: lines


def sse(payload: bytes, eol: bytes, event: str | None = None) -> bytes:
    lines = [b"event: " + event.encode()] if event else []
    lines += [b"data: " + line for line in payload.split(b"\n")]
    return eol.join(lines) + eol + eol


def usage_obj(prompt: int, completion: int, cached: int, details: bool) -> dict:
    obj: dict = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if details:
        obj["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        obj["completion_tokens_details"] = {"reasoning_tokens": 0}
    else:
        obj["prompt_tokens_details"] = None
    return obj


@st.composite
def chat_streams(draw):
    """(parts, expected usage); each part is (bytes, is_the_usage_only_event)."""
    kind = draw(
        st.sampled_from(["plain", "include_usage", "vllm_last", "vllm_continuous", "completions"])
    )
    style = draw(styles)
    eol = draw(eols)
    texts = draw(st.lists(content_text, min_size=1, max_size=6))
    prompt, completion, cached = draw(counts), draw(counts), draw(counts)
    details = draw(st.booleans())
    comments = draw(st.booleans())
    parts: list[tuple[bytes, bool]] = []
    if comments:
        parts.append((b": OPENROUTER PROCESSING" + eol + eol, False))
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        finish = "stop" if last else None
        if kind == "completions":
            chunk: dict = {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": CREATED,
                "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
        else:
            delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": "gpt-4o-mini",
                "system_fingerprint": "fp_1",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        if kind in ("include_usage", "completions"):
            chunk["usage"] = None
        elif kind == "vllm_last" and last:
            chunk["usage"] = usage_obj(prompt, completion, cached, details)
        elif kind == "vllm_continuous":
            chunk["usage"] = usage_obj(prompt, i + 1, 0, False)
        parts.append((sse(dump(chunk, style), eol), False))
        if comments and i % 2:
            parts.append((b": keepalive" + eol + eol, False))
    if draw(st.booleans()):
        parts.append((eol, False))  # a stray blank line between events
    if kind in ("include_usage", "vllm_continuous", "completions"):
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": usage_obj(prompt, completion, cached, details),
        }
        parts.append((sse(dump(chunk, style), eol), True))
    parts.append((b"data: [DONE]" + eol + eol, False))
    if kind == "plain":
        expected = Usage()
    else:
        expected = Usage(prompt, completion, cached if details else 0, 0, True)
    return parts, expected


@st.composite
def responses_streams(draw):
    """A Responses API event stream; usage only in response.completed."""
    style = draw(styles)
    eol = draw(eols)
    texts = draw(st.lists(content_text, min_size=1, max_size=5))
    inp, out, cached = draw(counts), draw(counts), draw(counts)
    base = {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "status": "in_progress",
        "model": "gpt-4o",
        "output": [],
        # a tool whose JSON schema has a property named "usage": an object value
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"usage": {"type": "string"}}},
            }
        ],
        "usage": None,
        "metadata": {},
    }
    seq = 0
    parts: list[tuple[bytes, bool]] = []

    def add(etype: str, payload: dict) -> None:
        nonlocal seq
        payload = {"type": etype, "sequence_number": seq, **payload}
        seq += 1
        parts.append((sse(dump(payload, style), eol, etype), False))

    add("response.created", {"response": base})
    add("response.in_progress", {"response": base})
    for text in texts:
        add(
            "response.output_text.delta",
            {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text},
        )
    done = dict(base)
    done["status"] = "completed"
    done["output"] = [
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "".join(texts), "annotations": []}],
        }
    ]
    done["usage"] = {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }
    add("response.completed", {"response": done})
    return parts, Usage(inp, out, cached, 0, True)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    pieces, prev = [], 0
    for c in points:
        pieces.append(data[prev:c])
        prev = c
    pieces.append(data[prev:])
    return pieces


def run_stream(pieces: list[bytes], strip: bool, **kw) -> tuple[bytes, OpenAIStreamUsage]:
    su = OpenAIStreamUsage(strip_usage_chunk=strip, **kw)
    out = []
    for p in pieces:
        r = su.feed(p)
        if not strip:
            assert r is p  # observe mode: zero copy, the same object
        out.append(r)
    out.append(su.close())
    return b"".join(out), su


cut_lists = st.lists(st.integers(0, 5000), max_size=25)


@settings(max_examples=250, deadline=None)
@given(gen=chat_streams(), cuts=cut_lists)
def test_chat_stream_observe_any_split(gen, cuts) -> None:
    parts, expected = gen
    stream = b"".join(p for p, _ in parts)
    out, su = run_stream(split_at(stream, cuts), strip=False)
    assert out == stream
    assert su.usage == expected


@settings(max_examples=250, deadline=None)
@given(gen=chat_streams(), cuts=cut_lists)
def test_chat_stream_strip_any_split(gen, cuts) -> None:
    parts, expected = gen
    stream = b"".join(p for p, _ in parts)
    wanted = b"".join(p for p, is_usage in parts if not is_usage)
    pieces = split_at(stream, cuts)
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    sent = b""
    fed = 0
    for piece in pieces:
        sent += su.feed(piece)
        fed += len(piece)
        # in order, never ahead of what is known ...
        assert wanted.startswith(sent)
        # ... and never holding back a complete event that is not the usage chunk
        # (one ending in a CR that might still grow into CRLF may wait)
        ready, end = 0, 0
        for raw, is_usage in parts:
            end += len(raw)
            if end > fed or (end == fed and raw.endswith(b"\r")):
                break
            if not is_usage:
                ready += len(raw)
        assert len(sent) >= ready
    sent += su.close()
    assert sent == wanted
    assert su.usage == expected


@settings(max_examples=150, deadline=None)
@given(gen=responses_streams(), cuts=cut_lists, strip=st.booleans())
def test_responses_stream_any_split(gen, cuts, strip) -> None:
    parts, expected = gen
    stream = b"".join(p for p, _ in parts)
    out, su = run_stream(split_at(stream, cuts), strip=strip)
    assert out == stream  # nothing to strip in a Responses stream
    assert su.usage == expected


@settings(max_examples=40, deadline=None)
@given(gen=chat_streams(), strip=st.booleans())
def test_chat_stream_byte_by_byte(gen, strip) -> None:
    parts, expected = gen
    stream = b"".join(p for p, _ in parts)
    wanted = b"".join(p for p, u in parts if not (u and strip))
    out, su = run_stream([stream[i : i + 1] for i in range(len(stream))], strip=strip)
    assert out == wanted
    assert su.usage == expected


@settings(max_examples=25, deadline=None)
@given(gen=responses_streams())
def test_responses_stream_byte_by_byte(gen) -> None:
    parts, expected = gen
    stream = b"".join(p for p, _ in parts)
    out, su = run_stream([stream[i : i + 1] for i in range(len(stream))], strip=True)
    assert out == stream
    assert su.usage == expected


# -- stream: explicit cases ------------------------------------------------------------

USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
EXPECTED = Usage(9, 4, 0, 0, True)


def chunk_event(content: str | None, usage: object = None, eol: bytes = b"\n") -> bytes:
    choices = (
        []
        if content is None
        else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    )
    return sse(
        orjson.dumps(
            {"id": "c", "object": "chat.completion.chunk", "choices": choices, "usage": usage}
        ),
        eol,
    )


def test_strip_forwards_each_complete_event_at_once() -> None:
    events = [chunk_event("Hel"), chunk_event("lo"), chunk_event(None, USAGE), b"data: [DONE]\n\n"]
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    assert su.feed(events[0]) is events[0]  # whole events: zero copy even when stripping
    assert su.feed(events[1]) is events[1]
    assert su.feed(events[2]) == b""
    assert su.feed(events[3]) == events[3]
    assert su.close() == b""
    assert su.usage == EXPECTED


def test_strip_forwards_a_partial_content_event_without_waiting() -> None:
    event = chunk_event("first token")
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    head, tail = event[:-5], event[-5:]
    assert su.feed(head) == head  # non-empty choices seen: cannot be the usage chunk
    assert su.feed(tail) == tail
    assert su.close() == b""


def test_strip_forwards_stray_blank_lines_at_once() -> None:
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    first = chunk_event("a", eol=b"\r\n")
    assert su.feed(first) is first
    assert su.feed(b"\r\n") == b"\r\n"  # a blank line belongs to no event
    assert su.feed(b"\n\ndata: {") == b"\n\n"  # the new event may be the usage chunk
    assert su.feed(b'"choices":[],"usage":' + orjson.dumps(USAGE) + b"}\n\n") == b""
    assert su.close() == b""
    assert su.usage == EXPECTED


def test_strip_holds_only_a_partial_event_that_may_be_the_usage_chunk() -> None:
    usage_event = chunk_event(None, USAGE)
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    assert su.feed(usage_event[:-1]) == b""
    assert su.feed(usage_event[-1:] + b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert su.usage == EXPECTED


def test_strip_is_not_fooled_by_lookalike_choices_keys() -> None:
    """Partial usage-only chunks whose bytes show `"choices":[{` that is not the top-level key."""
    cases = [
        b"data: " + orjson.dumps({'id"choices': [1], "choices": [], "usage": USAGE}),
        b"data: " + orjson.dumps({"x": {"choices": [{}]}, "choices": [], "usage": USAGE}),
        # "choices":[{ in a comment line inside the event, CR and LF line ends
        b'data: {"id":"c",\r: x,"choices":[{\rdata: "choices":[],"usage":'
        + orjson.dumps(USAGE)
        + b"}",
        b'data: {"id":"c",\n: x,"choices":[{\ndata: "choices":[],"usage":'
        + orjson.dumps(USAGE)
        + b"}",
    ]
    for first in cases:
        event = first + (b"\r\r" if b"\r" in first else b"\n\n")
        for cut in range(1, len(event)):
            out, su = run_stream([event[:cut], event[cut:]], strip=True)
            assert out == b""
            assert su.usage == EXPECTED


def test_usage_with_spaces_around_the_colon() -> None:
    event = b'data: {"id": "c", "choices" : [], "usage" : {"prompt_tokens" : 9, "completion_tokens" : 4}}\n\n'
    for strip, wanted in ((False, event), (True, b"")):
        out, su = run_stream([event], strip=strip)
        assert out == wanted
        assert su.usage == Usage(9, 4, 0, 0, True)


def test_usage_null_chunks_are_kept_and_not_counted() -> None:
    stream = chunk_event("a") + chunk_event("b") + b"data: [DONE]\n\n"
    for strip in (False, True):
        out, su = run_stream([stream], strip=strip)
        assert out == stream
        assert su.usage == Usage()


def test_usage_text_inside_content_is_not_usage() -> None:
    text = '"usage": {"prompt_tokens": 5, "completion_tokens": 5}'
    stream = chunk_event(text) + b"data: [DONE]\n\n"
    assert b'\\"usage\\"' in stream  # escaped inside the JSON string
    for strip in (False, True):
        out, su = run_stream([stream], strip=strip)
        assert out == stream
        assert su.usage == Usage()


def test_vllm_usage_on_last_content_chunk_is_taken_but_not_stripped() -> None:
    last = chunk_event("end", USAGE)
    stream = chunk_event("a") + last + b"data: [DONE]\n\n"
    out, su = run_stream([stream], strip=True)
    assert out == stream
    assert su.usage == EXPECTED


def test_last_usage_wins() -> None:
    first = {
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    stream = chunk_event("a", first) + chunk_event("b", USAGE)
    _, su = run_stream([stream], strip=False)
    assert su.usage == EXPECTED


def test_malformed_events_are_ignored() -> None:
    good = chunk_event(None, USAGE)
    broken = [
        b'data: {"choices":[],"usage":{"prompt_tokens":\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":5}\n\n',
        b'data: ["usage", {"usage":{"prompt_tokens":5}}]\n\n',
        b'data: "usage":{"prompt_tokens":5}\n\n',
        b'event: x\ndata: {"usage":{"prompt_tokens":5},,}\n\n',
        b'data: {"usage":{"prompt_tokens":5}}\xff\n\n',
    ]
    for bad in broken:
        for strip in (False, True):
            # malformed before any usage: nothing found, bytes untouched
            out, su = run_stream([bad + b"data: [DONE]\n\n"], strip=strip)
            assert out == bad + b"data: [DONE]\n\n"
            assert su.usage == Usage()
            # malformed after the usage: the usage stays as it was
            out, su = run_stream([good + bad], strip=strip)
            assert out == (bad if strip else good + bad)
            assert su.usage == EXPECTED


def test_usage_chunk_without_final_blank_line_is_settled_at_close() -> None:
    for eol in (b"\n", b"\r\n", b"\r"):
        head = chunk_event("a", eol=eol)
        usage_event = chunk_event(None, USAGE, eol=eol)
        for cut in (0, len(eol), 2 * len(eol)):
            truncated = usage_event[: len(usage_event) - cut]
            for strip in (False, True):
                out, su = run_stream([head, truncated], strip=strip)
                assert out == (head if strip else head + truncated)
                assert su.usage == EXPECTED


def test_crlf_stream_with_cr_split_from_lf() -> None:
    usage_event = chunk_event(None, USAGE, eol=b"\r\n")
    done = b"data: [DONE]\r\n\r\n"
    stream = chunk_event("x", eol=b"\r\n") + usage_event + done
    # split between every CR and its LF
    pieces = stream.replace(b"\r\n", b"\r\x00\n").split(b"\x00")
    out, su = run_stream(pieces, strip=True)
    assert out == chunk_event("x", eol=b"\r\n") + done
    assert su.usage == EXPECTED


def test_oversized_events_pass_through_unparsed() -> None:
    big = chunk_event("x" * 5000)
    usage_event = chunk_event(None, USAGE)
    big_usage = chunk_event(None, {**USAGE, "padding": "p" * 5000})
    stream = big + usage_event + b"data: [DONE]\n\n"
    for step in (1, 7, 100, 10_000):
        pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
        for strip in (False, True):
            out, su = run_stream(pieces, strip=strip, max_event_bytes=1024)
            assert out == (big + b"data: [DONE]\n\n" if strip else stream)
            assert su.usage == EXPECTED
            # a usage event over the bound is forwarded and not counted
            big_pieces = [big_usage[i : i + step] for i in range(0, len(big_usage), step)]
            out, su = run_stream(big_pieces, strip=strip, max_event_bytes=1024)
            assert out == big_usage
            assert su.usage == Usage()


def test_empty_feed() -> None:
    su = OpenAIStreamUsage(strip_usage_chunk=True)
    assert su.feed(b"") == b""
    assert su.close() == b""


@pytest.mark.parametrize("strip", [False, True])
def test_big_event_in_small_pieces_is_linear(strip: bool) -> None:
    """A 16 MiB content event fed in 1 KiB pieces is searched once, not per feed."""
    import time

    big = chunk_event("a" * (16 * 1024 * 1024))
    stream = big + chunk_event(None, USAGE) + b"data: [DONE]\n\n"
    pieces = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    t0 = time.perf_counter()
    out, su = run_stream(pieces, strip=strip, max_event_bytes=32 * 1024 * 1024)
    assert time.perf_counter() - t0 < 20
    assert out == (big + b"data: [DONE]\n\n" if strip else stream)
    assert su.usage == EXPECTED


# -- body -------------------------------------------------------------------------------


def chat_body(text: str, usage: object, tool_args: str = "{}") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": tool_args},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "system_fingerprint": "fp_1",
    }


def embeddings_body(n: int, prompt: int) -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 1e-3]} for i in range(n)
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def responses_body(text: str, inp: int, out: int, cached: int) -> dict:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": "gpt-4o",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"usage": {"type": "string"}}},
            }
        ],
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        },
        "user": None,
        "metadata": {},
    }


def run_body(pieces: list[bytes]) -> Usage:
    bu = OpenAIBodyUsage()
    for p in pieces:
        bu.feed(p)
    return bu.close()


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["chat", "chat_no_usage", "chat_null", "embeddings", "responses"]))
    style = draw(st.sampled_from(["compact", "spaced", "loose", "pretty"]))
    text = draw(content_text)
    p, c, k = draw(counts), draw(counts), draw(counts)
    if kind == "chat":
        details = draw(st.booleans())
        obj = chat_body(text, usage_obj(p, c, k, details), tool_args=draw(content_text))
        expected = Usage(p, c, k if details else 0, 0, True)
    elif kind == "chat_no_usage":
        obj = chat_body(text, None)
        del obj["usage"]
        expected = Usage()
    elif kind == "chat_null":
        obj = chat_body(text, None)
        expected = Usage()
    elif kind == "embeddings":
        obj = embeddings_body(draw(st.integers(1, 3)), p)
        expected = Usage(p, 0, 0, 0, True)
    else:
        obj = responses_body(text, p, c, k)
        expected = Usage(p, c, k, 0, True)
    body = dump(obj, style)
    if style == "pretty":
        body = json.dumps(obj, indent=2).encode()
    return body, expected


@settings(max_examples=300, deadline=None)
@given(gen=bodies(), cuts=st.lists(st.integers(0, 3000), max_size=20))
def test_body_any_split(gen, cuts) -> None:
    body, expected = gen
    assert run_body(split_at(body, cuts)) == expected


@settings(max_examples=40, deadline=None)
@given(gen=bodies())
def test_body_byte_by_byte(gen) -> None:
    body, expected = gen
    assert run_body([body[i : i + 1] for i in range(len(body))]) == expected


def test_body_usage_only_in_content_text() -> None:
    text = 'Here is JSON: {"usage": {"prompt_tokens": 3, "completion_tokens": 4}} "usage":{'
    body = orjson.dumps(
        chat_body(text, None, tool_args=json.dumps({"usage": {"prompt_tokens": 1}}))
    )
    for step in (1, 3, len(body)):
        assert run_body([body[i : i + step] for i in range(0, len(body), step)]) == Usage()


def test_body_usage_with_braces_inside_strings() -> None:
    usage = {
        "prompt_tokens": 7,
        "note": 'a } and a { and \\" and "}',
        "odd": 'x"}',  # one escaped quote, then a brace
        "backslash": "end\\",  # an escaped backslash right before the closing quote
        "brace": "{",
        "completion_tokens": 2,
    }
    body = orjson.dumps(chat_body("x", usage))
    for step in (1, 2, 5, 64, len(body)):
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        assert run_body(pieces) == Usage(7, 2, 0, 0, True)


def test_body_last_usage_wins_and_schema_objects_are_ignored() -> None:
    body = (
        b'{"a":{"usage":{"prompt_tokens":1,"completion_tokens":1}},'
        b'"schema":{"usage":{"type":"object"}},"usage":{"input_tokens":5,"output_tokens":6}}'
    )
    assert run_body([body]) == Usage(5, 6, 0, 0, True)
    body2 = b'{"usage":{"prompt_tokens":5,"completion_tokens":6},"x":{"usage":{"type":"string"}}}'
    assert run_body([body2]) == Usage(5, 6, 0, 0, True)


def test_body_key_ending_in_escaped_quote_usage_is_not_usage() -> None:
    body = orjson.dumps({'x"usage': {"prompt_tokens": 1, "completion_tokens": 1}, "usage": None})
    assert b'"usage":{' in body  # the bytes are there, but the key is `x"usage`
    for step in (1, 5, len(body)):
        assert run_body([body[i : i + step] for i in range(0, len(body), step)]) == Usage()


def test_body_malformed_usage_is_ignored() -> None:
    for body in (
        b'{"usage":{"prompt_tokens":5,,}}',
        b'{"usage":{"prompt_tokens":5',
        b'{"usage":{"prompt_tokens":"5}"',
        b'{"usage": nul',
        b'{"usage"',
    ):
        for step in (1, 4, len(body)):
            assert run_body([body[i : i + step] for i in range(0, len(body), step)]) == Usage()


def test_body_giant_usage_like_object_is_dropped_and_scanning_goes_on() -> None:
    giant = {"usage": {"prompt_tokens": 1, "pad": "x" * 70_000}}
    body = orjson.dumps({"a": giant, "usage": USAGE})
    for step in (1000, 64 * 1024, len(body)):
        assert run_body([body[i : i + step] for i in range(0, len(body), step)]) == EXPECTED


def test_body_200k_content() -> None:
    body = orjson.dumps(chat_body("w " * 100_000, USAGE))
    assert len(body) > 200_000
    assert run_body([body[i : i + 65536] for i in range(0, len(body), 65536)]) == EXPECTED


# -- stream: token soup against an independent oracle -------------------------------


def oracle_events(stream: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, data) of every event with data lines, read line by line per the spec."""
    out = []
    i, n = 0, len(stream)
    ev_start = None
    data: list[bytes] = []
    while i < n:
        j = i
        while j < n and stream[j] not in b"\r\n":
            j += 1
        nxt = j + 2 if stream[j : j + 2] == b"\r\n" else min(j + 1, n)
        line = stream[i:j]
        if not line and j < n:
            if ev_start is not None and data:
                out.append((ev_start, nxt, b"\n".join(data)))
            ev_start, data = None, []
        else:
            if ev_start is None:
                ev_start = i
            field, _colon, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
        i = nxt
    if ev_start is not None and data:
        out.append((ev_start, n, b"\n".join(data)))
    return out


SOUP = [
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}',
    b'data: {"choices": [], "usage" : {"prompt_tokens": 4}}',
    b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":5}}',
    b'data: {"choices":[{"delta":{"content":"\\"usage\\":{"}}],"usage":null}',
    b'data: {"type":"response.completed","response":{"usage":{"input_tokens":6}}}',
    b'data: {"response":{"usage":null},"usage":null}',
    b'data: {"x":{"choices":[{}]},"choices":[],"usage":{"prompt_tokens":8}}',
    b'data: {"id\\"choices":[1],"choices":[],"usage":{"prompt_tokens":9}}',
    b'data: {"x\\"usage":{"prompt_tokens":2},"usage":null}',
    b'data: {"choices":[],"usage":{"prompt_tokens":',
    b"data: 7}}",
    b"data: [DONE]",
    b"event: response.completed",
    b": keepalive",
    b"data",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
]


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(st.sampled_from(SOUP), max_size=25).map(b"".join),
    cuts=st.lists(st.integers(0, 1500), max_size=12),
    strip=st.booleans(),
)
def test_token_soup_matches_the_oracle(stream: bytes, cuts: list[int], strip: bool) -> None:
    """Usage: the last usage object of the stream, whatever the split. Output: the
    stream with some usage-only events cut (strip mode) -- always the stream's last
    usage event when it is usage-only; which earlier ones depends on the reads (a
    read's usage is read from its tail), so the oracle accepts any of them."""
    expected = Usage()
    events = []  # (start, end, usage-only) of the events with a usage object
    for start, end, data in oracle_events(stream):
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        usage = obj.get("usage")
        if not isinstance(usage, dict) and isinstance(obj.get("response"), dict):
            usage = obj["response"].get("usage")
            obj = {}
        if not isinstance(usage, dict):
            continue
        expected = Usage(
            usage.get("prompt_tokens") or usage.get("input_tokens") or 0,
            usage.get("completion_tokens") or 0,
            0,
            0,
            True,
        )
        events.append((start, end, strip and obj.get("choices") == []))
    out, su = run_stream(split_at(stream, cuts), strip=strip)
    assert su.usage == expected
    optional = [(s, e) for s, e, only in events[:-1] if only]
    must = [(s, e) for s, e, only in events[-1:] if only]
    assert cut_some(stream, out, optional, must)


def cut_some(stream: bytes, out: bytes, optional: list, must: list) -> bool:
    """Is `out` the stream with every range of `must` and any of `optional` removed?"""
    ranges = sorted([(s, e, False) for s, e in optional] + [(s, e, True) for s, e in must])
    states = {(0, 0)}  # (stream position, out position) reachable so far
    for s, e, required in ranges:
        nxt = set()
        for pos, opos in states:
            keep = stream[pos:s]
            if out[opos : opos + len(keep)] != keep:
                continue
            opos += len(keep)
            nxt.add((e, opos))  # the event cut
            if not required and out[opos : opos + e - s] == stream[s:e]:
                nxt.add((e, opos + e - s))  # the event forwarded
        states = nxt
    return any(stream[pos:] == out[opos:] for pos, opos in states)


def test_a_read_cuts_only_its_last_usage_only_chunk() -> None:
    """A read's usage is read from its tail: of two usage-only chunks in one read only
    the last is cut (servers send one, at the end); in two reads, both are."""
    first = chunk_event(None, {"prompt_tokens": 1, "completion_tokens": 1})
    last = chunk_event(None, USAGE)
    done = b"data: [DONE]\n\n"
    for tail in (done, done[:-1]):  # whole events (read from the tail) or not (scanned)
        out, su = run_stream([first + last + tail], strip=True)
        assert out == first + tail
        assert su.usage == EXPECTED
        out, su = run_stream([first, last + tail], strip=True)
        assert out == tail
        assert su.usage == EXPECTED


# -- body: random JSON documents against a tree walk -----------------------------------

tricky_text = st.sampled_from(['"usage":{', "}", "{", '\\"', "\\", '"}', "usage", "x"])
usage_values = st.one_of(
    st.builds(
        lambda p, c, junk: {"prompt_tokens": p, **junk, "completion_tokens": c},
        counts,
        counts,
        st.dictionaries(st.sampled_from(["note", "id"]), tricky_text, max_size=2),
    ),
    st.just({"type": "object"}),  # a schema-like object: no token counts
    st.none(),
)
json_docs = st.recursive(
    st.one_of(st.integers(-5, 5), tricky_text, st.none(), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", 'x"usage', "choices", "usage_"]), inner, max_size=3),
        st.builds(
            lambda d, u: {**d, "usage": u},
            st.dictionaries(st.sampled_from(["b", "c"]), inner, max_size=2),
            usage_values,
        ),
    ),
    max_leaves=12,
)


def last_usage(doc: object) -> Usage:
    """Walk the document in serialization order; the last "usage" object with counts.

    A "usage" object is taken whole: the scanner resumes after its closing brace,
    so nothing nested inside one is looked at.
    """
    found = Usage()
    stack = [doc]
    order: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "usage" and isinstance(value, dict):
                    order.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(stack[0])
    for u in order:
        if "prompt_tokens" in u:
            found = Usage(u["prompt_tokens"], u["completion_tokens"], 0, 0, True)
    return found


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["id", "usage", "z"]), json_docs, max_size=3),
    style=styles,
    cuts=st.lists(st.integers(0, 2000), max_size=15),
)
def test_body_random_documents(doc: dict, style: str, cuts: list[int]) -> None:
    body = dump(doc, style)
    assert run_body(split_at(body, cuts)) == last_usage(doc)


# -- body_usage: the fast path's whole-body read (a small body parsed once) -----------


def read_whole(body: bytes) -> Usage:
    u = Usage()
    body_usage(body, u)
    return u


def padded(obj: dict, size: int) -> bytes:
    """`obj` with its content grown until the compact body is `size` bytes or more."""
    body = orjson.dumps(obj)
    obj["choices"][0]["message"]["content"] += "w" * max(0, size - len(body))
    return orjson.dumps(obj)


@settings(max_examples=300, deadline=None)
@given(gen=bodies())
def test_body_usage_agrees_with_the_body_scanner(gen) -> None:
    body, expected = gen
    assert read_whole(body) == expected == run_body([body])


@pytest.mark.parametrize("size", [100, SMALL_BODY, SMALL_BODY + 1, 15_000])
def test_body_usage_both_routes(size: int) -> None:
    body = padded(chat_body("x", USAGE), size)
    body = body[:-1] + b',"service_tier":"flex"}'
    assert (len(body) <= SMALL_BODY) == (size < SMALL_BODY)
    assert read_whole(body) == Usage(9, 4, 0, 0, True, "flex") == run_body([body])


def test_body_usage_takes_the_top_level_usage_of_a_small_body() -> None:
    # A usage-shaped object with counts nested after the top-level one (no provider
    # sends one): the whole parse knows which is which; the scanners take the last.
    body = orjson.dumps(
        {"usage": USAGE, "metadata": {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}}
    )
    assert read_whole(body) == EXPECTED


def test_body_usage_of_a_small_body_that_does_not_parse_is_searched() -> None:
    body = b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4},"service_tier":"x"'
    # cut before its last brace: orjson refuses it, the search finds it
    assert read_whole(body) == Usage(9, 4, 0, 0, True, "x") == run_body([body])


def test_body_usage_needs_a_token_count() -> None:
    for body in (
        b'{"usage":{}}',
        b'{"usage":{"type":"object"}}',
        b'{"usage":null,"tools":[{"usage":{"type":"object"}}]}',
    ):
        for big in (False, True):
            doc = body if not big else body[:-1] + b',"pad":"' + b"p" * SMALL_BODY + b'"}'
            assert read_whole(doc) == Usage() == run_body([doc]), doc[:60]


def test_body_usage_tier_over_64_characters_is_ignored_on_both_routes() -> None:
    for size in (100, SMALL_BODY + 1):
        body = padded(chat_body("x", USAGE), size)
        body = body[:-1] + b',"service_tier":"' + b"t" * 65 + b'"}'
        assert read_whole(body) == EXPECTED == run_body([body])
