"""The usage codec: token counts read from, and written as, every protocol's usage shape.

One `Usage` holds what one request consumed; `usage_from_*` read it from an
upstream's own usage object (OpenAI chat/completions/embeddings/Responses,
Anthropic, Gemini `usageMetadata`, Bedrock Converse, Ollama) and `*_usage_dict`
write it in a protocol's shape. Everything that counts tokens (the passthrough
scanners, the converters, the mock provider, the gateway) goes through here, so
that a number means the same thing on every route.

One coercion rule, `count`, reads every token count:

- an int is taken as it is; a negative one is 0;
- a float is truncated toward zero (12.0 -> 12, 12.9 -> 12; a fractional token
  count is no real thing, and truncation never bills more than was reported);
  NaN, infinities, negatives and absurd values (>= 1e18) are 0;
- anything else (None, bools, strings such as "12", lists...) is 0.

`Usage.prompt_tokens` is all the input: cached and cache-write tokens included
(docs/contract.md section 5). A usage object that is present but empty still counts as
`found` (the upstream did report usage: zero of it); `found` stays False only
when there was no usage object at all.

OpenAI-compatible servers disagree on field names; `usage_from_openai` accepts:

- `prompt_tokens`/`completion_tokens`, or `input_tokens`/`output_tokens` (the
  Responses API and some compatible servers use those on OpenAI routes), with
  `prompt_tokens_details` or `input_tokens_details`;
- `total_tokens` alone: a side that is missing is `total - the other side`, so a
  usage with only `total_tokens` counts it all as prompt (the shape of
  embeddings usage, where all tokens are input; the gateway bills what the
  upstream reported rather than guessing a split);
- DeepSeek's `prompt_cache_hit_tokens`, OpenRouter's `cache_write_tokens`.

This module imports nothing of fastgate (layer 1, the vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # all input tokens, cached and cache-write included
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache-read input tokens
    cache_write_tokens: int = 0  # cache-creation input tokens (Anthropic, Bedrock)
    found: bool = False  # the upstream reported usage (False -> estimated or none)
    # The service tier the upstream reported ("priority", "flex", "default", "standard"...;
    # "" none): OpenAI's top-level `service_tier`, Anthropic's `usage.service_tier`.
    service_tier: str = ""
    estimated: bool = False  # the counts are the gateway's estimate (scan/estimate.py)
    # The final count has not come yet: an Anthropic stream's `message_start` gave the
    # input and a first output count, its `message_delta` (the final output) is due.
    partial: bool = False


_MAX = 1e18


def count(value: Any) -> int:
    """A token count from JSON, by the one rule of this module (see its docstring)."""
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and 0 < value < _MAX:  # NaN fails both comparisons
        return int(value)
    return 0


def estimate_tokens(value: object) -> int:
    """A rough token count of request text (~4 characters a token, 3 per message),
    for the mock provider, for count-tokens calls no channel can answer."""
    total = 0
    stack = [value]  # a loop, not recursion: a client's JSON may be nested 1000 deep
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += max(1, len(v) // 4)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            total += 3
            stack.extend(x for k, x in v.items() if k not in ("role", "type"))
    return total


# --- OpenAI ---------------------------------------------------------------------------


def usage_from_openai(obj: Any, into: Usage | None = None) -> Usage:
    """`Usage` from an OpenAI `usage` object (chat, completions, embeddings, Responses).

    With `into`, every field of that Usage is overwritten (the last usage object
    seen wins) and it is returned; a non-object `obj` leaves it as it is.
    """
    u = Usage() if into is None else into
    if type(obj) is not dict:
        return u
    get = obj.get
    prompt = get("prompt_tokens")
    if prompt is None:
        prompt = get("input_tokens")
    completion = get("completion_tokens")
    if completion is None:
        completion = get("output_tokens")
    details = get("prompt_tokens_details")
    if type(details) is not dict:
        details = get("input_tokens_details")
    # `count` inlined for the common case (an int, or absent): this runs per request.
    cached = cache_write = 0
    if type(details) is dict:
        v = details.get("cached_tokens")
        cached = v if type(v) is int and v >= 0 else (0 if v is None else count(v))
        v = details.get("cache_write_tokens")
        cache_write = v if type(v) is int and v >= 0 else (0 if v is None else count(v))
    if not cached:
        v = get("prompt_cache_hit_tokens")
        cached = v if type(v) is int and v >= 0 else (0 if v is None else count(v))
    c = completion if type(completion) is int and completion >= 0 else count(completion)
    if prompt is None:
        p = count(get("total_tokens")) - c
        p = p if p > 0 else 0
    else:
        p = prompt if type(prompt) is int and prompt >= 0 else count(prompt)
    if completion is None:
        c = count(get("total_tokens")) - p
        c = c if c > 0 else 0
    u.prompt_tokens = p
    u.completion_tokens = c
    u.cached_tokens = cached
    u.cache_write_tokens = cache_write
    u.found = True
    return u


def reported_service_tier(resp: Any) -> str:
    """The service tier a response object reports: OpenAI's top-level `service_tier`
    (chat, completions, Responses, stream chunks), else Anthropic's
    `usage.service_tier`; "" when there is none."""
    if type(resp) is not dict:
        return ""
    tier = resp.get("service_tier")
    if type(tier) is str:
        return tier
    u = resp.get("usage")
    if type(u) is dict:
        tier = u.get("service_tier")
        if type(tier) is str:
            return tier
    return ""


def openai_reasoning_tokens(obj: Any) -> int:
    """`completion_tokens_details.reasoning_tokens` (or the Responses API's
    `output_tokens_details`) of an OpenAI usage object."""
    if type(obj) is dict:
        details = obj.get("completion_tokens_details")
        if type(details) is not dict:
            details = obj.get("output_tokens_details")
        if type(details) is dict:
            return count(details.get("reasoning_tokens"))
    return 0


def openai_usage_dict(u: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    """An OpenAI chat `usage` object (docs/contract.md section 5: prompt includes cached and
    cache-write).

    `prompt_tokens_details.cache_write_tokens` is set only when the upstream reported
    cache writes (Anthropic); it is the field name the OpenAI SDK models.
    """
    details: dict[str, int] = {"cached_tokens": u.cached_tokens}
    if u.cache_write_tokens:
        details["cache_write_tokens"] = u.cache_write_tokens
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": details,
    }
    if reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


def responses_usage_dict(u: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    """An OpenAI Responses API `usage` object."""
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


# --- Anthropic ------------------------------------------------------------------------


def usage_from_anthropic(obj: Any) -> Usage:
    """`Usage` from an Anthropic `usage` object (docs/contract.md section 5: prompt = input +
    read + write)."""
    u = Usage()
    if type(obj) is not dict:
        return u
    inp = count(obj.get("input_tokens"))
    read = count(obj.get("cache_read_input_tokens"))
    write = count(obj.get("cache_creation_input_tokens"))
    u.prompt_tokens = inp + read + write
    u.completion_tokens = count(obj.get("output_tokens"))
    u.cached_tokens = read
    u.cache_write_tokens = write
    u.found = True
    tier = obj.get("service_tier")
    if type(tier) is str:
        u.service_tier = tier
    return u


def merge_anthropic_usage(merged: dict[str, Any], obj: Any) -> Usage:
    """Fold one more Anthropic usage object into `merged`; the usage so far.

    An Anthropic stream reports usage in `message_start` (input and cache counts,
    a first output count) and again in `message_delta` (the final output count,
    sometimes the input counts again). Later non-null fields win; a null or
    missing field keeps the earlier value.
    """
    if type(obj) is dict:
        for k, v in obj.items():
            if v is not None:
                merged[k] = v
    return usage_from_anthropic(merged)


def anthropic_usage_dict(u: Usage) -> dict[str, int]:
    """An Anthropic `usage` object (docs/contract.md section 5: input = prompt - cached -
    cache write)."""
    return {
        "input_tokens": max(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens, 0),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


# --- Gemini ---------------------------------------------------------------------------


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def usage_from_gemini(obj: Any) -> Usage:
    """`Usage` from `usageMetadata`: thoughts count as output, tool-use prompts as input.

    `promptTokenCount` already includes `cachedContentTokenCount`.
    """
    u = Usage()
    if type(obj) is not dict:
        return u
    u.prompt_tokens = count(_g(obj, "promptTokenCount", "prompt_token_count")) + count(
        _g(obj, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    )
    u.completion_tokens = count(_g(obj, "candidatesTokenCount", "candidates_token_count")) + count(
        _g(obj, "thoughtsTokenCount", "thoughts_token_count")
    )
    u.cached_tokens = count(_g(obj, "cachedContentTokenCount", "cached_content_token_count"))
    u.found = True
    return u


def gemini_thoughts_tokens(obj: Any) -> int:
    """`thoughtsTokenCount` of a `usageMetadata` (OpenAI's reasoning tokens)."""
    if type(obj) is not dict:
        return 0
    return count(_g(obj, "thoughtsTokenCount", "thoughts_token_count"))


def gemini_usage_dict(u: Usage, reasoning_tokens: int = 0) -> dict[str, int]:
    """`usageMetadata` for a Usage (reasoning tokens reported as thoughts)."""
    reasoning = min(reasoning_tokens, u.completion_tokens)
    out = {
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": u.completion_tokens - reasoning,
        "totalTokenCount": u.prompt_tokens + u.completion_tokens,
    }
    if u.cached_tokens:
        out["cachedContentTokenCount"] = u.cached_tokens
    if reasoning:
        out["thoughtsTokenCount"] = reasoning
    return out


# --- Bedrock Converse, Ollama ---------------------------------------------------------


def usage_from_bedrock(obj: Any) -> Usage:
    """`Usage` from a Converse `usage` (prompt = input + cache read + cache write)."""
    u = Usage()
    if type(obj) is not dict:
        return u
    read = count(obj.get("cacheReadInputTokens"))
    write = count(obj.get("cacheWriteInputTokens"))
    u.prompt_tokens = count(obj.get("inputTokens")) + read + write
    u.completion_tokens = count(obj.get("outputTokens"))
    u.cached_tokens = read
    u.cache_write_tokens = write
    u.found = True
    return u


def usage_from_ollama(obj: Any) -> Usage:
    """`Usage` from the counters of a final Ollama object (found only when present)."""
    u = Usage()
    if type(obj) is not dict:
        return u
    if "prompt_eval_count" not in obj and "eval_count" not in obj:
        return u
    u.prompt_tokens = count(obj.get("prompt_eval_count"))
    u.completion_tokens = count(obj.get("eval_count"))
    u.found = True
    return u
