"""Gemini generateContent request -> hub (OpenAI Chat Completions) request.

Used when a client speaks Gemini. `systemInstruction` becomes system messages; role
`model` becomes `assistant`; function calls get ids carrying their `thoughtSignature`
(common.encode_call_id); `inlineData` / `fileData` become data URLs / URLs; Gemini's
OpenAPI-style `parameters` schemas (upper-case types) become JSON Schema;
`thinkingConfig` becomes `reasoning_effort`.

Dropped on purpose: `safetySettings` (the target provider applies its own policy),
`mediaResolution` and `labels`.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from fastgate.convert.common import (
    dumps_str,
    effort_from_budget,
    encode_call_id,
    guess_mime,
    make_data_url,
    require_dict,
    require_list,
    stop_list,
)
from fastgate.convert.errors import ConversionError
from fastgate.convert.gemini.shared import SKIP_SIGNATURE, _g

# ==================================================================================
# schemas: Gemini OpenAPI subset -> JSON Schema
# ==================================================================================


def _schema_to_json(schema: Any) -> Any:
    """Gemini `Schema` (upper-case types, `nullable`) as JSON Schema."""
    if isinstance(schema, list):
        return [_schema_to_json(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    nullable = False
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out["type"] = "null" if value.upper() == "NULL" else value.lower()
        elif key == "nullable":
            nullable = bool(value)
        elif key in ("propertyOrdering", "property_ordering"):
            continue
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: _schema_to_json(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "any_of"):
            out["anyOf" if key == "any_of" else key] = _schema_to_json(value)
        else:
            out[key] = value
    if nullable and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# ==================================================================================
# requests: Gemini -> hub
# ==================================================================================

_G_REQ_KEYS = {
    "contents": "contents",
    "systemInstruction": "systemInstruction",
    "system_instruction": "systemInstruction",
    "generationConfig": "generationConfig",
    "generation_config": "generationConfig",
    "tools": "tools",
    "toolConfig": "toolConfig",
    "tool_config": "toolConfig",
    "safetySettings": None,
    "safety_settings": None,
    "labels": None,
    "model": None,
}


def gemini_request_to_openai(
    req: dict[str, Any], model: str, stream: bool, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """Hub request for a Gemini generateContent body (`model`, `stream` come from the URL)."""
    req = require_dict(req, "request body")
    body: dict[str, Any] = {}
    for key, value in req.items():
        if key not in _G_REQ_KEYS:
            raise ConversionError(
                f"field {key!r} is not supported when this model is served "
                "through a non-Gemini channel"
            )
        canon = _G_REQ_KEYS[key]
        if canon is not None:
            body[canon] = value
    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    si = body.get("systemInstruction")
    if si is not None:
        si = require_dict(si, "systemInstruction")
        texts = []
        for i, p in enumerate(require_list(si.get("parts") or [], "systemInstruction.parts")):
            p = require_dict(p, f"systemInstruction.parts[{i}]")
            if not isinstance(p.get("text"), str):
                raise ConversionError("systemInstruction parts must be text")
            texts.append({"type": "text", "text": p["text"]})
        if len(texts) == 1:
            messages.append({"role": "system", "content": texts[0]["text"]})
        elif texts:
            messages.append({"role": "system", "content": texts})
    messages.extend(_contents_to_openai(require_list(body.get("contents"), "contents")))
    out["messages"] = messages

    gc = body.get("generationConfig")
    if gc is not None:
        _generation_config_to_openai(require_dict(gc, "generationConfig"), out, max_tokens_field)
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools_to_openai(require_list(tools, "tools"))
    tc = body.get("toolConfig")
    if tc is not None:
        _tool_config_to_openai(require_dict(tc, "toolConfig"), out)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _media_to_openai(mime: str, data: str, where: str) -> dict[str, Any]:
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": make_data_url(mime, data)}}
    if mime in ("audio/wav", "audio/x-wav", "audio/wave"):
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    if mime in ("audio/mp3", "audio/mpeg"):
        return {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    ext = guess_ext(mime)
    return {
        "type": "file",
        "file": {"filename": "file" + ext, "file_data": make_data_url(mime, data)},
    }


def guess_ext(mime: str) -> str:
    """File extension for a mime type ('' if unknown)."""
    return mimetypes.guess_extension(mime, strict=False) or ""


def _contents_to_openai(contents: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str, str | None]] = []  # (call id, name, gemini id)
    counter = 0
    prev_role = None
    for i, c in enumerate(contents):
        where = f"contents[{i}]"
        c = require_dict(c, where)
        role = c.get("role") or "user"
        parts = require_list(c.get("parts") or [], f"{where}.parts")
        if role == "model":
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            if prev_role != "model":
                pending = []  # a new model turn: earlier calls were answered or dropped
            for j, p in enumerate(parts):
                pw = f"{where}.parts[{j}]"
                p = require_dict(p, pw)
                if p.get("thought"):
                    continue
                fc = _g(p, "functionCall", "function_call")
                if fc is not None:
                    fc = require_dict(fc, f"{pw}.functionCall")
                    name = fc.get("name")
                    if not isinstance(name, str):
                        raise ConversionError(f"{pw}.functionCall.name must be a string")
                    gid = fc.get("id") if isinstance(fc.get("id"), str) else None
                    base = gid or f"call_{counter}"
                    counter += 1
                    sig = _g(p, "thoughtSignature", "thought_signature")
                    if sig == SKIP_SIGNATURE:
                        sig = None
                    call_id = encode_call_id(base, sig if isinstance(sig, str) else None)
                    calls.append(
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {
                                "name": name,
                                "arguments": dumps_str(fc.get("args") or {}),
                            },
                        }
                    )
                    pending.append((call_id, name, gid))
                elif isinstance(p.get("text"), str):
                    texts.append(p["text"])
                elif _g(p, "thoughtSignature", "thought_signature") is not None and len(p) == 1:
                    continue  # a bare signature part carries no content
                else:
                    raise ConversionError(
                        f"{pw}: {_part_kind(p)} parts in model turns are not supported here"
                    )
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(texts) if texts else None,
            }
            if calls:
                msg["tool_calls"] = calls
            elif msg["content"] is None:
                msg["content"] = ""
            out.append(msg)
        elif role in ("user", "function", "tool"):
            tool_msgs: list[dict[str, Any]] = []
            user_parts: list[dict[str, Any]] = []
            for j, p in enumerate(parts):
                pw = f"{where}.parts[{j}]"
                p = require_dict(p, pw)
                fr = _g(p, "functionResponse", "function_response")
                if fr is not None:
                    tool_msgs.append(_function_response_to_openai(fr, pending, pw))
                    continue
                if isinstance(p.get("text"), str):
                    user_parts.append({"type": "text", "text": p["text"]})
                    continue
                inline = _g(p, "inlineData", "inline_data")
                if inline is not None:
                    inline = require_dict(inline, f"{pw}.inlineData")
                    mime = _g(inline, "mimeType", "mime_type")
                    data = inline.get("data")
                    if not isinstance(mime, str) or not isinstance(data, str):
                        raise ConversionError(f"{pw}.inlineData needs mimeType and data")
                    user_parts.append(_media_to_openai(mime, data, pw))
                    continue
                fd = _g(p, "fileData", "file_data")
                if fd is not None:
                    fd = require_dict(fd, f"{pw}.fileData")
                    uri = _g(fd, "fileUri", "file_uri")
                    mime = _g(fd, "mimeType", "mime_type") or guess_mime(str(uri), "")
                    if not isinstance(uri, str):
                        raise ConversionError(f"{pw}.fileData.fileUri must be a string")
                    if mime and not mime.startswith("image/"):
                        raise ConversionError(
                            f"{pw}: fileData of type {mime!r} is not supported by this channel "
                            "(only image URLs; send other files inline)"
                        )
                    if not uri.startswith(("http://", "https://")):
                        raise ConversionError(
                            f"{pw}: fileData URI {uri!r} is only readable by Gemini channels"
                        )
                    user_parts.append({"type": "image_url", "image_url": {"url": uri}})
                    continue
                raise ConversionError(
                    f"{pw}: {_part_kind(p)} parts are not supported by this channel"
                )
            out.extend(tool_msgs)
            if user_parts:
                if len(user_parts) == 1 and user_parts[0]["type"] == "text":
                    out.append({"role": "user", "content": user_parts[0]["text"]})
                else:
                    out.append({"role": "user", "content": user_parts})
        else:
            raise ConversionError(f"{where}.role must be 'user' or 'model'")
        prev_role = role
    return out


def _part_kind(p: dict[str, Any]) -> str:
    keys = [k for k in p if k not in ("thought", "thoughtSignature", "thought_signature")]
    return repr(keys[0]) if keys else "empty"


def _function_response_to_openai(
    fr: Any, pending: list[tuple[str, str, str | None]], where: str
) -> dict[str, Any]:
    fr = require_dict(fr, f"{where}.functionResponse")
    name = fr.get("name")
    gid = fr.get("id")
    match = None
    if isinstance(gid, str):
        match = next((p for p in pending if p[2] == gid or p[0] == gid), None)
    if match is None:
        match = next((p for p in pending if p[1] == name), None)
    if match is None:
        raise ConversionError(
            f"{where}: functionResponse {name!r} has no matching functionCall in the "
            "preceding model turn"
        )
    pending.remove(match)
    response = fr.get("response")
    if (
        isinstance(response, dict)
        and set(response) == {"output"}
        and isinstance(response["output"], str)
    ):
        text: str = response["output"]
    else:
        text = dumps_str(response if response is not None else {})
    extra = []
    for k, fp in enumerate(fr.get("parts") or []):
        inline = _g(fp, "inlineData", "inline_data") if isinstance(fp, dict) else None
        if not isinstance(inline, dict):
            raise ConversionError(f"{where}.functionResponse.parts[{k}] must be inlineData")
        mime = _g(inline, "mimeType", "mime_type")
        if not isinstance(mime, str) or not mime.startswith("image/"):
            raise ConversionError(f"{where}.functionResponse.parts[{k}]: only images are supported")
        extra.append(_media_to_openai(mime, inline.get("data") or "", where))
    content: Any = text
    if extra:
        content = [{"type": "text", "text": text}, *extra]
    return {"role": "tool", "tool_call_id": match[0], "content": content}


_GC_KNOWN = {
    "temperature": "temperature",
    "topP": "top_p",
    "top_p": "top_p",
    "topK": "top_k",
    "top_k": "top_k",
    "candidateCount": "n",
    "candidate_count": "n",
    "presencePenalty": "presence_penalty",
    "presence_penalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
}


def _generation_config_to_openai(gc: dict[str, Any], out: dict[str, Any], max_field: str) -> None:
    mime = _g(gc, "responseMimeType", "response_mime_type")
    schema = _g(gc, "responseJsonSchema", "response_json_schema")
    if schema is None:
        schema = _g(gc, "responseSchema", "response_schema")
        if schema is not None:
            schema = _schema_to_json(schema)
    for key, value in gc.items():
        if value is None:
            continue
        if key in _GC_KNOWN:
            out[_GC_KNOWN[key]] = value
        elif key in ("maxOutputTokens", "max_output_tokens"):
            out[max_field] = value
        elif key in ("stopSequences", "stop_sequences"):
            stops = stop_list(value, "generationConfig.stopSequences")
            if stops:
                out["stop"] = stops
        elif key in (
            "responseMimeType",
            "response_mime_type",
            "responseSchema",
            "response_schema",
            "responseJsonSchema",
            "response_json_schema",
            "mediaResolution",
            "media_resolution",
        ):
            continue
        elif key in ("responseModalities", "response_modalities"):
            if [str(m).upper() for m in value] != ["TEXT"]:
                raise ConversionError("responseModalities other than TEXT need a Gemini channel")
        elif key in ("responseLogprobs", "response_logprobs") and value is False:
            continue
        elif key in ("thinkingConfig", "thinking_config"):
            _thinking_to_openai(require_dict(value, "generationConfig.thinkingConfig"), out)
        else:
            raise ConversionError(
                f"generationConfig.{key} is not supported when this model is served "
                "through a non-Gemini channel"
            )
    if schema is not None:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        }
    elif mime == "application/json":
        out["response_format"] = {"type": "json_object"}
    elif mime not in (None, "text/plain"):
        raise ConversionError(f"responseMimeType {mime!r} is not supported by this channel")


def _thinking_to_openai(tc: dict[str, Any], out: dict[str, Any]) -> None:
    level = _g(tc, "thinkingLevel", "thinking_level")
    budget = _g(tc, "thinkingBudget", "thinking_budget")
    if isinstance(level, str) and level:
        lv = level.lower()
        if lv not in ("minimal", "low", "medium", "high"):
            raise ConversionError(f"thinkingLevel {level!r} is not supported")
        out["reasoning_effort"] = lv
    elif isinstance(budget, int) and budget > 0:
        out["reasoning_effort"] = effort_from_budget(budget)
    # budget 0 (off) or -1 (model decides) is what a channel does without the field


def _tools_to_openai(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        t = require_dict(t, f"tools[{i}]")
        for key, decls in t.items():
            if key not in ("functionDeclarations", "function_declarations"):
                raise ConversionError(f"tools[{i}].{key} is only available on Gemini channels")
            for k, d in enumerate(require_list(decls, f"tools[{i}].functionDeclarations")):
                d = require_dict(d, f"tools[{i}].functionDeclarations[{k}]")
                if not isinstance(d.get("name"), str):
                    raise ConversionError(f"tools[{i}].functionDeclarations[{k}].name is required")
                fn: dict[str, Any] = {"name": d["name"]}
                if isinstance(d.get("description"), str):
                    fn["description"] = d["description"]
                params = _g(d, "parametersJsonSchema", "parameters_json_schema")
                if params is None and d.get("parameters") is not None:
                    params = _schema_to_json(d["parameters"])
                fn["parameters"] = (
                    params if isinstance(params, dict) else {"type": "object", "properties": {}}
                )
                out.append({"type": "function", "function": fn})
    return out


def _tool_config_to_openai(tc: dict[str, Any], out: dict[str, Any]) -> None:
    fcc = _g(tc, "functionCallingConfig", "function_calling_config")
    if fcc is None:
        return
    fcc = require_dict(fcc, "toolConfig.functionCallingConfig")
    mode = str(fcc.get("mode") or "AUTO").upper()
    names = _g(fcc, "allowedFunctionNames", "allowed_function_names")
    if mode == "NONE":
        out["tool_choice"] = "none"
        return
    if mode not in ("AUTO", "ANY", "MODE_UNSPECIFIED"):
        raise ConversionError(
            f"functionCallingConfig.mode {mode!r} is not supported by this channel"
        )
    if names:
        names = set(require_list(names, "allowedFunctionNames"))
        out["tools"] = [t for t in out.get("tools", []) if t["function"]["name"] in names]
        if mode == "ANY" and len(names) == 1:
            out["tool_choice"] = {"type": "function", "function": {"name": next(iter(names))}}
            return
    out["tool_choice"] = "required" if mode == "ANY" else "auto"
