"""Wire protocol names: what an ingress speaks and what a channel's upstream speaks.

An ingress is one of `INGRESS_PROTOCOLS`; a channel type maps to one of
`PROTOCOLS` (azure, openrouter and mock speak openai). The converters' hub is
`OPENAI`. These strings appear in usage records and config, so they never change.

This module imports nothing of fastgate (layer 1, the vocabulary).
"""

from __future__ import annotations

OPENAI = "openai"
ANTHROPIC = "anthropic"
GEMINI = "gemini"
BEDROCK = "bedrock"
OLLAMA = "ollama"

INGRESS_PROTOCOLS: tuple[str, ...] = (OPENAI, ANTHROPIC, GEMINI)
# Protocols the hub converters speak directly; the others go through one of them.
HUB_PROTOCOLS: frozenset[str] = frozenset(INGRESS_PROTOCOLS)
PROTOCOLS: tuple[str, ...] = (OPENAI, ANTHROPIC, GEMINI, BEDROCK, OLLAMA)

# The event that ends a stream in a protocol (Gemini's streams have none: they
# just end). A client that leaves after receiving it has had its whole answer.
STREAM_END: dict[str, bytes] = {OPENAI: b"data: [DONE]", ANTHROPIC: b"event: message_stop"}


def stream_ended(protocol: str, last_write: bytes) -> bool:
    """Did the client's last write carry the protocol's end-of-stream event?"""
    marker = STREAM_END.get(protocol)
    return marker is not None and marker in last_write[-(len(marker) + 256) :]
