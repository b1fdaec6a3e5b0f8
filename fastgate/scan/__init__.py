"""Sans-IO usage scanners: the upstream's own usage numbers, read as the bytes pass.

`jsonfind.ObjectFinder` is the one JSON-object finder; the per-protocol scanners
are built on it (`openai.OpenAIStreamUsage` works per SSE event, because it may
have to drop one). Each has `feed(bytes)`, `close()` and `usage`; nothing here
does I/O or knows about asyncio.
"""

from fastgate.scan.anthropic import AnthropicUsage
from fastgate.scan.gemini import GeminiUsage
from fastgate.scan.jsonfind import ObjectFinder
from fastgate.scan.openai import OpenAIBodyUsage, OpenAIStreamUsage

__all__ = [
    "AnthropicUsage",
    "GeminiUsage",
    "ObjectFinder",
    "OpenAIBodyUsage",
    "OpenAIStreamUsage",
]
