"""Usage from Anthropic Messages responses as they pass, stream or not.

A stream reports usage twice: `message_start` (input and cache counts) and
`message_delta` (the final output count); a body once. Every `"usage": {...}`
found is folded in by the codec's merge rule (later non-null fields win).
"""

from __future__ import annotations

from typing import Any

from fastgate.scan.jsonfind import ObjectFinder
from fastgate.vocab.usage import Usage, merge_anthropic_usage


class AnthropicUsage(ObjectFinder):
    """Anthropic messages, stream or not: merges `message_start` and
    `message_delta` usage (later non-null fields win), or the body's usage."""

    __slots__ = ("_merged", "usage")

    def __init__(self) -> None:
        ObjectFinder.__init__(self, b"usage")
        self._merged: dict[str, Any] = {}
        self.usage = Usage()

    def on_object(self, obj: dict[str, Any]) -> None:
        self.usage = merge_anthropic_usage(self._merged, obj)

    def feed(self, data: bytes) -> bytes:
        """Look at `data`; return it (the passthrough forwards it unchanged)."""
        self.find(data)
        return data

    def close(self) -> bytes:
        self.finish()
        return b""
