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
    `message_delta` usage (later non-null fields win), or the body's usage.

    In a stream (`stream=True`) the first usage object is `message_start`'s: until
    another comes, the usage is `partial` (its output count is not the final one)."""

    __slots__ = ("_merged", "_stream", "usage")

    def __init__(self, stream: bool = False) -> None:
        ObjectFinder.__init__(self, b"usage")
        self._merged: dict[str, Any] = {}
        self._stream = stream
        self.usage = Usage()

    def on_object(self, obj: dict[str, Any]) -> None:
        first = not self._merged
        self.usage = u = merge_anthropic_usage(self._merged, obj)
        u.partial = self._stream and first

    def feed(self, data: bytes) -> bytes:
        """Look at `data`; return it (the passthrough forwards it unchanged)."""
        self.find(data)
        return data

    def close(self) -> bytes:
        self.finish()
        return b""
