"""Anthropic Messages request -> hub (OpenAI Chat Completions) request.

Used when a client speaks Anthropic. `system` becomes system messages at the top;
`tool_result` blocks become `tool` messages; base64/URL images and `document` blocks
become data URLs / `file` parts; `thinking` becomes `reasoning_effort`;
`output_config.format` becomes `response_format: json_schema`. A trailing assistant
message (prefill) is refused: other APIs would answer it instead of continuing it.

Dropped on purpose, as hints without effect on the answer's meaning: `cache_control`,
`service_tier`, `speed`, and `is_error` on tool results (the result text still says
what failed; OpenAI has no flag for it).
"""

from __future__ import annotations

from typing import Any

from fastgate.convert.common import (
    dumps_str,
    effort_from_budget,
    make_data_url,
    require_dict,
    require_list,
    stop_list,
)
from fastgate.convert.errors import ConversionError

# ==================================================================================
# requests: Anthropic -> hub
# ==================================================================================

_A_REQ_KEYS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
    }
)
_A_REQ_IGNORED = frozenset({"cache_control", "service_tier", "speed"})


def anthropic_request_to_openai(
    req: dict[str, Any], max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """Hub request for an Anthropic Messages request body.

    `max_tokens_field` names the hub's limit field (`max_completion_tokens` for OpenAI
    reasoning models, which reject `max_tokens`).
    """
    req = require_dict(req, "request body")
    for key in req:
        if key not in _A_REQ_KEYS and key not in _A_REQ_IGNORED:
            raise ConversionError(
                f"parameter {key!r} is not supported when this model is served "
                "through a non-Anthropic channel"
            )
    out: dict[str, Any] = {"model": req.get("model")}
    messages: list[dict[str, Any]] = []
    system = req.get("system")
    if system is not None and system != "" and system != []:
        messages.append({"role": "system", "content": _system_to_openai(system)})
    msgs = require_list(req.get("messages"), "messages")
    for i, m in enumerate(msgs):
        m = require_dict(m, f"messages[{i}]")
        role = m.get("role")
        where = f"messages[{i}]"
        if role == "user":
            messages.extend(_user_to_openai(m.get("content"), where))
        elif role == "assistant":
            if i == len(msgs) - 1:
                raise ConversionError(
                    "a final assistant message (response prefill) is not supported "
                    "by this model's channel"
                )
            messages.append(_assistant_to_openai(m.get("content"), where))
        else:
            raise ConversionError(f"{where}.role must be 'user' or 'assistant'")
    out["messages"] = messages

    if req.get("max_tokens") is not None:
        out[max_tokens_field] = req["max_tokens"]
    for key in ("temperature", "top_p", "top_k"):
        if req.get(key) is not None:
            out[key] = req[key]
    if req.get("stop_sequences"):
        out["stop"] = stop_list(req["stop_sequences"], "stop_sequences")
    if req.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    meta = req.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        out["user"] = meta["user_id"]

    tools = req.get("tools")
    if tools:
        out["tools"] = [_tool_to_openai(t, i) for i, t in enumerate(require_list(tools, "tools"))]
    tc = req.get("tool_choice")
    if tc is not None:
        _tool_choice_to_openai(require_dict(tc, "tool_choice"), out)

    thinking = req.get("thinking")
    if thinking is not None:
        thinking = require_dict(thinking, "thinking")
        kind = thinking.get("type")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int):
                raise ConversionError("thinking.budget_tokens must be an integer")
            out["reasoning_effort"] = effort_from_budget(budget)
        elif kind not in ("disabled", "adaptive"):
            raise ConversionError(f"thinking.type {kind!r} is not supported by this channel")
    oc = req.get("output_config")
    if oc is not None:
        _output_config_to_openai(require_dict(oc, "output_config"), out)
    return out


def _system_to_openai(system: Any) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    blocks = require_list(system, "system")
    parts = []
    for i, b in enumerate(blocks):
        b = require_dict(b, f"system[{i}]")
        if b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise ConversionError(f"system[{i}] must be a text block")
        parts.append({"type": "text", "text": b["text"]})
    if len(parts) == 1:
        return parts[0]["text"]
    return parts


