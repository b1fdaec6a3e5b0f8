"""Micro-benchmarks of the hot-path SSE decoder and OpenAI usage scanners.

Run: `pytest bench/micro -q --benchmark-only` (from the repository root). Each
benchmark records the number of feeds and events it processes; the summary at
the end (bench/micro/conftest.py) prints the cost per feed and per event.
"""

from __future__ import annotations

import orjson
import pytest

from fastgate.scan.openai import OpenAIBodyUsage, OpenAIStreamUsage
from fastgate.sse.decoder import SSEDecoder

N_CHUNKS = 200
PIECE = 1024


def chat_stream(n: int = N_CHUNKS, include_usage: bool = True) -> bytes:
    """A realistic chat.completions stream: role chunk, n-2 content chunks, stop, usage."""
    base = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
    }
    events = []
    for i in range(n):
        if i == 0:
            delta = {"role": "assistant", "content": "", "refusal": None}
        elif i == n - 1:
            delta = {}
        else:
            delta = {"content": f" word{i}"}
        chunk = dict(base)
        chunk["choices"] = [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": "stop" if i == n - 1 else None,
            }
        ]
        if include_usage:
            chunk["usage"] = None
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if include_usage:
        chunk = dict(base)
        chunk["choices"] = []
        chunk["usage"] = {
            "prompt_tokens": 1200,
            "completion_tokens": n,
            "total_tokens": 1200 + n,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def pieces(data: bytes, size: int = PIECE) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def chat_body(content_bytes: int) -> bytes:
    """A non-streamed chat completion whose message content has about `content_bytes`."""
    words = " ".join(f"word{i}" for i in range(content_bytes // 8))
    body = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": words[:content_bytes], "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
    }
    return orjson.dumps(body)


STREAM = chat_stream()
STREAM_PIECES = pieces(STREAM)
STREAM_EVENTS = STREAM.count(b"\n\n")


def record(benchmark, feeds: int, events: int) -> None:
    benchmark.extra_info["feeds"] = feeds
    benchmark.extra_info["events"] = events
    benchmark.extra_info["bytes"] = sum(len(p) for p in STREAM_PIECES)


class _Floor:
    """What any sans-IO core costs at least: a method call and one memchr per feed."""

    def feed(self, data: bytes) -> int:
        return data.find(b"\r")


def test_floor_call_and_memchr_1k_pieces(benchmark) -> None:
    """Calibration row: compare the others against it (the machine is shared and noisy)."""

    def run() -> int:
        f = _Floor()
        n = 0
        for p in STREAM_PIECES:
            n += f.feed(p)
        return n

    record(benchmark, len(STREAM_PIECES), STREAM_EVENTS)
    assert benchmark(run) == -len(STREAM_PIECES)


def test_decoder_stream_1k_pieces(benchmark) -> None:
    def run() -> int:
        dec = SSEDecoder()
        n = 0
        for p in STREAM_PIECES:
            n += len(dec.feed(p))
        return n + len(dec.close())

    record(benchmark, len(STREAM_PIECES), STREAM_EVENTS)
    assert benchmark(run) == STREAM_EVENTS


def test_decoder_stream_event_per_feed(benchmark) -> None:
    """The common upstream shape: each read holds exactly one event."""
    chunks = [e + b"\n\n" for e in STREAM.split(b"\n\n")[:-1]]

    def run() -> int:
        dec = SSEDecoder()
        n = 0
        for p in chunks:
            n += len(dec.feed(p))
        return n

    record(benchmark, len(chunks), len(chunks))
    assert benchmark(run) == len(chunks)


def test_stream_usage_observe_1k_pieces(benchmark) -> None:
    def run() -> int:
        su = OpenAIStreamUsage()
        for p in STREAM_PIECES:
            su.feed(p)
        su.close()
        return su.usage.completion_tokens

    record(benchmark, len(STREAM_PIECES), STREAM_EVENTS)
    assert benchmark(run) == N_CHUNKS


def test_stream_usage_observe_event_per_feed(benchmark) -> None:
    chunks = [e + b"\n\n" for e in STREAM.split(b"\n\n")[:-1]]

    def run() -> int:
        su = OpenAIStreamUsage()
        for p in chunks:
            su.feed(p)
        su.close()
        return su.usage.completion_tokens

    record(benchmark, len(chunks), len(chunks))
    assert benchmark(run) == N_CHUNKS


def test_stream_usage_strip_1k_pieces(benchmark) -> None:
    def run() -> int:
        su = OpenAIStreamUsage(strip_usage_chunk=True)
        n = 0
        for p in STREAM_PIECES:
            n += len(su.feed(p))
        n += len(su.close())
        assert su.usage.found
        return n

    record(benchmark, len(STREAM_PIECES), STREAM_EVENTS)
    usage_event = STREAM.split(b"\n\n")[-3] + b"\n\n"
    assert benchmark(run) == len(STREAM) - len(usage_event)


def test_stream_usage_strip_event_per_feed(benchmark) -> None:
    chunks = [e + b"\n\n" for e in STREAM.split(b"\n\n")[:-1]]

    def run() -> int:
        su = OpenAIStreamUsage(strip_usage_chunk=True)
        n = 0
        for p in chunks:
            n += len(su.feed(p))
        return n

    record(benchmark, len(chunks), len(chunks))
    assert benchmark(run) == len(STREAM) - len(chunks[-2])


@pytest.mark.parametrize("size", [2 * 1024, 200 * 1024], ids=["2KiB", "200KiB"])
def test_body_usage(benchmark, size: int) -> None:
    body = chat_body(size)
    # a body arrives in reads of up to 64 KiB
    chunks = pieces(body, 64 * 1024)

    def run() -> int:
        bu = OpenAIBodyUsage()
        for p in chunks:
            bu.feed(p)
        return bu.close().prompt_tokens

    benchmark.extra_info["feeds"] = len(chunks)
    benchmark.extra_info["bytes"] = len(body)
    assert benchmark(run) == 1200
