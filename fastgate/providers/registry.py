"""The channel types, by name: the one place that lists them.

Adding a provider is one module (a `ChannelType` instance, usually a subclass that
overrides what differs from OpenAI) and one line in `_TYPES` below. Everything that
used to compare a channel's type name asks the entry instead:
`registry.get(channel.type).protocol`, `.auth_headers(cfg)`, `.converted_request(...)`.
"""

from __future__ import annotations

from types import MappingProxyType

from fastgate.providers import anthropic, azure, bedrock, gemini, mock, ollama, openai
from fastgate.providers.base import ChannelType

__all__ = ["TYPES", "ChannelType", "get", "names"]

_TYPES: tuple[ChannelType, ...] = (
    openai.TYPE,
    azure.TYPE,
    anthropic.TYPE,
    gemini.TYPE,
    bedrock.TYPE,
    ollama.TYPE,
    openai.OPENROUTER,
    mock.TYPE,
)

TYPES: MappingProxyType[str, ChannelType] = MappingProxyType({t.name: t for t in _TYPES})


def get(name: str) -> ChannelType:
    """The entry for a type name; KeyError for a name no module registers."""
    return TYPES[name]


def names() -> tuple[str, ...]:
    """Every type name, in the order the config documents them."""
    return tuple(TYPES)
