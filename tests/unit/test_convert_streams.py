"""Stream conversion: realistic event sequences, random splits, truncation, bad input.

Upstream streams are built here from the providers' documented event formats; the
converted output is read back with a small SSE reader and accumulators written for
these tests (and, for conformance, with the providers' own SDKs), so expectations come
from the inputs, never from the code under test.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgate.convert import (
    AnthropicToOpenAIStream,
    ChainStream,
    GeminiToOpenAIStream,
    OpenAIToAnthropicStream,
    OpenAIToGeminiStream,
    UpstreamProtocolError,
    stream_converter,
)
from fastgate.convert.common import decode_call_id
from fastgate.sse.decoder import SSEDecoder
from fastgate.vocab.usage import Usage

SPLITS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ==================================================================================
# builders of upstream streams (documented wire formats)
# ==================================================================================


def a_event(obj: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: `event: <type>` + JSON data."""
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


def anthropic_stream(
    blocks: list[tuple],
    stop_reason: str = "end_turn",
    start_usage: dict[str, int] | None = None,
    delta_usage: dict[str, int] | None = None,
    msg_id: str = "msg_01XYZ",
    end: bool = True,
) -> bytes:
    """blocks: ("text", [pieces]) | ("thinking", [pieces]) | ("tool_use", id, name, [json pieces])."""
    out = [
        a_event(
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage or {"input_tokens": 25, "output_tokens": 1},
                },
            }
        ),
        a_event({"type": "ping"}),
    ]
    for i, b in enumerate(blocks):
        if b[0] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in b[1]]
        elif b[0] == "thinking":
            start = {"type": "thinking", "thinking": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in b[1]]
            deltas.append({"type": "signature_delta", "signature": "EqQBCgIYAhIM"})
        else:
            start = {"type": "tool_use", "id": b[1], "name": b[2], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in b[3]]
        out.append(a_event({"type": "content_block_start", "index": i, "content_block": start}))
        out.extend(a_event({"type": "content_block_delta", "index": i, "delta": d}) for d in deltas)
        out.append(a_event({"type": "content_block_stop", "index": i}))
    if end:
        out.append(
            a_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": delta_usage or {"output_tokens": 15},
                }
            )
        )
        out.append(a_event({"type": "message_stop"}))
    return b"".join(out)


