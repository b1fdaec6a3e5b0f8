"""Token usage: the numbers one request consumed, and the record it leaves behind.

`Usage` is what the extractors below fill from the upstream's own bytes.
`UsageRecord` is the one row each request produces (SPEC section 5); the data
plane builds it when the response ends and hands it to the log sink.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # all input tokens, cached and cache-write included
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache-read input tokens
    cache_write_tokens: int = 0  # cache-creation input tokens (Anthropic)
    found: bool = False  # the upstream reported usage (False -> estimated or none)


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
