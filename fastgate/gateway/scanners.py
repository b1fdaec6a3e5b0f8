"""Shim: the usage scanners live in `fastgate.scan` (sans-IO layer).

Kept only for `gateway/handler.py`'s import; remove once it imports `fastgate.scan`.
"""

from fastgate.scan.anthropic import AnthropicUsage
from fastgate.scan.gemini import GeminiUsage

__all__ = ["AnthropicUsage", "GeminiUsage"]