def o_chunk(
    delta: dict[str, Any] | None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-9abc",
        "object": "chat.completion.chunk",
        "created": 1720000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    chunk.update(extra)
    return chunk


def openai_stream(
    text: list[str] = (),  # type: ignore[assignment]
    reasoning: list[str] = (),  # type: ignore[assignment]
    tools: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    finish: str | None = "stop",
    usage: dict[str, Any] | None = None,
    done: bool = True,
) -> bytes:
    """An OpenAI chat stream: role chunk, deltas, finish chunk, usage chunk, [DONE]."""
    chunks = [o_chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [o_chunk({"reasoning_content": r}) for r in reasoning]
    chunks += [o_chunk({"content": t}) for t in text]
    for k, (cid, name, pieces) in enumerate(tools):
        chunks.append(
            o_chunk(
                {
                    "tool_calls": [
                        {
                            "index": k,
                            "id": cid,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        chunks += [
            o_chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]}) for p in pieces
        ]
    if finish is not None:
        chunks.append(o_chunk({}, finish))
    if usage is not None:
        chunks.append(o_chunk(None, usage=usage))
    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def gemini_stream(chunks: list[dict[str, Any]]) -> bytes:
    """Google's alt=sse framing: `data: <json>` and CRLF CRLF between events."""
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def g_chunk(parts, finish=None, usage=None, index=0, rid="resp-7"):
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {
        "candidates": [cand],
        "modelVersion": "gemini-2.5-flash",
        "responseId": rid,
    }
    out["usageMetadata"] = usage or {"promptTokenCount": 8, "totalTokenCount": 8}
    return out


# ==================================================================================
# readers of converted output (independent of the code under test)
# ==================================================================================


def parse_sse(data: bytes) -> list[tuple[str | None, bytes]]:
    events = []
    for block in re.split(rb"\r?\n\r?\n", data):
        if not block.strip():
            continue
        name = None
        lines = []
        for line in block.split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                lines.append(line[6:])
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append((name, b"\n".join(lines)))
    return events


def acc_openai(data: bytes) -> dict[str, Any]:
    """Accumulate OpenAI chunks, checking the stream's shape on the way."""
    res: dict[str, Any] = {
        "content": "",
        "reasoning": "",
        "tools": {},
        "finish": None,
        "usage": None,
        "done": False,
        "errors": [],
        "roles": 0,
        "choices": {},
    }
    for name, d in parse_sse(data):
        assert name is None
        assert not res["done"], "data after [DONE]"
        if d == b"[DONE]":
            res["done"] = True
            continue
        c = json.loads(d)
        if "error" in c:
            res["errors"].append(c["error"])
            continue
        assert c["object"] == "chat.completion.chunk"
        assert c["id"].startswith("chatcmpl-")
        if c.get("usage"):
            assert c["choices"] == []
            res["usage"] = c["usage"]
        for ch in c["choices"]:
            delta = ch["delta"]
            per = res["choices"].setdefault(ch["index"], {"content": "", "finish": None})
            if delta.get("role"):
                res["roles"] += 1
            if ch["index"] == 0:
                res["content"] += delta.get("content") or ""
                res["reasoning"] += delta.get("reasoning_content") or ""
                for tc in delta.get("tool_calls") or []:
                    t = res["tools"].setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                    if tc.get("id"):
                        assert t["id"] is None, "tool call id sent twice"
                        t["id"] = tc["id"]
                        t["name"] = tc["function"]["name"]
                    t["args"] += tc["function"].get("arguments") or ""
                if ch["finish_reason"]:
                    res["finish"] = ch["finish_reason"]
            per["content"] += delta.get("content") or ""
            if ch["finish_reason"]:
                per["finish"] = ch["finish_reason"]
    return res


def acc_anthropic(data: bytes) -> dict[str, Any]:
    """Accumulate Anthropic events, checking the documented event order."""
    res: dict[str, Any] = {
        "blocks": [],
        "stop": None,
        "usage": {},
        "errors": [],
        "stopped": False,
        "id": None,
    }
    open_idx = None
    for name, d in parse_sse(data):
        obj = json.loads(d)
        assert name == obj["type"], "event name must match data.type"
        assert not res["stopped"], "event after message_stop"
        kind = obj["type"]
        if kind == "error":
            res["errors"].append(obj["error"])
            continue
        if kind == "message_start":
            assert res["id"] is None
            res["id"] = obj["message"]["id"]
            res["usage"].update(obj["message"]["usage"])
            continue
        assert res["id"] is not None, f"{kind} before message_start"
        if kind == "content_block_start":
            assert open_idx is None, "block started while another is open"
            assert obj["index"] == len(res["blocks"]), "block indexes must count up from 0"
            b = dict(obj["content_block"])
            b["_json"] = ""
            res["blocks"].append(b)
            open_idx = obj["index"]
        elif kind == "content_block_delta":
            assert obj["index"] == open_idx
            b = res["blocks"][obj["index"]]
            dl = obj["delta"]
            if dl["type"] == "text_delta":
                b["text"] += dl["text"]
            elif dl["type"] == "thinking_delta":
                b["thinking"] += dl["thinking"]
            elif dl["type"] == "input_json_delta":
                b["_json"] += dl["partial_json"]
            elif dl["type"] == "signature_delta":
                b["signature"] = b.get("signature", "") + dl["signature"]
            else:
                raise AssertionError(dl)
        elif kind == "content_block_stop":
            assert obj["index"] == open_idx
            open_idx = None
        elif kind == "message_delta":
            assert open_idx is None
            res["stop"] = obj["delta"]["stop_reason"]
            res["usage"].update({k: v for k, v in obj["usage"].items() if v is not None})
        elif kind == "message_stop":
            res["stopped"] = True
    for b in res["blocks"]:
        if b["type"] == "tool_use":
            b["input"] = json.loads(b["_json"]) if b["_json"] else {}
        del b["_json"]
    return res


def acc_gemini(data: bytes) -> dict[str, Any]:
    res: dict[str, Any] = {
        "text": "",
        "thoughts": "",
        "calls": [],
        "finish": None,
        "usage": None,
        "errors": [],
        "raw": data,
    }
    for name, d in parse_sse(data):
        assert name is None
        obj = json.loads(d)
        if "error" in obj:
            res["errors"].append(obj["error"])
            continue
        assert res["finish"] is None, "chunk after the finishing chunk"
        for cand in obj["candidates"]:
            for p in cand["content"]["parts"]:
                if "functionCall" in p:
                    res["calls"].append(p)
                elif p.get("thought"):
                    res["thoughts"] += p["text"]
                else:
                    res["text"] += p["text"]
            if cand.get("finishReason"):
                res["finish"] = cand["finishReason"]
        if "usageMetadata" in obj:
            res["usage"] = obj["usageMetadata"]
    return res


def run(conv, data: bytes, cuts: list[int] | None = None) -> bytes:
    """Feed `data` cut at `cuts` (every byte when None), then close."""
    pieces = [data[i : i + 1] for i in range(len(data))] if cuts is None else _cut(data, cuts)
    out = b"".join(conv.feed(p) for p in pieces)
    return out + conv.close()


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def norm(out: bytes) -> bytes:
    """Output without the `created` timestamp, which depends on the clock."""
    return re.sub(rb'"created":\d+', b'"created":0', out)


# ==================================================================================
# Anthropic -> OpenAI
# ==================================================================================

TOOL_ARGS = ['{"city"', ': "Par', 'is", "days": ', "3}"]
A_FULL = anthropic_stream(
    [
        ("thinking", ["Let me ", "think."]),
        ("text", ["Hel", "lo, ", "wörld ✓"]),
        ("tool_use", "toolu_01A", "get_weather", TOOL_ARGS),
    ],
    stop_reason="tool_use",
    start_usage={
        "input_tokens": 100,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 6,
        "output_tokens": 1,
    },
    delta_usage={"output_tokens": 57},
)


def test_anthropic_to_openai_full_stream():
    conv = AnthropicToOpenAIStream("public-model", include_usage=True)
    res = acc_openai(conv.feed(A_FULL) + conv.close())
    assert res["roles"] == 1
    assert res["reasoning"] == "Let me think."
    assert res["content"] == "Hello, wörld ✓"
    assert res["tools"] == {
        0: {"id": "toolu_01A", "name": "get_weather", "args": "".join(TOOL_ARGS)}
    }
    assert json.loads(res["tools"][0]["args"]) == {"city": "Paris", "days": 3}
    assert res["finish"] == "tool_calls"
    assert res["done"] and not res["errors"]
    # docs/contract.md section 5: prompt = input + cache read + cache write; cached = cache read
    assert res["usage"] == {
        "prompt_tokens": 146,
        "completion_tokens": 57,
        "total_tokens": 203,
        "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 6},
    }
    assert conv.usage == Usage(146, 57, 40, 6, True)


def test_anthropic_to_openai_without_include_usage_still_tracks_usage():
    conv = AnthropicToOpenAIStream("m", include_usage=False)
    res = acc_openai(conv.feed(A_FULL) + conv.close())
    assert res["usage"] is None and res["done"]
    assert conv.usage.prompt_tokens == 146 and conv.usage.completion_tokens == 57


def test_anthropic_cumulative_message_delta_usage_wins():
    data = anthropic_stream(
        [("text", ["x"])],
        start_usage={"input_tokens": 10, "output_tokens": 1},
        delta_usage={
            "input_tokens": 12,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": None,
            "output_tokens": 9,
        },
    )
    conv = AnthropicToOpenAIStream("m", include_usage=True)
    acc_openai(conv.feed(data) + conv.close())
    assert conv.usage == Usage(15, 9, 3, 0, True)


def test_anthropic_to_openai_first_byte_leaves_with_first_event():
    conv = AnthropicToOpenAIStream("m")
    first_event_end = A_FULL.index(b"\n\n") + 2
    assert conv.feed(A_FULL[: first_event_end - 1]) == b""
    out = conv.feed(A_FULL[first_event_end - 1 : first_event_end])
    assert json.loads(parse_sse(out)[0][1])["choices"][0]["delta"]["role"] == "assistant"


@SPLITS
@given(st.data())
def test_anthropic_to_openai_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(A_FULL)), max_size=40))
    whole = AnthropicToOpenAIStream("m", True)
    expected = norm(whole.feed(A_FULL) + whole.close())
    conv = AnthropicToOpenAIStream("m", True)
    assert norm(run(conv, A_FULL, cuts)) == expected
    assert conv.usage == whole.usage


def test_anthropic_to_openai_byte_by_byte():
    whole = AnthropicToOpenAIStream("m", True)
    expected = norm(whole.feed(A_FULL) + whole.close())
    assert norm(run(AnthropicToOpenAIStream("m", True), A_FULL)) == expected


# -- the hot event read through the stream's template (no whole parse) ------------

A_TEXTS = ["Hi", ' "quoted"', " back\\slash", " caf\u00e9", " \U0001f600", "\n", "", "}", '{"a":1}']


def _a_reference(pieces: list[bytes]) -> bytes:
    """The converter with its template off: every event parsed whole."""
    conv = AnthropicToOpenAIStream("m", True)
    conv._tries = 0  # never learns a template
    return norm(b"".join(conv.feed(p) for p in pieces) + conv.close())


def _a_events(data: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in data.split(b"\n\n") if e]


@pytest.mark.parametrize("ascii_", [True, False])
@pytest.mark.parametrize("split", ["whole", "events", "bytes"])
def test_anthropic_to_openai_template_matches_whole_parse(ascii_: bool, split: str) -> None:
    """Texts with escapes, unicode and braces; a tool call between two text blocks;
    fed whole, an event per feed, a byte per feed: the chunks equal those of the
    whole parse, and the text is the upstream's."""
    data = anthropic_stream(
        [("text", A_TEXTS), ("tool_use", "toolu_1", "f", ["{}"]), ("text", A_TEXTS[:3])]
    )
    if not ascii_:  # the same events with non-ASCII text as raw UTF-8
        data = b"".join(
            e.split(b"\ndata: ")[0]
            + b"\ndata: "
            + json.dumps(json.loads(e.split(b"\ndata: ")[1]), ensure_ascii=False).encode()
            + b"\n\n"
            for e in data.split(b"\n\n")
            if e
        )
    if split == "whole":
        pieces = [data]
    elif split == "events":
        pieces = _a_events(data)
    else:
        pieces = [data[i : i + 1] for i in range(len(data))]
    conv = AnthropicToOpenAIStream("m", True)
    out = norm(b"".join(conv.feed(p) for p in pieces) + conv.close())
    if split != "bytes":
        assert conv._pre  # the template was used
    assert out == _a_reference(pieces)
    res = acc_openai(out)
    assert res["content"] == "".join(A_TEXTS) + "".join(A_TEXTS[:3])
    assert res["tools"][0]["name"] == "f" and res["done"]


def test_anthropic_to_openai_template_skips_the_whole_parse() -> None:
    """Once learned, a text delta that fits the template is not parsed whole: of a
    run of ten deltas only the first goes through `_event` (which the template-off
    converter calls for every event), and the chunks out are the same."""

    class Counting(AnthropicToOpenAIStream):
        whole = 0

        def _event(self, data: bytes, out: list[Any]) -> dict[str, Any]:
            self.whole += 1
            return super()._event(data, out)

    data = anthropic_stream([("text", [f"w{i} " for i in range(10)])])
    events = len(_a_events(data))  # start, ping, block start, 10 deltas, stop, delta, stop
    conv, ref = Counting("m", True), Counting("m", True)
    ref._tries = 0
    out = norm(conv.feed(data) + conv.close())
    assert out == norm(ref.feed(data) + ref.close())
    assert (ref.whole, conv.whole) == (events, events - 9)


def test_anthropic_to_openai_template_proves_which_token_is_the_text() -> None:
    """A `text` key ahead of the delta's, with the same string, comes first in the
    bytes: the proof rejects it and takes the delta's. When that other value
    changes, the event no longer fits the template and is parsed whole."""
    metas = ["Hi", "Hi", "Hi", "changed", "Hi"]
    texts = ["Hi", " there", " you", " now", " again"]
    head = anthropic_stream([("text", [])], end=False)
    body = b"".join(
        b"event: content_block_delta\ndata: "
        + json.dumps(
            {
                "meta": {"text": m},
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": t},
            }
        ).encode()
        + b"\n\n"
        for m, t in zip(metas, texts, strict=True)
    )
    tail = anthropic_stream([], end=True).split(b'event: ping\ndata: {"type": "ping"}\n\n')[1]
    data = head + body + tail
    conv = AnthropicToOpenAIStream("m", True)
    pieces = _a_events(data)
    out = norm(b"".join(conv.feed(p) for p in [b"".join(pieces)]) + conv.close())
    assert conv._pre.startswith(b'{"meta": {"text": "Hi"}')
    assert out == _a_reference([b"".join(pieces)])
    assert acc_openai(out)["content"] == "".join(texts)


@pytest.mark.parametrize(
    "middle",
    [b'"a", "x": "b"', b"null", b"7", b'"a"  ', b'"unterminated', b'"a" "b"'],
)
def test_anthropic_to_openai_template_reads_only_one_string_token(middle: bytes) -> None:
    """Bytes that fit the template around something other than one string token
    (a second key, null, a number, broken JSON) are parsed whole, as before."""
    data = anthropic_stream([("text", ["Hi", " there"])], end=False)
    line = json.dumps(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
    ).encode()
    pre, suf = line.split(b'"Hi"')
    data += b"event: content_block_delta\ndata: " + pre + middle + suf + b"\n\n"
    data += a_event({"type": "message_stop"})
    try:
        expected: bytes | type[Exception] = _a_reference([data])
    except UpstreamProtocolError:
        expected = UpstreamProtocolError
    conv = AnthropicToOpenAIStream("m", True)
    if expected is UpstreamProtocolError:
        with pytest.raises(UpstreamProtocolError):
            conv.feed(data) + conv.close()
    else:
        assert norm(conv.feed(data) + conv.close()) == expected
    assert conv._pre.endswith(b'"text": ')  # learned from the first delta


def test_anthropic_to_openai_template_gives_up_on_events_that_never_repeat() -> None:
    """An event with a field that differs every time fits no template: after a
    few tries the stream is read event by event as before, with the same chunks."""
    head = anthropic_stream([("text", [])], end=False)
    body = b"".join(
        b"event: content_block_delta\ndata: "
        + json.dumps(
            {
                "type": "content_block_delta",
                "index": 0,
                "seq": "x" * i,
                "delta": {"type": "text_delta", "text": f"w{i} "},
            }
        ).encode()
        + b"\n\n"
        for i in range(12)
    )
    data = head + body + a_event({"type": "message_stop"})
    conv = AnthropicToOpenAIStream("m", True)
    out = norm(conv.feed(data) + conv.close())
    assert out == _a_reference([data])
    assert conv._tries == 0
    assert acc_openai(out)["content"] == "".join(f"w{i} " for i in range(12))


def test_anthropic_crlf_framing_is_accepted():
    conv = AnthropicToOpenAIStream("m")
    res = acc_openai(conv.feed(A_FULL.replace(b"\n", b"\r\n")) + conv.close())
    assert res["content"] == "Hello, wörld ✓" and res["done"]


def test_anthropic_upstream_error_event_becomes_openai_error():
    data = anthropic_stream([("text", ["partial"])], end=False) + a_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    conv = AnthropicToOpenAIStream("m")
    out = conv.feed(data)
    out += conv.close()  # the stream ended with its error: not a truncation
    res = acc_openai(out)
    assert res["content"] == "partial"
    assert res["errors"] == [
        {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    ]
    assert not res["done"]


def test_anthropic_unknown_events_and_blocks_are_skipped():
    data = anthropic_stream([("text", ["a"])], end=False)
    data += a_event(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "citations_delta", "citation": {}},
        }
    )
    data += a_event({"type": "future_event", "x": 1})
    data += a_event(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "xx"},
        }
    )
    data += a_event({"type": "content_block_stop", "index": 1})
    data += a_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        }
    )
    data += a_event({"type": "message_stop"})
    conv = AnthropicToOpenAIStream("m")
    res = acc_openai(conv.feed(data) + conv.close())
    assert res["content"] == "a" and res["finish"] == "stop" and res["done"]


