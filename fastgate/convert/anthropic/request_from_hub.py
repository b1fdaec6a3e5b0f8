"""Hub (OpenAI Chat Completions) request -> Anthropic Messages request.

Used when a channel speaks Anthropic. System/developer messages are hoisted into
`system`; `tool` messages become `tool_result` blocks, and consecutive same-role
messages are merged, tool results first, because Anthropic wants them that way.
Thinking blocks of earlier turns are dropped (only the model that wrote them can read
them); `reasoning_effort` becomes a `thinking` budget (common.EFFORT_BUDGET).

Dropped on purpose, as hints without effect on the answer's meaning: message `name`,
`store`/`metadata` (OpenAI dashboard), `service_tier`, `prompt_cache_key`,
`safety_identifier`, `user` and image `detail`. Any other parameter Anthropic cannot
honour raises `ConversionError`.
"""

from __future__ import annotations

import base64
from typing import Any

from fastgate.convert.common import (
    EFFORT_BUDGET,
    HUB_REQUEST_NOT_CONVERTED,
    allowed_tool_names,
    hub_tool,
    json_args,
    json_schema_of,
    parse_data_url,
    require_dict,
    require_list,
    stop_list,
    text_of_parts,
)
from fastgate.convert.errors import ConversionError

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# ==================================================================================
# requests: hub -> Anthropic
# ==================================================================================


def _unsupported(key: str, target: str) -> ConversionError:
    return ConversionError(f"parameter {key!r} is not supported by {target} channels")


def openai_request_to_anthropic(
    req: dict[str, Any], default_max_tokens: int = 4096
) -> dict[str, Any]:
    """Anthropic Messages request for a hub (OpenAI chat) request.

    Anthropic requires `max_tokens`; when the client gave none the channel's
    `default_max_tokens` is used (docs/contract.md section 5).
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
        if key in HUB_REQUEST_NOT_CONVERTED or key in ("max_tokens", "max_completion_tokens"):
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