def _image_to_openai(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = require_dict(block.get("source"), f"{where}.source")
    kind = src.get("type")
    if kind == "base64":
        mime, data = src.get("media_type"), src.get("data")
        if not isinstance(mime, str) or not isinstance(data, str):
            raise ConversionError(f"{where}.source needs media_type and data")
        return {"type": "image_url", "image_url": {"url": make_data_url(mime, data)}}
    if kind == "url" and isinstance(src.get("url"), str):
        return {"type": "image_url", "image_url": {"url": src["url"]}}
    raise ConversionError(f"{where}: image source type {kind!r} is not supported by this channel")


def _document_to_openai(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = require_dict(block.get("source"), f"{where}.source")
    kind = src.get("type")
    if kind == "base64" and isinstance(src.get("data"), str):
        mime = src.get("media_type") or "application/pdf"
        title = block.get("title")
        name = title if isinstance(title, str) and title else "document.pdf"
        return {
            "type": "file",
            "file": {"filename": name, "file_data": make_data_url(mime, src["data"])},
        }
    if kind == "text" and isinstance(src.get("data"), str):
        return {"type": "text", "text": src["data"]}
    raise ConversionError(
        f"{where}: document source type {kind!r} is not supported by this channel"
    )


def _tool_result_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    blocks = require_list(content, f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        b = require_dict(b, f"{where}.content[{j}]")
        kind = b.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": b.get("text", "")})
        elif kind == "image":
            parts.append(_image_to_openai(b, f"{where}.content[{j}]"))
        else:
            raise ConversionError(
                f"{where}.content[{j}]: {kind!r} blocks in tool results are not supported "
                "by this channel"
            )
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _user_to_openai(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    blocks = require_list(content, f"{where}.content")
    tool_msgs: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        bw = f"{where}.content[{j}]"
        b = require_dict(b, bw)
        kind = b.get("type")
        if kind == "text":
            if not isinstance(b.get("text"), str):
                raise ConversionError(f"{bw}.text must be a string")
            parts.append({"type": "text", "text": b["text"]})
        elif kind == "image":
            parts.append(_image_to_openai(b, bw))
        elif kind == "document":
            parts.append(_document_to_openai(b, bw))
        elif kind == "tool_result":
            if not isinstance(b.get("tool_use_id"), str):
                raise ConversionError(f"{bw}.tool_use_id must be a string")
            tool_msgs.append(
                {
                    "role": "tool",
                    "tool_call_id": b["tool_use_id"],
                    "content": _tool_result_content(b.get("content"), bw),
                }
            )
        else:
            raise ConversionError(f"{bw}: content block type {kind!r} is not supported here")
    out = tool_msgs
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_to_openai(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    blocks = require_list(content, f"{where}.content")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        bw = f"{where}.content[{j}]"
        b = require_dict(b, bw)
        kind = b.get("type")
        if kind == "text":
            texts.append(b.get("text") or "")
        elif kind == "tool_use":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                raise ConversionError(f"{bw}: tool_use needs id and name")
            calls.append(
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": dumps_str(b.get("input") or {})},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # readable only by the model that wrote it
        else:
            raise ConversionError(f"{bw}: content block type {kind!r} is not supported here")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""
    return msg


def _tool_to_openai(tool: Any, i: int) -> dict[str, Any]:
    tool = require_dict(tool, f"tools[{i}]")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise ConversionError(
            f"tools[{i}]: server tool {kind!r} is only available on Anthropic channels"
        )
    name = tool.get("name")
    if not isinstance(name, str):
        raise ConversionError(f"tools[{i}].name must be a string")
    fn: dict[str, Any] = {"name": name}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    schema = tool.get("input_schema")
    fn["parameters"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def _tool_choice_to_openai(tc: dict[str, Any], out: dict[str, Any]) -> None:
    kind = tc.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        if not isinstance(tc.get("name"), str):
            raise ConversionError("tool_choice.name must be a string")
        out["tool_choice"] = {"type": "function", "function": {"name": tc["name"]}}
    else:
        raise ConversionError(f"tool_choice.type {kind!r} is not supported")
    if tc.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False


def _output_config_to_openai(oc: dict[str, Any], out: dict[str, Any]) -> None:
    for key, value in oc.items():
        if value is None:
            continue
        if key == "effort":
            if value not in ("low", "medium", "high", "xhigh", "max"):
                raise ConversionError(f"output_config.effort {value!r} is not supported")
            out["reasoning_effort"] = value
        elif key == "format":
            fmt = require_dict(value, "output_config.format")
            if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
                raise ConversionError("output_config.format must be a json_schema format")
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
            }
        else:
            raise ConversionError(f"output_config.{key} is not supported by this channel")