@pytest.mark.parametrize(
    "bad",
    [
        b"event: content_block_delta\ndata: {not json}\n\n",
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":5,"delta":{"type":"input_json_delta","partial_json":"{"}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use"}}\n\n',
        b"data: [1, 2]\n\n",
    ],
)
def test_anthropic_malformed_events_raise(bad):
    data = anthropic_stream([("text", ["ok"])], end=False)
    conv = AnthropicToOpenAIStream("m")
    conv.feed(data)
    with pytest.raises(UpstreamProtocolError):
        conv.feed(bad)


def test_anthropic_event_before_message_start_raises():
    conv = AnthropicToOpenAIStream("m")
    with pytest.raises(UpstreamProtocolError, match="before message_start"):
        conv.feed(
            a_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "x"},
                }
            )
        )


def test_anthropic_truncated_streams_raise_at_close():
    conv = AnthropicToOpenAIStream("m")
    conv.feed(anthropic_stream([("text", ["cut"])], end=False))
    with pytest.raises(UpstreamProtocolError, match="message_stop"):
        conv.close()
    assert conv.usage.found and conv.usage.prompt_tokens == 25  # billed even when cut
    conv = AnthropicToOpenAIStream("m")
    conv.feed(A_FULL[: len(A_FULL) - 20])  # cut inside an event's JSON
    with pytest.raises(UpstreamProtocolError):
        conv.close()
    with pytest.raises(UpstreamProtocolError):
        AnthropicToOpenAIStream("m").close()  # nothing at all


