"""Amazon Bedrock Converse <-> hub (OpenAI chat) conversion, sans-IO.

Bedrock's runtime API speaks Converse (JSON) and ConverseStream (AWS event-stream
binary framing, `fastgate.wire.eventstream`; its decoder is `bedrock_stream.py`). These converters sit with the other
protocols' converters so every hub conversion is in one package; where a request
goes and how it is signed is the channel type's business (`fastgate.providers.bedrock`).

Conversion decisions (each preserves meaning or raises `ConversionError`):

- system/developer messages -> `system` text blocks; tool messages -> `toolResult`
  blocks in a user turn (results first, consecutive same-role turns merged, as Bedrock
  wants strictly alternating roles); images must be `data:` URLs (or `s3://` URIs);
  PDF and office files -> `document` blocks.
- Blank text blocks are dropped (Converse rejects them in messages); an empty tool
  result becomes one empty text block (accepted, unlike an empty list for some models).
- Converse has no "none" tool choice: the tools are withheld. When the history holds
  tool calls but no tool may be called, a placeholder tool is declared, because
  Converse refuses toolUse/toolResult blocks without a `toolConfig`.
- Tool call ids outside Converse's `[a-zA-Z0-9_.:-]{1,64}` (Gemini ids carrying a
  thought signature) are replaced by a stable hash, the same in calls and results.
- `reasoning_effort` -> Anthropic's `thinking` in `additionalModelRequestFields`
  (Claude models); `response_format: json_schema` -> `outputConfig.textFormat`.
- Unsupported and refused: `top_k`, `seed`, `n > 1`, `logprobs`, penalties,
  `parallel_tool_calls: false`, `response_format: json_object`, audio input.

Usage: Bedrock's `inputTokens` excludes cache reads and writes (as Anthropic's
`input_tokens` does; LiteLLM and others add them up the same way), so docs/contract.md section 5's
`prompt_tokens` = inputTokens + cacheReadInputTokens + cacheWriteInputTokens.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from fastgate.convert.common import (
    EFFORT_BUDGET,
    HUB_REQUEST_NOT_CONVERTED,
    allowed_tool_names,
    dumps_str,
    guess_mime,
    hub_tool,
    json_args,
    json_schema_of,
    new_id,
    now,
    openai_usage_dict,
    parse_data_url,
    require_dict,
    require_list,
    stop_list,
    text_of_parts,
)
from fastgate.convert.common import MALFORMED as _MALFORMED
from fastgate.convert.errors import (
    ConversionError,
    UpstreamProtocolError,
)
from fastgate.vocab.usage import usage_from_bedrock as usage_from_converse

__all__ = [
    "FINISH_FROM_CONVERSE",
    "PLACEHOLDER_TOOL",
    "converse_response_to_openai",
    "finish_from_converse",
    "openai_request_to_converse",
    "usage_from_converse",
]


# ==================================================================================
# vocabulary
# ==================================================================================

FINISH_FROM_CONVERSE: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    # the model broke its own output format: no OpenAI equivalent, the turn just ended
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}

_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOC_FORMATS: Final = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_TOOL_ID_OK = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_DOC_NAME_BAD = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
_WS = re.compile(r"\s+")

PLACEHOLDER_TOOL: Final = {
    "toolSpec": {
        "name": "no_tool_available",
        "description": "Placeholder: no tool may be called in this conversation. Never call it.",
        "inputSchema": {"json": {"type": "object", "properties": {}}},
    }
}


def finish_from_converse(stop_reason: Any) -> str:
    """OpenAI `finish_reason` for a Converse `stopReason`."""
    return FINISH_FROM_CONVERSE.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _tool_id(call_id: str) -> str:
    """A toolUseId Converse accepts, the same for a call and its result."""
    if _TOOL_ID_OK.fullmatch(call_id):
        return call_id
    return "call_" + hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:40]


# ==================================================================================
# requests: hub -> Converse
# ==================================================================================


def _unsupported(key: str) -> ConversionError:
    return ConversionError(f"parameter {key!r} is not supported by Bedrock channels")


def openai_request_to_converse(
    req: dict[str, Any], default_max_tokens: int | None = None
) -> dict[str, Any]:
    """Converse / ConverseStream body for a hub (OpenAI chat) request.

    The model id and the stream flag are not part of the body: they go into the path
    (`request_target`). `default_max_tokens` fills `inferenceConfig.maxTokens` when the
    client gave none (Converse would otherwise use the model's own default).
    """
    req = require_dict(req, "request body")
    system, messages = _messages_to_converse(require_list(req.get("messages"), "messages"))
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    ic: dict[str, Any] = {}
    max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = req.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens
    if max_tokens is not None:
        ic["maxTokens"] = max_tokens
    tools: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for key, value in req.items():
        if key in HUB_REQUEST_NOT_CONVERTED or key in ("max_tokens", "max_completion_tokens"):
            continue
        if value is None:
            continue
        if key == "temperature":
            ic["temperature"] = value
        elif key == "top_p":
            ic["topP"] = value
        elif key == "stop":
            stops = [s for s in stop_list(value) if s]  # Converse refuses empty ones
            if stops:
                ic["stopSequences"] = stops
        elif key == "n":
            if value != 1:
                raise ConversionError("n > 1 is not supported by Bedrock channels")
        elif key == "tools":
            tools = [_tool_to_converse(t, i) for i, t in enumerate(require_list(value, "tools"))]
        elif key == "tool_choice":
            continue  # below, once tools are known
        elif key == "parallel_tool_calls":
            if value is False:
                raise ConversionError(
                    "parallel_tool_calls=false is not supported by Bedrock channels"
                )
        elif key == "response_format":
            _response_format_to_converse(require_dict(value, "response_format"), out)
        elif key == "reasoning_effort":
            _effort_to_converse(value, ic, extra)
        elif (
            (key == "logprobs" and value is False)
            or (key in ("presence_penalty", "frequency_penalty") and value == 0)
            or (key == "logit_bias" and not value)
            or (key == "modalities" and value == ["text"])
        ):
            continue
        elif key in ("functions", "function_call"):
            raise ConversionError(
                f"legacy {key!r} is not supported by Bedrock channels; use 'tools'"
            )
        else:
            raise _unsupported(key)
    if ic:
        out["inferenceConfig"] = ic
    if extra:
        out["additionalModelRequestFields"] = extra
    tc = req.get("tool_choice")
    choice: dict[str, Any] | None = None
    if tc is not None and tools:
        tools, choice = _tool_choice_to_converse(tc, tools)
    elif tc is not None and tc not in ("auto", "none", "required") and not isinstance(tc, dict):
        raise ConversionError(f"tool_choice {tc!r} is not supported by Bedrock channels")
    if tools:
        tool_config: dict[str, Any] = {"tools": tools}
        if choice is not None:
            tool_config["toolChoice"] = choice
        out["toolConfig"] = tool_config
    elif _has_tool_blocks(messages):
        out["toolConfig"] = {"tools": [PLACEHOLDER_TOOL]}
    return out


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _messages_to_converse(
    msgs: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    doc_names: set[str] = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        m = require_dict(m, where)
        role = m.get("role")
        if role in ("system", "developer"):
            content = m.get("content")
            if isinstance(content, list):
                texts = [text_of_parts([p], f"{where}.content[{j}]") for j, p in enumerate(content)]
            else:
                texts = [text_of_parts(content, where)]
            system.extend({"text": t} for t in texts if t.strip())
            continue
        if role == "user":
            blocks = _user_blocks(m.get("content"), where, doc_names)
            if not blocks:
                raise ConversionError(
                    f"{where}: the message is empty; Bedrock rejects blank messages"
                )
            c_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, where)
            if not blocks:
                continue
            c_role = "assistant"
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ConversionError(f"{where}.tool_call_id must be a string")
            blocks = [
                {
                    "toolResult": {
                        "toolUseId": _tool_id(call_id),
                        "content": _tool_result_content(m.get("content"), where),
                    }
                }
            ]
            c_role = "user"
        elif role == "function":
            raise ConversionError(f"{where}: legacy 'function' messages are not supported")
        else:
            raise ConversionError(f"{where}.role {role!r} is not supported")
        if out and out[-1]["role"] == c_role:
            prev = out[-1]["content"]
            if "toolResult" in blocks[0]:
                # tool results lead the user turn that answers the calls
                k = 0
                while k < len(prev) and "toolResult" in prev[k]:
                    k += 1
                prev[k:k] = blocks
            else:
                prev.extend(blocks)
        else:
            out.append({"role": c_role, "content": blocks})
    return system, out


def _image_block(url: str, where: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is None:
        if url.startswith("s3://"):
            mime = guess_mime(url) or ""
            fmt = _IMAGE_FORMATS.get(mime)
            if fmt is None:
                raise ConversionError(
                    f"{where}: cannot tell the image format of {url!r} (png, jpeg, gif, webp)"
                )
            return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
        raise ConversionError(
            f"{where}: Bedrock channels take images as data: URLs (or s3:// URIs), not links"
        )
    mime, b64 = parsed
    fmt = _IMAGE_FORMATS.get(mime.lower())
    if fmt is None:
        raise ConversionError(
            f"{where}: image type {mime!r} is not supported by Bedrock (png, jpeg, gif, webp)"
        )
    return {"image": {"format": fmt, "source": {"bytes": b64}}}


def _doc_name(filename: Any, used: set[str]) -> str:
    stem = filename.rsplit(".", 1)[0] if isinstance(filename, str) and filename else ""
    name = _DOC_NAME_BAD.sub("-", stem)
    name = _WS.sub(" ", name).strip(" -")[:180] or "document"
    base, k = name, 2
    while name in used:
        name = f"{base} ({k})"
        k += 1
    used.add(name)
    return name


def _file_block(part: dict[str, Any], where: str, used: set[str]) -> dict[str, Any]:
    f = require_dict(part.get("file"), f"{where}.file")
    data = f.get("file_data")
    if not isinstance(data, str):
        raise ConversionError(f"{where}: file_id references are not supported by Bedrock")
    filename = f.get("filename")
    parsed = parse_data_url(data)
    if parsed is None:
        mime = guess_mime(filename, "application/pdf") if isinstance(filename, str) else None
        parsed = (mime or "application/pdf", data)
    mime, b64 = parsed
    mime = mime.lower()
    if mime in _IMAGE_FORMATS:
        return {"image": {"format": _IMAGE_FORMATS[mime], "source": {"bytes": b64}}}
    fmt = _DOC_FORMATS.get(mime)
    if fmt is None:
        raise ConversionError(f"{where}: file type {mime!r} is not supported by Bedrock")
    return {
        "document": {"format": fmt, "name": _doc_name(filename, used), "source": {"bytes": b64}}
    }


def _user_blocks(content: Any, where: str, used: set[str]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, p in enumerate(require_list(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        kind = p.get("type")
        if kind == "text":
            if not isinstance(p.get("text"), str):
                raise ConversionError(f"{pw}.text must be a string")
            if p["text"].strip():
                blocks.append({"text": p["text"]})
        elif kind == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            blocks.append(_image_block(url, pw))
        elif kind == "file":
            blocks.append(_file_block(p, pw, used))
        elif kind == "input_audio":
            raise ConversionError(f"{pw}: audio input is not supported by Bedrock channels")
        else:
            raise ConversionError(f"{pw}: content part type {kind!r} is not supported")
    return blocks


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of_parts(m.get("content"), where, ("text", "refusal"))
    if not text.strip() and isinstance(m.get("refusal"), str):
        text = m["refusal"]
    if text.strip():
        blocks.append({"text": text})
    if m.get("function_call") is not None:
        raise ConversionError(f"{where}: legacy function_call is not supported; use tool_calls")
    calls = m.get("tool_calls")
    for k, tc in enumerate(require_list(calls, f"{where}.tool_calls") if calls else ()):
        tw = f"{where}.tool_calls[{k}]"
        tc = require_dict(tc, tw)
        if tc.get("type", "function") != "function":
            raise ConversionError(f"{tw}: only function tool calls are supported")
        fn = require_dict(tc.get("function"), f"{tw}.function")
        if not isinstance(tc.get("id"), str) or not tc["id"] or not isinstance(fn.get("name"), str):
            raise ConversionError(f"{tw} needs id and function.name")
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": _tool_id(tc["id"]),
                    "name": fn["name"],
                    "input": json_args(fn.get("arguments"), tw),
                }
            }
        )
    return blocks


def _tool_result_content(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content or ""}]
    blocks: list[dict[str, Any]] = []
    for j, p in enumerate(require_list(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        if p.get("type") == "text":
            if not isinstance(p.get("text"), str):
                raise ConversionError(f"{pw}.text must be a string")
            blocks.append({"text": p["text"]})
        elif p.get("type") == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            blocks.append(_image_block(url, pw))
        else:
            raise ConversionError(f"{pw}: part type {p.get('type')!r} is not supported here")
    return blocks or [{"text": ""}]


def _tool_to_converse(tool: Any, i: int) -> dict[str, Any]:
    name, desc, params = hub_tool(tool, i, nonempty=True)
    spec: dict[str, Any] = {"name": name}
    if desc is not None:
        spec["description"] = desc
    spec["inputSchema"] = {
        "json": params if params is not None else {"type": "object", "properties": {}}
    }
    if tool["function"].get("strict") is True:  # hub_tool checked both are objects
        spec["strict"] = True
    return {"toolSpec": spec}


def _tool_choice_to_converse(
    tc: Any, tools: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(tools to declare, toolChoice or None)."""
    if tc == "auto":
        return tools, {"auto": {}}
    if tc == "required":
        return tools, {"any": {}}
    if tc == "none":
        return [], None  # Converse has no "none": the tools are withheld
    if isinstance(tc, dict):
        if tc.get("type") == "function":
            fn = require_dict(tc.get("function"), "tool_choice.function")
            if not isinstance(fn.get("name"), str):
                raise ConversionError("tool_choice.function.name must be a string")
            return tools, {"tool": {"name": fn["name"]}}
        if tc.get("type") == "allowed_tools":
            names, required = allowed_tool_names(tc)
            allowed = set(names)
            kept = [t for t in tools if t["toolSpec"]["name"] in allowed]
            return kept, ({"any": {}} if required else {"auto": {}})
    raise ConversionError(f"tool_choice {tc!r} is not supported by Bedrock channels")


def _response_format_to_converse(rf: dict[str, Any], out: dict[str, Any]) -> None:
    kind = rf.get("type")
    if kind == "text":
        return
    if kind == "json_schema":
        js, schema = json_schema_of(rf)
        definition: dict[str, Any] = {"schema": dumps_str(schema)}
        if isinstance(js.get("name"), str) and js["name"]:
            definition["name"] = js["name"]
        if isinstance(js.get("description"), str) and js["description"]:
            definition["description"] = js["description"]
        out["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}
        }
        return
    raise ConversionError(
        f"response_format {kind!r} is not supported by Bedrock channels (use json_schema)"
    )


def _effort_to_converse(effort: Any, ic: dict[str, Any], extra: dict[str, Any]) -> None:
    if effort == "none":
        return
    budget = EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    if effort in ("xhigh", "max"):
        budget = 32768
    if budget is None:
        raise ConversionError(f"reasoning_effort {effort!r} is not supported")
    max_tokens = ic.get("maxTokens")
    if not isinstance(max_tokens, int) or max_tokens <= 1024:
        raise ConversionError(
            "reasoning_effort needs max_tokens above 1024 on Bedrock channels "
            "(the thinking budget must be at least 1024 and below max_tokens)"
        )
    extra["thinking"] = {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


# ==================================================================================
# non-stream responses
# ==================================================================================


def converse_response_to_openai(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Chat completion for a Converse response (Bedrock gives no id: a fresh one)."""
    if not isinstance(resp, dict):
        raise UpstreamProtocolError("Bedrock response is not a JSON object")
    try:
        msg = resp["output"]["message"]
        blocks = msg["content"]
        if not isinstance(blocks, list):
            raise TypeError("content")
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for b in blocks:
            if "text" in b:
                if not isinstance(b["text"], str):
                    raise TypeError("text")
                texts.append(b["text"])
            elif "toolUse" in b:
                tu = b["toolUse"]
                if not isinstance(tu["toolUseId"], str) or not isinstance(tu["name"], str):
                    raise TypeError("toolUse")
                calls.append(
                    {
                        "id": tu["toolUseId"],
                        "type": "function",
                        "function": {
                            "name": tu["name"],
                            "arguments": dumps_str(tu.get("input") or {}),
                        },
                    }
                )
            elif "reasoningContent" in b:
                rt = b["reasoningContent"].get("reasoningText")
                if isinstance(rt, dict) and isinstance(rt.get("text"), str):
                    reasoning.append(rt["text"])
            # images, citations and future block types have no chat equivalent
    except _MALFORMED as exc:
        raise UpstreamProtocolError("malformed Bedrock Converse response") from exc
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_from_converse(resp.get("stopReason")),
                "logprobs": None,
            }
        ],
        "usage": openai_usage_dict(usage_from_converse(resp.get("usage"))),
    }
