"""Per-event cost of the stream converters (pytest-benchmark; outside the default run).

Run: /work/venv/bin/pytest bench/micro/test_micro_convert.py --benchmark-only -q
Each benchmark converts one realistic stream of EVENTS text deltas (plus the framing
events) fed in 4 KiB reads; divide the mean by `extra_info["events"]` for the cost per
upstream event. Request conversion is measured on a mid-sized tool-using conversation.
"""

from __future__ import annotations

import json

import pytest

from fastgate.convert import (
    AnthropicToOpenAIStream,
    GeminiToOpenAIStream,
    OpenAIToAnthropicStream,
    OpenAIToGeminiStream,
    anthropic_request_to_openai,
    openai_request_to_anthropic,
    openai_request_to_gemini,
    stream_converter,
)

EVENTS = 1000
READ = 4096
WORDS = ["Hello", " world", ", this", " is", " a", " token", " stream", " ✓"]


def _anthropic() -> bytes:
    def ev(obj):
        return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()

    out = [
        ev(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "c",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            }
        ),
        ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
    ]
    out += [
        ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": WORDS[i % 8]},
            }
        )
        for i in range(EVENTS)
    ]
    out += [
        ev({"type": "content_block_stop", "index": 0}),
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": EVENTS},
            }
        ),
        ev({"type": "message_stop"}),
    ]
    return b"".join(out)


def _openai() -> bytes:
    def chunk(delta, finish=None, usage=None):
        c = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "g",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            c["usage"] = usage
        return b"data: " + json.dumps(c).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": WORDS[i % 8]}) for i in range(EVENTS)]
    out += [
        chunk({}, "stop"),
        chunk(
            None,
            usage={"prompt_tokens": 10, "completion_tokens": EVENTS, "total_tokens": EVENTS + 10},
        ),
        b"data: [DONE]\n\n",
    ]
    return b"".join(out)


def _gemini() -> bytes:
    def chunk(text, finish=None):
        cand = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        c = {
            "candidates": [cand],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 5,
                "totalTokenCount": 15,
            },
            "modelVersion": "g",
            "responseId": "r",
        }
        return b"data: " + json.dumps(c).encode() + b"\r\n\r\n"

    return b"".join(chunk(WORDS[i % 8], "STOP" if i == EVENTS - 1 else None) for i in range(EVENTS))


STREAMS = {"anthropic": _anthropic(), "openai": _openai(), "gemini": _gemini()}
FACTORIES = {
    "anthropic->openai": ("anthropic", lambda: AnthropicToOpenAIStream("m", True)),
    "openai->anthropic": ("openai", lambda: OpenAIToAnthropicStream("m")),
    "gemini->openai": ("gemini", lambda: GeminiToOpenAIStream("m", True)),
    "openai->gemini": ("openai", lambda: OpenAIToGeminiStream("m")),
    "anthropic->gemini (chain)": (
        "anthropic",
        lambda: stream_converter("anthropic", "gemini", "m"),
    ),
    "gemini->anthropic (chain)": ("gemini", lambda: stream_converter("gemini", "anthropic", "m")),
}


def _convert(factory, data: bytes) -> int:
    conv = factory()
    n = 0
    for i in range(0, len(data), READ):
        n += len(conv.feed(data[i : i + READ]))
    return n + len(conv.close())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_stream_converter(benchmark, name):
    source, factory = FACTORIES[name]
    data = STREAMS[source]
    benchmark.extra_info["events"] = EVENTS
    out = benchmark(_convert, factory, data)
    assert out > 0


REQUEST = {
    "model": "claude-x",
    "max_tokens": 1024,
    "system": "You are terse.",
    "tools": [
        {
            "name": f"tool{i}",
            "description": "d",
            "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        }
        for i in range(8)
    ],
    "messages": [
        m
        for i in range(10)
        for m in (
            {"role": "user", "content": f"question {i}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": f"t{i}", "name": "tool1", "input": {"a": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}],
            },
            {"role": "assistant", "content": f"answer {i}"},
        )
    ]
    + [{"role": "user", "content": "last"}],
}


def test_request_anthropic_to_openai(benchmark):
    assert benchmark(anthropic_request_to_openai, REQUEST)["messages"]


def test_request_openai_to_anthropic(benchmark):
    hub = anthropic_request_to_openai(REQUEST)
    assert benchmark(openai_request_to_anthropic, hub)["messages"]


def test_request_openai_to_gemini(benchmark):
    hub = anthropic_request_to_openai(REQUEST)
    assert benchmark(openai_request_to_gemini, hub)["contents"]
