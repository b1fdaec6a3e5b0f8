"""Usage from Gemini generateContent responses as they pass.

Streamed (SSE, or a JSON array without alt=sse) or not: each chunk carries the
running totals in `usageMetadata`, so the last one found wins.
"""

from __future__ import annotations

from typing import Any

from fastgate.scan.jsonfind import ObjectFinder
from fastgate.vocab.usage import Usage, usage_from_gemini


class GeminiUsage(ObjectFinder):
    """Gemini generateContent, streamed or not: the last `usageMetadata` wins."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        ObjectFinder.__init__(self, b"usageMetadata")
        self.usage = Usage()

    def on_object(self, obj: dict[str, Any]) -> None:
        self.usage = usage_from_gemini(obj)

    def feed(self, data: bytes) -> bytes:
        """Look at `data`; return it (the passthrough forwards it unchanged)."""
        self.find(data)
        return data

    def close(self) -> bytes:
        self.finish()
        return b""
