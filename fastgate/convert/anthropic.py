"""Anthropic Messages <-> hub (OpenAI Chat Completions): requests, responses, streams.

Mapping decisions (each one either preserves meaning or raises `ConversionError`):

- `system` (string or text blocks) <-> system/developer messages, hoisted to the top.
- Anthropic `tool_result` blocks <-> OpenAI `tool` messages; consecutive same-role
  messages are merged, tool results first, because Anthropic wants them that way.
- Images: base64 source <-> `data:` URL; URL source <-> http(s) URL. PDFs: `document`
  base64 source <-> OpenAI `file` part with a data URL; plain-text documents become text.
- `thinking` <-> `reasoning_effort` (budget <-> effort, see common.EFFORT_BUDGET);
  thinking blocks of earlier turns are dropped (only the model that wrote them can read
  them), thinking in responses becomes `reasoning_content` and back.
- `output_config.format` (JSON schema) <-> `response_format: json_schema`.
- An assistant message last in an Anthropic request is a prefill: other APIs would
  answer it instead of continuing it, so it is refused.
- Dropped on purpose, as hints without effect on the answer's meaning: `cache_control`,
  `service_tier`, `speed`, message `name`, `store`/`metadata` (OpenAI dashboard),
  `prompt_cache_key`, `safety_identifier`, image `detail`, and `is_error` on
  tool results (the result text still says what failed; OpenAI has no flag for it).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    EFFORT_BUDGET,
    FromOpenAIStream,
    ToOpenAIStream,
    allowed_tool_names,
    dumps_str,
    effort_from_budget,
    foreign_id,
    hub_id,
    hub_tool,
    json_args,
    json_schema_of,
    load_event_json,
    make_data_url,
    new_id,
    now,
    openai_error_chunk,
    parse_data_url,
    require_dict,
    require_list,
    sse_close,
    sse_feed,
    stop_list,
    text_of_parts,
)
from fastgate.convert.common import (
    MALFORMED as _MALFORMED,
)
from fastgate.convert.errors import (
    ConversionError,
    UpstreamProtocolError,
    anthropic_error_event,
    anthropic_error_type,
    openai_error_type,
)
from fastgate.sse.decoder import SSEDecoder
from fastgate.vocab.usage import (
    Usage,
    anthropic_usage_dict,
    merge_anthropic_usage,
    openai_usage_dict,
    usage_from_anthropic,
    usage_from_openai,
)
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "anthropic_usage_dict",
    "finish_from_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "stop_reason_from_openai",
    "usage_from_anthropic",
]

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
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


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


# ==================================================================================
# requests: hub -> Anthropic
# ==================================================================================

_O_REQ_IGNORED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "user",
    }
)


def _unsupported(key: str, target: str) -> ConversionError:
    return ConversionError(f"parameter {key!r} is not supported by {target} channels")


def openai_request_to_anthropic(
    req: dict[str, Any], default_max_tokens: int = 4096
) -> dict[str, Any]:
    """Anthropic Messages request for a hub (OpenAI chat) request.

    Anthropic requires `max_tokens`; when the client gave none the channel's
    `default_max_tokens` is used (SPEC section 5).
    """
    req = require_dict(req, "request body")
    out: dict[str, Any] = {"model": req.get("model")}
    system_parts, messages = _messages_to_anthropic(require_list(req.get("messages"), "messages"))
    if system_parts:
        if len(system_parts) == 1:
            out["system"] = system_parts[0]["text"]
        else:
            out["system"] = system_parts
    out["messages"] = messages

    max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = req.get("max_tokens")
    out["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
    tools_given = False
    for key, value in req.items():
        if key in _O_REQ_IGNORED or key in ("max_tokens", "max_completion_tokens"):
            continue
        if value is None:
            continue
        if key in ("temperature", "top_p", "top_k"):
            out[key] = value
        elif key == "stop":
            stops = stop_list(value)
            if stops:
                out["stop_sequences"] = stops
        elif key == "n":
            if value != 1:
                raise ConversionError("n > 1 is not supported by Anthropic channels")
        elif key == "tools":
            tools = require_list(value, "tools")
            if tools:
                out["tools"] = [_tool_to_anthropic(t, i) for i, t in enumerate(tools)]
                tools_given = True
        elif key in ("tool_choice", "parallel_tool_calls"):
            continue  # below, once tools are known
        elif key == "response_format":
            _response_format_to_anthropic(require_dict(value, "response_format"), out)
        elif key == "reasoning_effort":
            _effort_to_anthropic(value, out)
        elif (
            (key in ("logprobs", "parallel_tool_calls") and value is False)
            or (key in ("presence_penalty", "frequency_penalty") and value == 0)
            or (key == "logit_bias" and not value)
            or (key == "modalities" and value == ["text"])
        ):
            continue
        elif key in ("functions", "function_call"):
            raise ConversionError(
                f"legacy {key!r} is not supported by Anthropic channels; use 'tools'"
            )
        else:
            raise _unsupported(key, "Anthropic")
    tc = req.get("tool_choice")
    parallel = req.get("parallel_tool_calls")
    if tc is not None or parallel is False:
        choice = _tool_choice_to_anthropic(tc, out) if tc is not None else {"type": "auto"}
        if parallel is False and choice.get("type") != "none":
            choice["disable_parallel_tool_use"] = True
        if tools_given:
            out["tool_choice"] = choice
    if not tools_given:
        # Anthropic rejects tool_use blocks in history without tool definitions, where
        # OpenAI allows them: declare the names used, and forbid calling them, as the
        # client's request (which declared no tools) did.
        names = _tool_names_in_history(messages)
        if names:
            out["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in names]
            out["tool_choice"] = {"type": "none"}
    if req.get("user") and isinstance(req["user"], str):
        out["metadata"] = {"user_id": req["user"]}
    if req.get("stream"):
        out["stream"] = True
    return out


def _tool_names_in_history(messages: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for m in messages:
        if m["role"] == "assistant" and isinstance(m["content"], list):
            for b in m["content"]:
                if b["type"] == "tool_use":
                    names[b["name"]] = None
    return list(names)


def _messages_to_anthropic(
    msgs: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        m = require_dict(m, where)
        role = m.get("role")
        if role in ("system", "developer"):
            content = m.get("content")
            if isinstance(content, list):
                for j, p in enumerate(content):
                    text = text_of_parts([p], f"{where}.content[{j}]")
                    system.append({"type": "text", "text": text})
            else:
                system.append({"type": "text", "text": text_of_parts(content, where)})
            continue
        if role == "user":
            blocks = _user_blocks(m.get("content"), where)
            a_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, where)
            a_role = "assistant"
            if not blocks:
                continue
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ConversionError(f"{where}.tool_call_id must be a string")
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": _tool_content_to_anthropic(m.get("content"), where),
                }
            ]
            a_role = "user"
        elif role == "function":
            raise ConversionError(f"{where}: legacy 'function' messages are not supported")
        else:
            raise ConversionError(f"{where}.role {role!r} is not supported")
        if out and out[-1]["role"] == a_role:
            prev = out[-1]["content"]
            if blocks and blocks[0]["type"] == "tool_result":
                # tool results must lead the user turn
                k = 0
                while k < len(prev) and prev[k]["type"] == "tool_result":
                    k += 1
                prev[k:k] = [b for b in blocks if b["type"] == "tool_result"]
                prev.extend(b for b in blocks if b["type"] != "tool_result")
            else:
                prev.extend(blocks)
        else:
            out.append({"role": a_role, "content": blocks})
    for m in out:  # a lone text block reads better (and caches the same) as a string
        c = m["content"]
        if len(c) == 1 and c[0]["type"] == "text":
            m["content"] = c[0]["text"]
    return system, out


def _media_to_anthropic(url: str, where: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is None:
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise ConversionError(f"{where}: image URL scheme is not supported by Anthropic")
    mime, data = parsed
    if mime not in _IMAGE_TYPES:
        raise ConversionError(
            f"{where}: image type {mime!r} is not supported by Anthropic (jpeg, png, gif, webp)"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def _file_to_anthropic(part: dict[str, Any], where: str) -> dict[str, Any]:
    f = require_dict(part.get("file"), f"{where}.file")
    data = f.get("file_data")
    if not isinstance(data, str):
        raise ConversionError(f"{where}: file_id references are not supported by Anthropic")
    parsed = parse_data_url(data)
    if parsed is None:
        name = f.get("filename") or ""
        mime = "application/pdf" if not name or name.lower().endswith(".pdf") else ""
        parsed = (mime, data)
    mime, b64 = parsed
    if mime == "application/pdf":
        block: dict[str, Any] = {
            "type": "document",
            "source": {"type": "base64", "media_type": mime, "data": b64},
        }
        if isinstance(f.get("filename"), str) and f["filename"] != "document.pdf":
            block["title"] = f["filename"]
        return block
    if mime == "text/plain":
        try:
            text = base64.b64decode(b64).decode("utf-8")
        except ValueError as exc:
            raise ConversionError(f"{where}: text file is not valid base64 UTF-8") from exc
        return {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": text},
        }
    if mime in _IMAGE_TYPES:
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": b64}}
    raise ConversionError(f"{where}: file type {mime!r} is not supported by Anthropic")


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = require_list(content, f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for j, p in enumerate(parts):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        kind = p.get("type")
        if kind == "text":
            if not isinstance(p.get("text"), str):
                raise ConversionError(f"{pw}.text must be a string")
            blocks.append({"type": "text", "text": p["text"]})
        elif kind == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            blocks.append(_media_to_anthropic(url, pw))
        elif kind == "file":
            blocks.append(_file_to_anthropic(p, pw))
        elif kind == "input_audio":
            raise ConversionError(f"{pw}: audio input is not supported by Anthropic channels")
        else:
            raise ConversionError(f"{pw}: content part type {kind!r} is not supported")
    return blocks


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of_parts(m.get("content"), where, ("text", "refusal"))
    if text:
        blocks.append({"type": "text", "text": text})
    elif isinstance(m.get("refusal"), str) and m["refusal"]:
        blocks.append({"type": "text", "text": m["refusal"]})
    if m.get("function_call") is not None:
        raise ConversionError(f"{where}: legacy function_call is not supported; use tool_calls")
    calls = m.get("tool_calls")
    if calls:
        for k, tc in enumerate(require_list(calls, f"{where}.tool_calls")):
            tw = f"{where}.tool_calls[{k}]"
            tc = require_dict(tc, tw)
            if tc.get("type", "function") != "function":
                raise ConversionError(f"{tw}: only function tool calls are supported")
            fn = require_dict(tc.get("function"), f"{tw}.function")
            if not isinstance(tc.get("id"), str) or not isinstance(fn.get("name"), str):
                raise ConversionError(f"{tw} needs id and function.name")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": tc["id"],
                    "name": fn["name"],
                    "input": json_args(fn.get("arguments"), tw),
                }
            )
    return blocks


def _tool_content_to_anthropic(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts = require_list(content, f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for j, p in enumerate(parts):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        if p.get("type") == "text":
            blocks.append({"type": "text", "text": p.get("text") or ""})
        elif p.get("type") == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            blocks.append(_media_to_anthropic(url, pw))
        else:
            raise ConversionError(f"{pw}: part type {p.get('type')!r} is not supported here")
    return blocks


def _tool_to_anthropic(tool: Any, i: int) -> dict[str, Any]:
    name, desc, params = hub_tool(tool, i)
    out: dict[str, Any] = {"name": name}
    if desc is not None:
        out["description"] = desc
    out["input_schema"] = params if params is not None else {"type": "object"}
    return out


def _tool_choice_to_anthropic(tc: Any, out: dict[str, Any]) -> dict[str, Any]:
    if tc == "auto":
        return {"type": "auto"}
    if tc == "required":
        return {"type": "any"}
    if tc == "none":
        return {"type": "none"}
    if isinstance(tc, dict):
        if tc.get("type") == "function":
            fn = require_dict(tc.get("function"), "tool_choice.function")
            if not isinstance(fn.get("name"), str):
                raise ConversionError("tool_choice.function.name must be a string")
            return {"type": "tool", "name": fn["name"]}
        if tc.get("type") == "allowed_tools":
            names, required = allowed_tool_names(tc)
            allowed = set(names)
            out["tools"] = [t for t in out.get("tools", []) if t["name"] in allowed]
            return {"type": "any" if required else "auto"}
    raise ConversionError(f"tool_choice {tc!r} is not supported by Anthropic channels")


def _response_format_to_anthropic(rf: dict[str, Any], out: dict[str, Any]) -> None:
    kind = rf.get("type")
    if kind == "text":
        return
    if kind == "json_schema":
        _, schema = json_schema_of(rf)
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    raise ConversionError(
        f"response_format {kind!r} is not supported by Anthropic channels (use json_schema)"
    )


def _effort_to_anthropic(effort: Any, out: dict[str, Any]) -> None:
    if effort == "none":
        return
    budget = EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    if effort in ("xhigh", "max"):
        budget = 32768
    if budget is None:
        raise ConversionError(f"reasoning_effort {effort!r} is not supported")
    budget = min(budget, out["max_tokens"] - 1)
    if budget < 1024:
        raise ConversionError(
            "reasoning_effort needs max_tokens above 1024 on Anthropic channels "
            "(thinking budget must be at least 1024 and below max_tokens)"
        )
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


# ==================================================================================
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
# streams
# ==================================================================================


class AnthropicToOpenAIStream(ToOpenAIStream):
    """Anthropic Messages SSE in, OpenAI chat-completion chunk SSE out.

    `feed_chunks` / `close_chunks` return the hub chunks (dicts, then `DONE`) so a
    second converter can take them without JSON in between; `feed` / `close` return
    the OpenAI bytes. `usage` follows the upstream's numbers as they arrive.
    """

    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage = Usage()
        self._dec = SSEDecoder(max_event_bytes)
        self._id = ""
        self._created = now()
        self._started = False
        self._ended = False  # message_stop or an error event seen
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._merged: dict[str, Any] = {}  # message_start + message_delta usage

    # -- public (feed / close / error_event: ToOpenAIStream) ----------------------

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        out: list[Any] = []
        for ev in sse_feed(self._dec, data):
            if not self._ended and ev.data:
                self._event(ev.data, out)
        return out

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF (normally none: message_stop already ended the stream)."""
        events = sse_close(self._dec)
        out: list[Any] = []
        for ev in events:
            if not self._ended and ev.data:
                self._event(ev.data, out)
        if not self._ended:
            raise UpstreamProtocolError("upstream stream ended before message_stop")
        return out

    # -- internals ---------------------------------------------------------------

    def _set_usage(self, u: dict[str, Any], start: bool) -> None:
        if start:
            self._merged = {}
        self.usage = merge_anthropic_usage(self._merged, u)

    def _event(self, data: bytes, out: list[Any]) -> None:
        obj = load_event_json(data)
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Anthropic stream event is not a JSON object")
        try:
            self._dispatch(obj, out)
        except _MALFORMED as exc:
            raise UpstreamProtocolError(
                f"malformed Anthropic stream event {obj.get('type')!r}"
            ) from exc

    def _dispatch(self, obj: dict[str, Any], out: list[Any]) -> None:
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._need_start(kind)
            delta = obj["delta"]
            dk = delta["type"]
            if dk == "text_delta":
                text = _str(delta["text"])
                if text:
                    out.append(self._chunk({"content": text}))
            elif dk == "input_json_delta":
                part = _str(delta["partial_json"])
                idx = self._tools.get(obj["index"])
                if idx is None:
                    raise UpstreamProtocolError("input_json_delta for a block that is no tool_use")
                if part:
                    out.append(
                        self._chunk(
                            {"tool_calls": [{"index": idx, "function": {"arguments": part}}]}
                        )
                    )
            elif dk == "thinking_delta" and _str(delta["thinking"]):
                out.append(self._chunk({"reasoning_content": delta["thinking"]}))
            # signature_delta, citations_delta and future delta types carry nothing the
            # chat format can hold
        elif kind == "content_block_start":
            self._need_start(kind)
            block = obj["content_block"]
            bk = block["type"]
            if bk == "text":
                if block.get("text"):
                    out.append(self._chunk({"content": block["text"]}))
            elif bk == "tool_use":
                idx = len(self._tools)
                self._tools[obj["index"]] = idx
                call = {
                    "index": idx,
                    "id": _str(block["id"]),
                    "type": "function",
                    "function": {"name": _str(block["name"]), "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
                if block.get("input"):
                    args = dumps_str(block["input"])
                    out.append(
                        self._chunk(
                            {"tool_calls": [{"index": idx, "function": {"arguments": args}}]}
                        )
                    )
            elif bk == "thinking" and block.get("thinking"):
                out.append(self._chunk({"reasoning_content": block["thinking"]}))
        elif kind == "message_start":
            msg = obj["message"]
            self._id = hub_id(msg.get("id"))
            self._started = True
            self._set_usage(msg.get("usage") or {}, True)
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "message_delta":
            self._need_start(kind)
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._set_usage(usage, False)
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason is not None:
                out.append(self._chunk({}, finish_from_anthropic(reason)))
        elif kind == "message_stop":
            self._need_start(kind)
            self._ended = True
            if self.include_usage:
                out.append(self._usage_chunk())
            out.append(DONE)
        elif kind == "error":
            err = obj.get("error") or {}
            self._ended = True
            message = str(err.get("message") or "upstream error")
            out.append(openai_error_chunk(message, openai_error_type(err.get("type"))))
        # content_block_stop, ping and unknown event types carry nothing to convert

    def _need_start(self, kind: Any) -> None:
        if not self._started:
            raise UpstreamProtocolError(f"Anthropic stream event {kind!r} before message_start")


_EV_MESSAGE_START = b"message_start"
_EV_BLOCK_START = b"content_block_start"
_EV_BLOCK_DELTA = b"content_block_delta"
_EV_BLOCK_STOP = b"content_block_stop"
_EV_MESSAGE_DELTA = b"message_delta"
_EV_MESSAGE_STOP = b"message_stop"


def _str(v: Any) -> str:
    """`v` if it is a string; anything else is a malformed upstream event."""
    if isinstance(v, str):
        return v
    raise UpstreamProtocolError(f"expected a string in the upstream event, got {type(v).__name__}")


_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%b}}\n\n'
)