def test_anthropic_oversized_event_raises():
    conv = AnthropicToOpenAIStream("m", max_event_bytes=1024)
    conv.feed(anthropic_stream([("text", ["a"])], end=False))
    with pytest.raises(UpstreamProtocolError):
        conv.feed(
            a_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "x" * 5000},
                }
            )
        )


def test_anthropic_data_after_message_stop_is_ignored():
    conv = AnthropicToOpenAIStream("m")
    out = conv.feed(A_FULL)
    assert conv.feed(a_event({"type": "ping"})) == b""
    assert acc_openai(out + conv.close())["done"]


def test_openai_sdk_reads_converted_anthropic_stream():
    import openai

    body = AnthropicToOpenAIStream("public-model", include_usage=True).feed(A_FULL)
    client = openai.OpenAI(api_key="k", base_url="http://t/v1", http_client=_mock_client(body))
    stream = client.chat.completions.create(
        model="public-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    content = ""
    args = ""
    usage = None
    finish = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                args += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert content == "Hello, wörld ✓"
    assert json.loads(args) == {"city": "Paris", "days": 3}
    assert finish == "tool_calls"
    assert usage.prompt_tokens == 146 and usage.prompt_tokens_details.cached_tokens == 40


# ==================================================================================
# OpenAI -> Anthropic
# ==================================================================================

O_FULL = openai_stream(
    reasoning=["Think", "ing"],
    text=["Sure", ", checking ", "two cities."],
    tools=[
        ("call_A", "get_weather", ['{"city":', ' "Oslo"}']),
        ("call_B", "get_weather", ['{"city": "Rome"}']),
    ],
    finish="tool_calls",
    usage={
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 10},
    },
)


def test_openai_to_anthropic_full_stream():
    conv = OpenAIToAnthropicStream("claude-public")
    res = acc_anthropic(conv.feed(O_FULL) + conv.close())
    assert res["id"] == "msg_9abc"
    assert res["blocks"] == [
        {"type": "thinking", "thinking": "Thinking", "signature": ""},
        {"type": "text", "text": "Sure, checking two cities."},
        {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_B", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert res["stop"] == "tool_use"
    assert res["stopped"] and not res["errors"]
    # docs/contract.md section 5: input = prompt - cached; cache read = cached
    assert res["usage"]["input_tokens"] == 20
    assert res["usage"]["cache_read_input_tokens"] == 100
    assert res["usage"]["output_tokens"] == 30
    assert conv.usage == Usage(120, 30, 100, 0, True)


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_openai_to_anthropic_stop_reasons(finish, stop):
    conv = OpenAIToAnthropicStream("m")
    res = acc_anthropic(conv.feed(openai_stream(text=["x"], finish=finish)) + conv.close())
    assert res["stop"] == stop and res["stopped"]


def test_openai_to_anthropic_message_start_on_first_chunk():
    conv = OpenAIToAnthropicStream("m")
    first = O_FULL[: O_FULL.index(b"\n\n") + 2]
    out = conv.feed(first)
    assert parse_sse(out)[0][0] == "message_start"


def test_openai_to_anthropic_without_usage_chunk():
    conv = OpenAIToAnthropicStream("m")
    res = acc_anthropic(conv.feed(openai_stream(text=["hi"])) + conv.close())
    assert res["blocks"] == [{"type": "text", "text": "hi"}]
    assert res["stopped"] and res["usage"]["output_tokens"] == 0
    assert conv.usage.found is False


def test_openai_to_anthropic_missing_done_after_finish_is_closed_cleanly():
    conv = OpenAIToAnthropicStream("m")
    out = conv.feed(openai_stream(text=["hi"], usage=None, done=False))
    out += conv.close()
    res = acc_anthropic(out)
    assert res["stopped"] and res["stop"] == "end_turn"


def test_openai_to_anthropic_truncated_before_finish_raises():
    conv = OpenAIToAnthropicStream("m")
    conv.feed(openai_stream(text=["hi"], finish=None, done=False))
    with pytest.raises(UpstreamProtocolError):
        conv.close()
    conv = OpenAIToAnthropicStream("m")
    conv.feed(O_FULL[:200])
    with pytest.raises(UpstreamProtocolError):
        conv.close()


def test_openai_to_anthropic_error_chunk():
    data = openai_stream(text=["par"], finish=None, done=False)
    data += b'data: {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}\n\n'
    conv = OpenAIToAnthropicStream("m")
    res = acc_anthropic(conv.feed(data) + conv.close())
    assert res["errors"] == [{"type": "rate_limit_error", "message": "Rate limit reached"}]
    assert res["blocks"] == [{"type": "text", "text": "par"}]


def test_openai_to_anthropic_tolerates_leading_filter_chunk_and_null_usage():
    filt = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [],
    }
    data = b"data: " + json.dumps(filt).encode() + b"\n\n"
    data += b"".join(
        b"data: " + json.dumps(o_chunk(d, f, usage=None)).encode() + b"\n\n"
        for d, f in [({"role": "assistant"}, None), ({"content": "ok"}, None), ({}, "stop")]
    )
    data += b"data: [DONE]\n\n"
    conv = OpenAIToAnthropicStream("m")
    res = acc_anthropic(conv.feed(data) + conv.close())
    assert res["blocks"] == [{"type": "text", "text": "ok"}] and res["stopped"]


@pytest.mark.parametrize(
    "bad",
    [
        b"data: {oops\n\n",
        b'data: "str"\n\n',
        b'data: {"choices": [{"delta": {"tool_calls": [7]}}]}\n\n',
    ],
)
def test_openai_to_anthropic_malformed_raises(bad):
    conv = OpenAIToAnthropicStream("m")
    conv.feed(openai_stream(text=["a"], finish=None, done=False))
    with pytest.raises(UpstreamProtocolError):
        conv.feed(bad)


@SPLITS
@given(st.data())
def test_openai_to_anthropic_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(O_FULL)), max_size=40))
    whole = OpenAIToAnthropicStream("m")
    expected = whole.feed(O_FULL) + whole.close()
    assert run(OpenAIToAnthropicStream("m"), O_FULL, cuts) == expected


def test_openai_to_anthropic_byte_by_byte():
    whole = OpenAIToAnthropicStream("m")
    assert run(OpenAIToAnthropicStream("m"), O_FULL) == whole.feed(O_FULL) + whole.close()


# -- the hot chunk read through the stream's template (no whole parse) ------------

TEXTS = ["Hi", ' "quoted"', " back\\slash", " caf\u00e9", " \U0001f600", "\n", "", "}", '{"a":1}']


