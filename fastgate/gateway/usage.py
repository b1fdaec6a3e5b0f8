"""Shim: usage moved to the vocabulary and the sans-IO scanners.

- `Usage`, `usage_from_openai`, `estimate_tokens`: `fastgate.vocab.usage` (the codec);
- `OpenAIStreamUsage`, `OpenAIBodyUsage`: `fastgate.scan.openai`.

Kept for `gateway/handler.py`'s import (remove once it imports those modules).
`UsageRecord` is still defined here: records are tuples in
`fastgate.vocab.record.RECORD_FIELDS` order, but the store and its tests still
accept / build this dataclass (same field names and order); remove it when the
store takes only tuples and dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgate.scan.openai import OpenAIBodyUsage, OpenAIStreamUsage
from fastgate.vocab.usage import Usage, estimate_tokens, usage_from_openai

__all__ = [
    "OpenAIBodyUsage",
    "OpenAIStreamUsage",
    "Usage",
    "UsageRecord",
    "estimate_tokens",
    "usage_from_openai",
]


@dataclass(slots=True)
class UsageRecord:
    ts: float  # unix time when the request arrived
    request_id: str
    key_name: str
    group: str
    ingress: str  # "openai" | "anthropic" | "gemini"
    channel: str
    provider: str
    model: str  # as requested (after alias resolution: the public name)
    upstream_model: str
    stream: bool
    status: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    estimated: bool
    cost_micros: int  # integer micro-dollars
    latency_ms: float
    ttfb_ms: float
    attempts: int
    client_ip: str
    tag: str  # the client's x-fastgate-tag header
    cache_hit: bool = False
    uid: str = ""  # unique per record (the gateway's own id): replays never duplicate a row
