"""Non-stream Anthropic message <-> hub chat completion, and the stop-reason mapping.

`finish_from_anthropic` / `stop_reason_from_openai` live here because both the
non-stream and the stream converters use them. Thinking blocks become
`reasoning_content` and back; usage goes through the vocabulary's codec.
"""

from __future__ import annotations

from typing import Any

from fastgate.convert.common import (
    dumps_str,
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
from fastgate.vocab.usage import (
    anthropic_usage_dict,
    openai_usage_dict,
    usage_from_anthropic,
    usage_from_openai,
)

FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_from_anthropic(stop_reason: Any) -> str:
    """OpenAI `finish_reason` for an Anthropic `stop_reason`."""
    return FINISH_FROM_ANTHROPIC.get(stop_reason, "stop")


def stop_reason_from_openai(finish_reason: Any) -> str:
    """Anthropic `stop_reason` for an OpenAI `finish_reason`."""
    return STOP_FROM_OPENAI.get(finish_reason, "end_turn")


# ==================================================================================
# usage
# ==================================================================================


# The codec is the vocabulary's: `usage_from_anthropic`, `anthropic_usage_dict` and
# `merge_anthropic_usage` (message_start + message_delta) are re-exported here.


# non-stream responses
# ==================================================================================


def anthropic_response_to_openai(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Chat completion for an Anthropic message response."""
    if not isinstance(resp, dict) or not isinstance(resp.get("content"), list):
        raise UpstreamProtocolError("Anthropic response is not a message object")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in resp["content"]:
        if not isinstance(b, dict):
            raise UpstreamProtocolError("Anthropic response content block is not an object")
        kind = b.get("type")
        if kind == "text":
            texts.append(b.get("text") or "")
        elif kind == "thinking":
            reasoning.append(b.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name"),
                        "arguments": dumps_str(b.get("input") or {}),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_anthropic(resp.get("usage"))
    rid = resp.get("id")
    return {
        "id": hub_id(rid),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_from_anthropic(resp.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": openai_usage_dict(usage),
    }


def openai_response_to_anthropic(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Anthropic message for a chat completion (the first choice: requests ask n=1)."""
    if not isinstance(resp, dict) or not isinstance(resp.get("choices"), list):
        raise UpstreamProtocolError("OpenAI response is not a chat completion")
    content: list[dict[str, Any]] = []
    finish = None
    if resp["choices"]:
        choice = resp["choices"][0]
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("OpenAI response choice is not an object")
        msg = choice.get("message") or {}
        finish = choice.get("finish_reason")
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
        text = msg.get("content")
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
        if isinstance(msg.get("refusal"), str) and msg["refusal"]:
            content.append({"type": "text", "text": msg["refusal"]})
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function") or {}
            try:
                args = json_args(fn.get("arguments"), "tool call")
            except ConversionError as exc:
                raise UpstreamProtocolError(f"upstream tool call arguments: {exc}") from exc
            content.append(
                {
                    "type": "tool_use",
                    "id": tc.get("id") or new_id("toolu_"),
                    "name": fn.get("name") or "",
                    "input": args,
                }
            )
    usage = usage_from_openai(resp.get("usage"))
    rid = resp.get("id")
    return {
        "id": foreign_id(rid, "msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_from_openai(finish),
        "stop_sequence": None,
        "usage": anthropic_usage_dict(usage),
    }


# ==================================================================================