def _reference(data: bytes, pieces: list[bytes] | None = None) -> bytes:
    """The converter with its template off: every chunk parsed whole."""
    conv = OpenAIToAnthropicStream("m")
    conv._tries = 0  # never learns a template
    return b"".join(conv.feed(p) for p in (pieces or [data])) + conv.close()


def _chunks_bytes(chunks: list[dict[str, Any]], ascii_: bool) -> bytes:
    out = b"".join(
        b"data: " + json.dumps(c, ensure_ascii=ascii_).encode() + b"\n\n" for c in chunks
    )
    return out + b"data: [DONE]\n\n"


@pytest.mark.parametrize("ascii_", [True, False])
@pytest.mark.parametrize("split", ["whole", "events", "bytes"])
def test_openai_to_anthropic_template_matches_whole_parse(ascii_: bool, split: str) -> None:
    """Texts with escapes, unicode and braces; a tool call between two text runs
    (the template must not write into a closed block); fed whole, an event per
    feed, a byte per feed: the events equal those of the whole parse, and the text
    is the upstream's."""
    chunks = [o_chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [o_chunk({"content": t}) for t in TEXTS]
    chunks.append(
        o_chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}
        )
    )
    chunks += [o_chunk({"content": t}) for t in TEXTS[:3]]
    chunks.append(o_chunk({}, "stop"))
    data = _chunks_bytes(chunks, ascii_)
    if split == "whole":
        pieces = [data]
    elif split == "events":
        pieces = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    else:
        pieces = [data[i : i + 1] for i in range(len(data))]
    conv = OpenAIToAnthropicStream("m")
    out = b"".join(conv.feed(p) for p in pieces) + conv.close()
    assert conv._pre  # the template was used
    assert out == _reference(data, pieces)
    res = acc_anthropic(out)
    assert [b["type"] for b in res["blocks"]] == ["text", "tool_use", "text"]
    assert res["blocks"][0]["text"] == "".join(TEXTS)
    assert res["blocks"][2]["text"] == "".join(TEXTS[:3])


def test_openai_to_anthropic_template_skips_the_whole_parse(monkeypatch) -> None:
    """Once learned, a text chunk that fits the template is not parsed whole: of ten
    text chunks only the first is (the template-off converter parses every chunk),
    and the events out are the same. Counted: the JSON objects parsed (`orjson.loads`
    of bytes that open with `{`; a text token opens with `"`)."""
    import types

    import orjson

    from fastgate.convert import common
    from fastgate.convert.anthropic import stream

    whole: list[bytes] = []

    def loads(data: bytes) -> Any:
        if bytes(data[:1]) == b"{":
            whole.append(bytes(data))
        return orjson.loads(data)

    counting = types.SimpleNamespace(
        loads=loads, dumps=orjson.dumps, JSONDecodeError=orjson.JSONDecodeError
    )
    monkeypatch.setattr(stream, "orjson", counting)
    monkeypatch.setattr(common, "orjson", counting)
    chunks = [o_chunk({"role": "assistant", "content": ""})]
    chunks += [o_chunk({"content": f"w{i} "}) for i in range(10)]
    chunks.append(o_chunk({}, "stop"))
    data = _chunks_bytes(chunks, True)  # and `data: [DONE]`
    conv, ref = OpenAIToAnthropicStream("m"), OpenAIToAnthropicStream("m")
    ref._tries = 0
    out = conv.feed(data) + conv.close()
    by_conv = len(whole)
    assert out == ref.feed(data) + ref.close()
    assert len(whole) - by_conv == len(chunks)  # the template-off converter: every chunk
    # the first chunk, the first text chunk and its template's proof, the stop chunk
    assert by_conv == 4 == len(chunks) - 10 + 2


def test_openai_to_anthropic_template_proves_which_token_is_the_text() -> None:
    """A `content` key ahead of the delta's, with the same string as the text,
    comes first in the bytes: the proof rejects it and takes the delta's. When
    that other value changes, the chunk no longer fits the template and is
    parsed whole."""
    metas = ["Hi", "Hi", "Hi", "changed", "Hi"]
    texts = ["Hi", " there", " you", " now", " again"]
    chunks = [
        {"meta": {"content": m}, **o_chunk({"content": t})}
        for m, t in zip(metas, texts, strict=True)
    ]
    data = _chunks_bytes([*chunks, o_chunk({}, "stop")], True)
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    conv = OpenAIToAnthropicStream("m")
    out = b"".join(conv.feed(e) for e in events) + conv.close()
    assert conv._pre.startswith(b'{"meta": {"content": "Hi"}')
    assert out == _reference(data, events)
    assert acc_anthropic(out)["blocks"] == [{"type": "text", "text": "".join(texts)}]


@pytest.mark.parametrize(
    "middle",
    [b'"a", "x": "b"', b"null", b"7", b'"a"  ', b'"unterminated', b'"a" "b"'],
)
def test_openai_to_anthropic_template_reads_only_one_string_token(middle: bytes) -> None:
    """Bytes that fit the template around something other than one string token
    (a second key, null, a number, broken JSON) are parsed whole, as before."""
    first = o_chunk({"content": "Hi"})
    chunks = [first, o_chunk({"content": " there"})]
    data = _chunks_bytes(chunks, True)[: -len(b"data: [DONE]\n\n")]
    line = json.dumps(first).encode()
    pre, suf = line.split(b'"Hi"')
    data += b"data: " + pre + middle + suf + b"\n\n"
    data += _chunks_bytes([o_chunk({}, "stop")], True)
    conv = OpenAIToAnthropicStream("m")
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    try:
        expected: bytes | type[Exception] = _reference(data, events)
    except UpstreamProtocolError:
        expected = UpstreamProtocolError
    if expected is UpstreamProtocolError:
        with pytest.raises(UpstreamProtocolError):
            b"".join(conv.feed(e) for e in events) + conv.close()
    else:
        assert b"".join(conv.feed(e) for e in events) + conv.close() == expected
    assert conv._pre.endswith(b'"content": ')  # learned from the first chunk


@pytest.mark.parametrize("split", ["events", "whole"])
def test_openai_to_anthropic_template_gives_up_on_chunks_that_never_repeat(split: str) -> None:
    """OpenAI's `obfuscation` differs in every chunk: a template fits a few chunks
    at most; after a few tries it is dropped and the stream is converted as
    before, and the events are the same. Fed whole, the tries run out inside one
    read: the rest of that read (text, a tool call, text again) goes through the
    hot-chunk loop of `push` in one call."""
    chunks = [o_chunk({"content": f"w{i} "}, obfuscation="x" * (i % 7)) for i in range(30)]
    chunks.append(
        o_chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
                ]
            },
            obfuscation="y",
        )
    )
    chunks += [o_chunk({"content": f"v{i} "}, obfuscation="z" * i) for i in range(5)]
    chunks.append(o_chunk({}, "stop"))
    data = _chunks_bytes(chunks, True)
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e] if split == "events" else [data]
    conv = OpenAIToAnthropicStream("m")
    out = b"".join(conv.feed(e) for e in events) + conv.close()
    assert out == _reference(data, events)
    assert conv._tries == 0 and conv._pre == b""
    blocks = acc_anthropic(out)["blocks"]
    assert [b["type"] for b in blocks] == ["text", "tool_use", "text"]
    assert blocks[0]["text"] == "".join(f"w{i} " for i in range(30))
    assert blocks[2]["text"] == "".join(f"v{i} " for i in range(5))


