"""The mock's answers in Anthropic's Messages wire format (`protocol = "anthropic"`).

`POST /v1/messages` (whole, or the SSE event sequence: message_start, ping,
content_block_start / _delta / _stop per block, message_delta, message_stop) and
`POST /v1/messages/count_tokens`; errors are Anthropic error documents. Text is
one `text` block streamed as `text_delta`s; tool calls are `tool_use` blocks
streamed as `input_json_delta`s, a token at a time. Stop reasons: `end_turn`,
`stop_sequence` (with the sequence), `max_tokens`, `tool_use`.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.providers.mock_answer import Choice, answer, spec_from_anthropic
from fastgate.vocab.usage import estimate_tokens

__all__ = ["count_tokens", "error", "messages"]

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
Answer = tuple[int, list, list[bytes]]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def error(status: int, message: str) -> Answer:
    kind = _ERROR_TYPES.get(status, "api_error")
    doc = {"type": "error", "error": {"type": kind, "message": message}}
    return status, _JSON_HEADERS, [orjson.dumps(doc)]


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _usage(prompt: int, output: int) -> dict[str, int]:
    return {
        "input_tokens": prompt,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _stop_reason(c: Choice) -> str:
    return "stop_sequence" if c.stop_sequence is not None else _STOP[c.finish]


def _blocks(c: Choice) -> list[dict[str, Any]]:
    if c.calls:
        return [{"type": "tool_use", "id": k.id, "name": k.name, "input": k.value} for k in c.calls]
    return [{"type": "text", "text": c.text or ""}]


def messages(obj: dict[str, Any], model: str, rid: str) -> Answer:
    spec = spec_from_anthropic(obj)
    (c,) = answer(spec, rid, "toolu_")
    message = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(c),
        "stop_reason": _stop_reason(c),
        "stop_sequence": c.stop_sequence,
        "usage": _usage(spec.prompt_tokens, c.tokens),
    }
    if obj.get("stream") is not True:
        return 200, _JSON_HEADERS, [orjson.dumps(message)]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = _usage(spec.prompt_tokens, 0)
    out = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in c.calls[i].pieces]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in c.pieces]
        out.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": opened},
            )
        )
        out.extend(
            _event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": c.stop_sequence}
    out.append(
        _event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": c.tokens}},
        )
    )
    out.append(_event("message_stop", {"type": "message_stop"}))
    return 200, _SSE_HEADERS, out


def count_tokens(obj: dict[str, Any]) -> Answer:
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        return error(400, "messages: Field required")
    n = estimate_tokens(msgs) + estimate_tokens(obj.get("system") or "")
    tools = obj.get("tools")
    if isinstance(tools, list) and tools:
        n += estimate_tokens(tools)
    return 200, _JSON_HEADERS, [orjson.dumps({"input_tokens": n})]