def _ev(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class OpenAIToAnthropicStream(FromOpenAIStream):
    """OpenAI chat-completion chunk SSE (or hub chunks via `push`) in, Anthropic SSE out.

    OpenAI reports usage in a final chunk after `finish_reason`, so the closing
    `message_delta` (stop reason + usage) waits for that chunk or for `[DONE]`; text
    and tool-call deltas leave as they come.
    """

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.model = model
        self.usage = Usage()
        self._reasoning_tokens = 0
        self._dec = SSEDecoder(max_event_bytes)
        self._started = False
        self._ended = False
        self._next = 0  # next Anthropic block index
        self._open: tuple[str, Any] | None = None  # ("text"|"thinking"|"tool", key)
        self._open_index = -1
        self._tools: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self._stop: str | None = None

    # -- public (feed / close / finish / push: FromOpenAIStream) ------------------

    def error_event(self, message: str, type_: str = "api_error") -> bytes:
        """An Anthropic `event: error` (after a failure once bytes were sent)."""
        return anthropic_error_event(message, type_)

    # -- internals ---------------------------------------------------------------

    def _saw_finish(self) -> bool:
        return self._stop is not None

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        mid = foreign_id(chunk.get("id"), "msg_")
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage_dict(self.usage),
        }
        out.append(_ev(_EV_MESSAGE_START, {"type": "message_start", "message": message}))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                _ev(_EV_BLOCK_STOP, {"type": "content_block_stop", "index": self._open_index})
            )
            self._open = None

    def _open_block(self, kind: str, key: Any, block: dict[str, Any], out: list[bytes]) -> int:
        self._close_block(out)
        idx = self._next
        self._next += 1
        self._open = (kind, key)
        self._open_index = idx
        out.append(
            _ev(
                _EV_BLOCK_START,
                {"type": "content_block_start", "index": idx, "content_block": block},
            )
        )
        return idx

    def _delta(self, idx: int, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            _ev(_EV_BLOCK_DELTA, {"type": "content_block_delta", "index": idx, "delta": delta})
        )

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open[0] != kind:
            block = {"type": "text", "text": ""}
            if kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_block(kind, None, block, out)
        if kind == "thinking":
            self._delta(self._open_index, {"type": "thinking_delta", "thinking": text}, out)
        else:  # the hot event of a stream: the same bytes as _delta, without the dicts
            out.append(_TEXT_DELTA % (self._open_index, orjson.dumps(text)))

    def _chunk(self, c: dict[str, Any], out: list[bytes]) -> None:
        if "error" in c and not c.get("choices"):
            err = c["error"] if isinstance(c["error"], dict) else {"message": str(c["error"])}
            self._ended = True
            out.append(
                anthropic_error_event(
                    str(err.get("message") or "upstream error"),
                    anthropic_error_type(
                        err.get("type") if isinstance(err.get("type"), str) else None
                    ),
                )
            )
            return
        usage = c.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
            self._reasoning_tokens = reasoning_tokens_of(usage)
        if not self._started:
            self._start(c, out)
        choices = c.get("choices") or []
        for ch in choices:
            if ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._text("thinking", reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text("text", content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text("text", refusal, out)
            for tc in delta.get("tool_calls") or ():
                self._tool_delta(tc, out)
            finish = ch.get("finish_reason")
            if finish is not None:
                self._close_block(out)
                self._stop = stop_reason_from_openai(finish)
        if not choices and isinstance(usage, dict) and self._stop is not None:
            self._finalize(out)  # the usage chunk after the finish: nothing else follows

    def _tool_delta(self, tc: dict[str, Any], out: list[bytes]) -> None:
        oi = tc.get("index", 0)
        fn = tc.get("function") or {}
        idx = self._tools.get(oi)
        if idx is None:
            block = {
                "type": "tool_use",
                "id": tc.get("id") or new_id("call_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            idx = self._open_block("tool", oi, block, out)
            self._tools[oi] = idx
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self._delta(idx, {"type": "input_json_delta", "partial_json": args}, out)

    def _finalize(self, out: list[bytes]) -> None:
        if self._ended:
            return
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        self._ended = True
        usage = anthropic_usage_dict(self.usage)
        out.append(
            _ev(
                _EV_MESSAGE_DELTA,
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_ev(_EV_MESSAGE_STOP, {"type": "message_stop"}))