def test_anthropic_sdk_reads_converted_openai_stream():
    import anthropic

    body = OpenAIToAnthropicStream("claude-public").feed(O_FULL)
    client = anthropic.Anthropic(api_key="k", base_url="http://t", http_client=_mock_client(body))
    with client.messages.stream(
        model="claude-public", max_tokens=9, messages=[{"role": "user", "content": "q"}]
    ) as s:
        msg = s.get_final_message()
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[1].text == "Sure, checking two cities."
    assert msg.content[2].input == {"city": "Oslo"}
    assert msg.stop_reason == "tool_use"
    assert msg.usage.input_tokens == 20 and msg.usage.cache_read_input_tokens == 100
    assert msg.usage.output_tokens == 30


def test_anthropic_stream_round_trips_through_the_hub():
    hub = AnthropicToOpenAIStream("m", include_usage=True)
    back = OpenAIToAnthropicStream("m")
    res = acc_anthropic(back.feed(hub.feed(A_FULL) + hub.close()) + back.close())
    orig = acc_anthropic(A_FULL)
    assert [b["type"] for b in res["blocks"]] == [b["type"] for b in orig["blocks"]]
    assert res["blocks"][1]["text"] == orig["blocks"][1]["text"]
    assert res["blocks"][2]["input"] == orig["blocks"][2]["input"]
    assert res["blocks"][2]["id"] == "toolu_01A"
    assert res["id"] == "msg_01XYZ"
    assert res["stop"] == "tool_use"
    for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert res["usage"][key] == orig["usage"][key]
    assert res["usage"]["output_tokens"] == 57


# ==================================================================================
# Gemini -> OpenAI
# ==================================================================================

G_USAGE = {
    "promptTokenCount": 50,
    "candidatesTokenCount": 20,
    "thoughtsTokenCount": 7,
    "cachedContentTokenCount": 32,
    "totalTokenCount": 77,
}
G_FULL = gemini_stream(
    [
        g_chunk([{"text": "**Planning**", "thought": True}]),
        g_chunk([{"text": "The weather "}]),
        g_chunk([{"text": "in Oslo: "}]),
        g_chunk(
            [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo", "unit": "C"}},
                    "thoughtSignature": "CiQBcsjafQ==",
                }
            ],
            finish="STOP",
            usage=G_USAGE,
        ),
    ]
)


def test_gemini_to_openai_full_stream():
    conv = GeminiToOpenAIStream("public", include_usage=True)
    out = conv.feed(G_FULL)
    assert b"[DONE]" not in out  # Gemini ends only by closing the stream
    res = acc_openai(out + conv.close())
    assert res["roles"] == 1
    assert res["reasoning"] == "**Planning**"
    assert res["content"] == "The weather in Oslo: "
    tool = res["tools"][0]
    assert tool["name"] == "get_weather"
    assert json.loads(tool["args"]) == {"city": "Oslo", "unit": "C"}
    assert tool["id"].startswith("call_")
    assert decode_call_id(tool["id"])[1] == "CiQBcsjafQ=="
    assert res["finish"] == "tool_calls"
    assert res["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 27,
        "total_tokens": 77,
        "prompt_tokens_details": {"cached_tokens": 32},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    assert res["done"]
    assert conv.usage == Usage(50, 27, 32, 0, True)


@pytest.mark.parametrize(
    ("reason", "finish"), [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter")]
)
def test_gemini_to_openai_finish_reasons(reason, finish):
    conv = GeminiToOpenAIStream("m")
    res = acc_openai(
        conv.feed(gemini_stream([g_chunk([{"text": "x"}], finish=reason)])) + conv.close()
    )
    assert res["finish"] == finish


def test_gemini_prompt_blocked_stream():
    data = gemini_stream(
        [
            {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
            }
        ]
    )
    conv = GeminiToOpenAIStream("m", True)
    res = acc_openai(conv.feed(data) + conv.close())
    assert res["finish"] == "content_filter" and res["done"]
    assert res["usage"]["prompt_tokens"] == 5


def test_gemini_multiple_candidates_stream_as_choices():
    data = gemini_stream(
        [
            {
                "candidates": [
                    {"content": {"parts": [{"text": "A"}], "role": "model"}, "index": 0},
                    {"content": {"parts": [{"text": "B"}], "role": "model"}, "index": 1},
                ]
            },
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "a"}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    },
                    {
                        "content": {"parts": [{"text": "b"}], "role": "model"},
                        "finishReason": "MAX_TOKENS",
                        "index": 1,
                    },
                ]
            },
        ]
    )
    conv = GeminiToOpenAIStream("m")
    res = acc_openai(conv.feed(data) + conv.close())
    assert res["choices"] == {
        0: {"content": "Aa", "finish": "stop"},
        1: {"content": "Bb", "finish": "length"},
    }
    assert res["roles"] == 2


def test_gemini_truncated_without_finish_raises():
    conv = GeminiToOpenAIStream("m")
    conv.feed(gemini_stream([g_chunk([{"text": "cut"}])]))
    with pytest.raises(UpstreamProtocolError, match="finishReason"):
        conv.close()
    assert conv.usage.found
    conv = GeminiToOpenAIStream("m")
    conv.feed(G_FULL[:-30])
    with pytest.raises(UpstreamProtocolError):
        conv.close()


def test_gemini_error_chunk_becomes_openai_error():
    data = gemini_stream(
        [
            g_chunk([{"text": "par"}]),
            {
                "error": {
                    "code": 503,
                    "message": "The model is overloaded.",
                    "status": "UNAVAILABLE",
                }
            },
        ]
    )
    conv = GeminiToOpenAIStream("m")
    res = acc_openai(conv.feed(data) + conv.close())
    assert res["content"] == "par"
    assert res["errors"] == [
        {
            "message": "The model is overloaded.",
            "type": "server_error",
            "param": None,
            "code": "UNAVAILABLE",
        }
    ]
    assert not res["done"]


@pytest.mark.parametrize(
    "bad",
    [
        b'data: {"candidates": [\r\n\r\n',
        b"data: 42\r\n\r\n",
        b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}\r\n\r\n',
    ],
)
def test_gemini_malformed_raises(bad):
    conv = GeminiToOpenAIStream("m")
    with pytest.raises(UpstreamProtocolError):
        conv.feed(bad)


@SPLITS
@given(st.data())
def test_gemini_to_openai_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(G_FULL)), max_size=40))
    whole = GeminiToOpenAIStream("m", True)
    expected = norm(whole.feed(G_FULL) + whole.close())
    assert norm(run(GeminiToOpenAIStream("m", True), G_FULL, cuts)) == expected


def test_gemini_to_openai_byte_by_byte():
    whole = GeminiToOpenAIStream("m", True)
    expected = norm(whole.feed(G_FULL) + whole.close())
    assert norm(run(GeminiToOpenAIStream("m", True), G_FULL)) == expected


