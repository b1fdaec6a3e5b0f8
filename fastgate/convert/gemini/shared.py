"""What the Gemini converters share: finish reasons, the camel/snake field reader, the
skip-signature placeholder and the thoughts-token reader.

Gemini accepts snake_case field names as well as camelCase, so every read goes through
`_g`, which takes either.
"""

from __future__ import annotations

from typing import Any

from fastgate.vocab.usage import gemini_thoughts_tokens

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
FINISH_TO_GEMINI = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}
# The documented placeholder for a function call whose signature was lost (history
# from another model): Gemini 3 skips validation for it instead of rejecting the call.
SKIP_SIGNATURE = "skip_thought_signature_validator"


def finish_from_gemini(reason: Any, had_calls: bool) -> str:
    """OpenAI `finish_reason` for a Gemini `finishReason` (a function call -> tool_calls)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if had_calls else "stop"


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


# ==================================================================================
# usage
# ==================================================================================


# The codec is the vocabulary's: `usage_from_gemini` and `gemini_usage_dict` are
# re-exported here.
_thoughts = gemini_thoughts_tokens
