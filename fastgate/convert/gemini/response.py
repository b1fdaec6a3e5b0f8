"""Non-stream Gemini generateContent response <-> hub chat completion.

Gemini has no tool call ids: calls get `call_<response id>_<n>` (stable for a response,
unique across turns) unless Gemini sends a `functionCall.id`; `_call_prefix` and
`_call_part` are shared with the stream converters. Thought parts become
`reasoning_content` and back.
"""

from __future__ import annotations

import re
from typing import Any

from fastgate.convert.common import (
    decode_call_id,
    dumps_str,
    encode_call_id,
    foreign_id,
    hub_id,
    json_args,
    new_id,
    now,
)
from fastgate.convert.errors import (
    ConversionError,
    UpstreamProtocolError,
)
from fastgate.convert.gemini.shared import FINISH_TO_GEMINI, _g, _thoughts, finish_from_gemini
from fastgate.vocab.usage import (
    gemini_usage_dict,
    openai_usage_dict,
    usage_from_gemini,
    usage_from_openai,
)
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]")


# ==================================================================================
# non-stream responses
# ==================================================================================


def _call_prefix(response_id: Any) -> str:
    if isinstance(response_id, str) and response_id:
        return "call_" + _ID_SAFE.sub("", response_id)[:32] + "_"
    return "call_" + new_id("") + "_"


def _candidate_message(
    cand: dict[str, Any], prefix: str, counter: int
) -> tuple[dict[str, Any], int, bool]:
    """(OpenAI message, next call counter, had function calls) for a candidate."""
    content = cand.get("content") or {}
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for p in content.get("parts") or []:
        fc = _g(p, "functionCall", "function_call")
        if fc is not None:
            cid = fc.get("id") if isinstance(fc.get("id"), str) and fc.get("id") else None
            base = cid or f"{prefix}{counter}"
            counter += 1
            sig = _g(p, "thoughtSignature", "thought_signature")
            calls.append(
                {
                    "id": encode_call_id(base, sig if isinstance(sig, str) else None),
                    "type": "function",
                    "function": {
                        "name": fc.get("name") or "",
                        "arguments": dumps_str(fc.get("args") or {}),
                    },
                }
            )
        elif isinstance(p.get("text"), str):
            (thoughts if p.get("thought") else texts).append(p["text"])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, counter, bool(calls)


def gemini_response_to_openai(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Chat completion for a generateContent response (one choice per candidate)."""
    if not isinstance(resp, dict):
        raise UpstreamProtocolError("Gemini response is not a JSON object")
    rid = _g(resp, "responseId", "response_id")
    prefix = _call_prefix(rid)
    choices = []
    counter = 0
    try:
        for pos, cand in enumerate(resp.get("candidates") or []):
            message, counter, had_calls = _candidate_message(cand, prefix, counter)
            choices.append(
                {
                    "index": cand.get("index", pos),
                    "message": message,
                    "finish_reason": finish_from_gemini(
                        _g(cand, "finishReason", "finish_reason"), had_calls
                    ),
                    "logprobs": None,
                }
            )
    except (AttributeError, TypeError) as exc:
        raise UpstreamProtocolError("malformed Gemini response candidate") from exc
    if not choices:
        feedback = _g(resp, "promptFeedback", "prompt_feedback") or {}
        blocked = isinstance(feedback, dict) and _g(feedback, "blockReason", "block_reason")
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "finish_reason": "content_filter" if blocked else "stop",
                "logprobs": None,
            }
        )
    meta = _g(resp, "usageMetadata", "usage_metadata")
    usage = usage_from_gemini(meta)
    return {
        "id": hub_id(rid),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": choices,
        "usage": openai_usage_dict(usage, _thoughts(meta)),
    }


def _message_parts_gemini(msg: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"text": reasoning, "thought": True})
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        parts.append({"text": text})
    if isinstance(msg.get("refusal"), str) and msg["refusal"]:
        parts.append({"text": msg["refusal"]})
    for tc in msg.get("tool_calls") or []:
        parts.append(
            _call_part(
                tc.get("id"),
                (tc.get("function") or {}).get("name"),
                (tc.get("function") or {}).get("arguments"),
            )
        )
    return parts


def _call_part(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    try:
        args = json_args(arguments, "tool call")
    except ConversionError as exc:
        raise UpstreamProtocolError(f"upstream tool call arguments: {exc}") from exc
    fc: dict[str, Any] = {"name": name or "", "args": args}
    part: dict[str, Any] = {"functionCall": fc}
    if isinstance(call_id, str) and call_id:
        base, sig = decode_call_id(call_id)
        fc["id"] = base
        if sig:
            part["thoughtSignature"] = sig
    return part


def openai_response_to_gemini(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """generateContent response for a chat completion (one candidate per choice)."""
    if not isinstance(resp, dict) or not isinstance(resp.get("choices"), list):
        raise UpstreamProtocolError("OpenAI response is not a chat completion")
    candidates = []
    for pos, ch in enumerate(resp["choices"]):
        if not isinstance(ch, dict):
            raise UpstreamProtocolError("OpenAI response choice is not an object")
        parts = _message_parts_gemini(ch.get("message") or {})
        candidates.append(
            {
                "content": {"role": "model", "parts": parts or [{"text": ""}]},
                "finishReason": FINISH_TO_GEMINI.get(ch.get("finish_reason"), "STOP"),
                "index": ch.get("index", pos),
            }
        )
    usage = usage_from_openai(resp.get("usage"))
    out: dict[str, Any] = {
        "candidates": candidates,
        "usageMetadata": gemini_usage_dict(usage, reasoning_tokens_of(resp.get("usage"))),
        "modelVersion": model,
    }
    if isinstance(resp.get("id"), str):
        out["responseId"] = foreign_id(resp["id"])
    return out