# ==================================================================================
# OpenAI -> Gemini
# ==================================================================================


def test_openai_to_gemini_full_stream():
    conv = OpenAIToGeminiStream("gem-public")
    out = conv.feed(O_FULL) + conv.close()
    assert out.count(b"\r\n\r\n") == len(parse_sse(out))
    res = acc_gemini(out)
    assert res["thoughts"] == "Thinking"
    assert res["text"] == "Sure, checking two cities."
    assert [
        (c["functionCall"]["name"], c["functionCall"]["args"], c["functionCall"]["id"])
        for c in res["calls"]
    ] == [
        ("get_weather", {"city": "Oslo"}, "call_A"),
        ("get_weather", {"city": "Rome"}, "call_B"),
    ]
    assert res["finish"] == "STOP"
    assert res["usage"] == {
        "promptTokenCount": 120,
        "candidatesTokenCount": 20,
        "totalTokenCount": 150,
        "cachedContentTokenCount": 100,
        "thoughtsTokenCount": 10,
    }


def test_openai_to_gemini_text_leaves_before_the_end():
    conv = OpenAIToGeminiStream("m")
    data = openai_stream(text=["first"], finish=None, done=False)
    res = acc_gemini(conv.feed(data))
    assert res["text"] == "first" and res["finish"] is None


@pytest.mark.parametrize(
    ("finish", "reason"), [("stop", "STOP"), ("length", "MAX_TOKENS"), ("content_filter", "SAFETY")]
)
def test_openai_to_gemini_finish(finish, reason):
    conv = OpenAIToGeminiStream("m")
    assert (
        acc_gemini(conv.feed(openai_stream(text=["x"], finish=finish)) + conv.close())["finish"]
        == reason
    )


def test_openai_to_gemini_bad_tool_arguments_raise():
    conv = OpenAIToGeminiStream("m")
    with pytest.raises(UpstreamProtocolError, match="arguments"):
        conv.feed(openai_stream(tools=[("c", "f", ["{broken"])], finish="tool_calls"))


def test_openai_to_gemini_truncated_raises_and_error_chunk_converts():
    conv = OpenAIToGeminiStream("m")
    conv.feed(openai_stream(text=["x"], finish=None, done=False))
    with pytest.raises(UpstreamProtocolError):
        conv.close()
    conv = OpenAIToGeminiStream("m")
    data = (
        openai_stream(text=["x"], finish=None, done=False)
        + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    )
    res = acc_gemini(conv.feed(data) + conv.close())
    assert res["errors"] == [{"code": 500, "message": "boom", "status": "INTERNAL"}]


@SPLITS
@given(st.data())
def test_openai_to_gemini_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(O_FULL)), max_size=40))
    whole = OpenAIToGeminiStream("m")
    assert run(OpenAIToGeminiStream("m"), O_FULL, cuts) == whole.feed(O_FULL) + whole.close()


def test_genai_sdk_reads_converted_openai_stream():
    from google import genai
    from google.genai import types

    body = OpenAIToGeminiStream("gem-public").feed(O_FULL)
    client = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(base_url="http://t", httpx_client=_mock_client(body)),
    )
    text = ""
    calls = []
    last = None
    for resp in client.models.generate_content_stream(model="gem-public", contents="q"):
        for p in resp.candidates[0].content.parts or []:
            if p.function_call:
                calls.append((p.function_call.name, p.function_call.args))
            elif p.text and not p.thought:
                text += p.text
        last = resp
    assert text == "Sure, checking two cities."
    assert calls == [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.prompt_token_count == 120


def test_genai_sdk_raises_on_converted_error_event():
    from google import genai
    from google.genai import errors, types

    conv = OpenAIToGeminiStream("m")
    body = conv.feed(openai_stream(text=["x"], finish=None, done=False)) + conv.error_event(
        "upstream died", "server_error"
    )
    client = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(base_url="http://t", httpx_client=_mock_client(body)),
    )
    with pytest.raises(errors.APIError, match="upstream died"):
        for _ in client.models.generate_content_stream(model="m", contents="q"):
            pass


# ==================================================================================
# composition (Anthropic <-> Gemini through the hub)
# ==================================================================================


def test_chain_anthropic_upstream_to_gemini_client():
    conv = stream_converter("anthropic", "gemini", "gem-public")
    assert isinstance(conv, ChainStream)
    res = acc_gemini(conv.feed(A_FULL) + conv.close())
    assert res["thoughts"] == "Let me think."
    assert res["text"] == "Hello, wörld ✓"
    assert [(c["functionCall"]["name"], c["functionCall"]["args"]) for c in res["calls"]] == [
        ("get_weather", {"city": "Paris", "days": 3})
    ]
    assert res["finish"] == "STOP"
    assert res["usage"]["promptTokenCount"] == 146
    assert res["usage"]["cachedContentTokenCount"] == 40
    assert conv.usage == Usage(146, 57, 40, 6, True)


def test_chain_gemini_upstream_to_anthropic_client_and_sdk():
    import anthropic

    conv = stream_converter("gemini", "anthropic", "claude-public")
    body = conv.feed(G_FULL) + conv.close()
    res = acc_anthropic(body)
    assert [b["type"] for b in res["blocks"]] == ["thinking", "text", "tool_use"]
    assert res["blocks"][2]["input"] == {"city": "Oslo", "unit": "C"}
    assert decode_call_id(res["blocks"][2]["id"])[1] == "CiQBcsjafQ=="
    assert re.fullmatch(r"[A-Za-z0-9_-]+", res["blocks"][2]["id"])  # Anthropic's id pattern
    assert res["stop"] == "tool_use"
    assert res["usage"]["input_tokens"] == 18 and res["usage"]["cache_read_input_tokens"] == 32
    client = anthropic.Anthropic(api_key="k", base_url="http://t", http_client=_mock_client(body))
    with client.messages.stream(
        model="claude-public", max_tokens=9, messages=[{"role": "user", "content": "q"}]
    ) as s:
        msg = s.get_final_message()
    assert msg.content[1].text == "The weather in Oslo: "
    assert msg.content[2].input == {"city": "Oslo", "unit": "C"}


def test_chain_equals_two_converters_in_a_row():
    two = OpenAIToGeminiStream("m")
    first = AnthropicToOpenAIStream("m", include_usage=True)
    expected = two.feed(first.feed(A_FULL) + first.close()) + two.close()
    chain = stream_converter("anthropic", "gemini", "m")
    assert chain.feed(A_FULL) + chain.close() == expected


@SPLITS
@given(st.data())
def test_chain_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(G_FULL)), max_size=30))
    whole = stream_converter("gemini", "anthropic", "m")
    expected = whole.feed(G_FULL) + whole.close()
    assert run(stream_converter("gemini", "anthropic", "m"), G_FULL, cuts) == expected


def test_chain_truncation_and_error_event_format():
    conv = stream_converter("gemini", "anthropic", "m")
    conv.feed(gemini_stream([g_chunk([{"text": "cut"}])]))
    with pytest.raises(UpstreamProtocolError):
        conv.close()
    ev = conv.error_event("upstream went away", "server_error")
    assert parse_sse(ev) == [
        ("error", b'{"type":"error","error":{"type":"api_error","message":"upstream went away"}}')
    ]
    conv = stream_converter("anthropic", "gemini", "m")
    with pytest.raises(UpstreamProtocolError):
        conv.feed(b"event: message_start\ndata: {nope}\n\n")


