"""Token estimates for a response whose upstream reported no usage (docs/contract.md section 5).

Used only at the end of a request that got a 2xx from its upstream and no usage
object (an upstream that reports none, a stream that ended or was cut before
its usage event), or only a partial one (an Anthropic stream cut after
`message_start`: its input counts are kept, the output is estimated): never on
a request whose usage was read, so it costs the normal case nothing but the
writer's byte count (`ResponseWriter.frame`).

The estimator, one rule for both sides: **tokens = ceil(characters / 4)**, where
characters are counted (Python `len`, code points) over the text fields only:

- prompt: the client's request body, the string values (at any depth; keys not
  counted) under `messages`, `prompt`, `input`, `system`, `instructions`,
  `tools`, `functions` (OpenAI and Anthropic) and `contents`,
  `systemInstruction`, `tools` (Gemini), leaving out values under keys that
  carry no text the model reads as such (`role`, `type`, ids, `cache_control`,
  and image / audio / file data: `image_url`, `input_audio`, `source`,
  `inline_data`, `file_data`...);
- completion: the text the client was sent, i.e. the string values of `content`,
  `text`, `arguments`, `partial_json`, `thinking`, `reasoning_content`,
  `refusal`, and the compact JSON of `input` / `args` objects (Anthropic tool
  use, Gemini function calls) in the response body, or in each stream event
  (an OpenAI Responses stream counts its `*.delta` events only, since its
  `*.done` events repeat the text). The writer keeps the first `SAMPLE` bytes
  sent to the client and counts them all; when more was sent than kept, the
  characters found in the kept bytes are scaled by (bytes sent / bytes kept),
  rounded up.

Only generation endpoints are estimated (OpenAI chat/completions, completions,
responses, embeddings; Anthropic messages; Gemini generateContent and
streamGenerateContent); anything else without usage stays at 0 tokens.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from fastgate.scan.openai import TIER_KEY, tier_at
from fastgate.vocab.usage import Usage

SAMPLE = 16 * 1024  # bytes of the client's response kept for an estimate
CHARS_PER_TOKEN = 4

ESTIMATED_PATHS = frozenset(
    {
        b"/v1/chat/completions",
        b"/v1/completions",
        b"/v1/responses",
        b"/v1/embeddings",
        b"/v1/messages",
    }
)
_PROMPT_FIELDS = (
    "messages",
    "prompt",
    "input",
    "system",
    "instructions",
    "tools",
    "functions",
    "contents",
    "systemInstruction",
    "system_instruction",
)
_NOT_TEXT = frozenset(
    {
        "role",
        "type",
        "id",
        "tool_call_id",
        "tool_use_id",
        "call_id",
        "cache_control",
        "image_url",
        "input_audio",
        "source",
        "inline_data",
        "inlineData",
        "file_data",
        "fileData",
        "file",
        "signature",
    }
)
_TEXT_KEYS = frozenset(
    {
        "content",
        "text",
        "arguments",
        "partial_json",
        "thinking",
        "reasoning_content",
        "refusal",
    }
)
_OBJECT_KEYS = frozenset({"input", "args"})
# A text field's string in bytes that may be cut (a truncated sample): the
# string's body, with or without its closing quote.
_TEXT_STRING = re.compile(
    rb'"(?:content|text|arguments|partial_json|thinking|reasoning_content|refusal)"'
    rb'[ \t\r\n]*:[ \t\r\n]*"((?:[^"\\]|\\.)*)'
)


def tokens(chars: int) -> int:
    """ceil(chars / 4)."""
    return -(-chars // CHARS_PER_TOKEN)


def estimable(path: bytes) -> bool:
    """Is `path` a generation endpoint (one whose missing usage is estimated)?"""
    return path in ESTIMATED_PATHS or path.endswith(
        (b":generateContent", b":streamGenerateContent")
    )


def estimate_usage(
    path: bytes, request: bytes, stream: bool, sample: Any, sent: int, reported: Usage
) -> Usage:
    """The estimated usage of a request whose upstream reported none (`reported`
    is returned as it is for a path that is not a generation endpoint).

    `sample`: the first chunks sent to the client (bytes, or a list of them);
    `sent`: how many bytes were sent in all."""
    if not estimable(path):
        return reported
    if type(sample) is not bytes:
        sample = b"".join(sample)
    u = Usage(found=True, estimated=True)
    if reported.found:  # partial: the input counts came (message_start), the output not
        u.prompt_tokens = reported.prompt_tokens
        u.cached_tokens = reported.cached_tokens
        u.cache_write_tokens = reported.cache_write_tokens
    else:
        u.prompt_tokens = tokens(prompt_chars(request))
    chars = response_chars(sample, stream)
    kept = len(sample)
    if sent > kept and kept:
        chars = -(-chars * sent // kept)
    u.completion_tokens = tokens(chars)
    i = sample.rfind(TIER_KEY)
    tier = tier_at(sample, i) if i >= 0 else None
    u.service_tier = tier if tier is not None else reported.service_tier
    return u


def prompt_chars(body: bytes) -> int:
    """Characters of the request's text fields (module docstring)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if type(obj) is not dict:
        return 0
    return sum(_text(obj[k]) for k in _PROMPT_FIELDS if k in obj)


def _text(v: Any) -> int:
    if type(v) is str:
        return len(v)
    if type(v) is list:
        return sum(_text(x) for x in v)
    if type(v) is dict:
        return sum(_text(x) for k, x in v.items() if k not in _NOT_TEXT)
    return 0


def response_chars(raw: bytes, stream: bool) -> int:
    """Characters of the text the client was sent in `raw` (module docstring)."""
    if stream and b"data:" in raw:
        n = 0
        for line in raw.splitlines():
            if not line.startswith(b"data:"):
                continue
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue  # [DONE], or the event the sample cut
            if type(obj) is dict:
                n += _event_chars(obj)
        return n
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _cut_chars(raw)
    return _answer(obj)


def _event_chars(obj: dict[str, Any]) -> int:
    kind = obj.get("type")
    if type(kind) is str and kind.startswith("response."):  # OpenAI Responses
        delta = obj.get("delta")
        return len(delta) if kind.endswith(".delta") and type(delta) is str else 0
    return _answer(obj)


def _answer(v: Any, key: str = "") -> int:
    if type(v) is str:
        return len(v) if key in _TEXT_KEYS else 0
    if type(v) is list:
        return sum(_answer(x, key) for x in v)
    if type(v) is dict:
        if key in _OBJECT_KEYS:
            return len(orjson.dumps(v).decode()) if v else 0
        return sum(_answer(x, k) for k, x in v.items() if k not in _NOT_TEXT)
    return 0


def _cut_chars(raw: bytes) -> int:
    """A body the sample cut (or a Gemini JSON array still open): the text fields'
    strings found by pattern, the last one possibly unterminated."""
    n = 0
    for m in _TEXT_STRING.finditer(raw):
        body = m.group(1)
        try:
            n += len(orjson.loads(b'"' + body + b'"'))
        except orjson.JSONDecodeError:
            n += len(body.decode("utf-8", "replace"))
    return n
