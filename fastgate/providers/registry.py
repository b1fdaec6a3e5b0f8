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

__all__ = ["TYPES", "TYPE_KEYS", "ChannelType", "get", "names", "types_using"]

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
# Channel config keys that only some types use (each type's `own_keys`).
TYPE_KEYS: frozenset[str] = frozenset().union(*(t.own_keys for t in _TYPES))


def types_using(key: str) -> tuple[str, ...]:
    """The type names whose channels take `key` (one of TYPE_KEYS)."""
    return tuple(t.name for t in _TYPES if key in t.own_keys)


def get(name: str) -> ChannelType:
    """The entry for a type name; KeyError for a name no module registers."""
    return TYPES[name]


def names() -> tuple[str, ...]:
    """Every type name, in the order the config documents them."""
    return tuple(TYPES)
