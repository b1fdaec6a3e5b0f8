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