def test_chain_upstream_error_reaches_the_client_in_its_format():
    data = anthropic_stream([("text", ["x"])], end=False) + a_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    conv = stream_converter("anthropic", "gemini", "m")
    res = acc_gemini(conv.feed(data) + conv.close())
    assert res["text"] == "x"
    assert res["errors"] == [{"code": 500, "message": "Overloaded", "status": "INTERNAL"}]


def test_stream_converter_dispatch():
    assert stream_converter("openai", "openai", "m") is None
    assert isinstance(stream_converter("anthropic", "openai", "m"), AnthropicToOpenAIStream)
    assert isinstance(stream_converter("gemini", "openai", "m"), GeminiToOpenAIStream)
    assert isinstance(stream_converter("openai", "anthropic", "m"), OpenAIToAnthropicStream)
    assert isinstance(stream_converter("openai", "gemini", "m"), OpenAIToGeminiStream)
    assert stream_converter("anthropic", "openai", "m", include_usage=True).include_usage is True


# ==================================================================================
# helpers
# ==================================================================================


def _mock_client(body: bytes) -> httpx2.Client:
    """An HTTP client whose every response is `body` as an event stream."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


# ==================================================================================
# fuzz: whatever the upstream sends, the result is output or UpstreamProtocolError
# ==================================================================================

FACTORIES = {
    "anthropic->openai": (A_FULL, lambda: AnthropicToOpenAIStream("m", True)),
    "openai->anthropic": (O_FULL, lambda: OpenAIToAnthropicStream("m")),
    "gemini->openai": (G_FULL, lambda: GeminiToOpenAIStream("m", True)),
    "openai->gemini": (O_FULL, lambda: OpenAIToGeminiStream("m")),
    "anthropic->gemini": (A_FULL, lambda: stream_converter("anthropic", "gemini", "m")),
    "gemini->anthropic": (G_FULL, lambda: stream_converter("gemini", "anthropic", "m")),
}


class _NoGeneralPath(SSEDecoder):
    """A decoder whose general path fails: a whole read must take `feed_data`'s cut."""

    def feed(self, data: bytes) -> list[Any]:
        raise AssertionError("the decoder's general path read a whole stream")


@pytest.mark.parametrize("name", ["anthropic->openai", "openai->anthropic", "gemini->openai"])
def test_a_whole_upstream_read_takes_the_decoders_cut(name: str) -> None:
    """Each direction's upstream format (named events, `data:` with LF, with CRLF)
    read whole goes through `SSEDecoder.feed_data`'s cut, never event objects; the
    output is the one an unmodified converter writes."""
    data, factory = FACTORIES[name]
    conv = factory()
    conv._dec = _NoGeneralPath()
    expected = factory()
    assert norm(conv.feed(data)) == norm(expected.feed(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _mutate_json(value: Any, draw) -> Any:
    """Replace one node of a JSON document by a random JSON value."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate_json(value[key], draw)}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate_json(value[i], draw), *value[i + 1 :]]
    return draw(json_values)


def _convert_or_protocol_error(factory, data: bytes, cuts: list[int]) -> None:
    conv = factory()
    try:
        for piece in _cut(data, cuts):
            conv.feed(piece)
        conv.close()
    except UpstreamProtocolError:
        pass
    conv.error_event("x", "server_error")  # always renderable, whatever state


@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_json_events(name, data):
    source, factory = FACTORIES[name]
    events = parse_sse(source)
    i = data.draw(st.integers(0, len(events) - 1))
    ev_name, payload = events[i]
    if payload != b"[DONE]":
        payload = json.dumps(_mutate_json(json.loads(payload), data.draw)).encode()
    prefix = b"".join(
        (f"event: {n}\n".encode() if n else b"") + b"data: " + p + b"\n\n" for n, p in events[:i]
    )
    suffix = b"".join(
        (f"event: {n}\n".encode() if n else b"") + b"data: " + p + b"\n\n"
        for n, p in events[i + 1 :]
    )
    mutated = (
        prefix
        + (f"event: {ev_name}\n".encode() if ev_name else b"")
        + b"data: "
        + payload
        + b"\n\n"
        + suffix
    )
    cuts = data.draw(st.lists(st.integers(0, len(mutated)), max_size=8))
    _convert_or_protocol_error(factory, mutated, cuts)


@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_bytes(name, data):
    source, factory = FACTORIES[name]
    buf = bytearray(source)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 40))]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=20))
        if not buf:
            break
    cuts = data.draw(st.lists(st.integers(0, len(buf)), max_size=8))
    _convert_or_protocol_error(factory, bytes(buf), cuts)


# The OpenAI -> Anthropic converter has a lane for the hot chunk (one choice, a
# delta of only text, an open text block). Differential: every chunk sequence gives
# the same bytes with that lane as through the general path, which a chunk takes when
# it carries an `"error": null` key (ignored there, since the chunk has choices).
_delta = st.one_of(
    st.builds(lambda t: {"content": t}, st.sampled_from(["", "a", 'q"\\', "\u00e9\U0001f600"])),
    st.just({"role": "assistant", "content": ""}),
    st.just({"content": None}),
    st.just({"reasoning_content": "hm"}),
    st.just({"refusal": "no"}),
    st.just({"content": "x", "refusal": None}),
    st.just(
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}]}
    ),
    st.just({}),
)
_choice = st.builds(
    lambda d, idx, fin: {"index": idx, "delta": d, "finish_reason": fin},
    _delta,
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([None, None, None, "stop"]),
)
_chunk = st.builds(
    lambda choices, usage: {"id": "chatcmpl-1", "choices": choices, "usage": usage},
    st.lists(_choice, min_size=1, max_size=2),
    st.sampled_from([None, None, None, {"prompt_tokens": 3, "completion_tokens": 2}]),
)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(_chunk, max_size=12))
def test_openai_to_anthropic_text_lane_matches_the_general_path(chunks):
    lane = OpenAIToAnthropicStream("m")
    general = OpenAIToAnthropicStream("m")
    out_lane = lane.push(json.loads(json.dumps(chunks)))
    out_general = general.push([dict(c, error=None) for c in json.loads(json.dumps(chunks))])
    assert out_lane == out_general
    assert lane.usage == general.usage and lane._saw_finish() == general._saw_finish()


def test_openai_to_anthropic_text_deltas_in_an_open_block():
    # the chunks the text lane takes: each becomes one documented content_block_delta
    conv = OpenAIToAnthropicStream("m")
    first = conv.push([{"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}])
    more = conv.push([{"choices": [{"index": 0, "delta": {"content": 'b"'}}], "usage": None}])
    events = [(n, json.loads(d)) for n, d in parse_sse(first) + parse_sse(more)]
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]
    assert [d["delta"] for _, d in events[2:]] == [
        {"type": "text_delta", "text": "a"},
        {"type": "text_delta", "text": 'b"'},
    ]
    assert all(d["index"] == 0 for _, d in events[1:])
