"""Gemini generateContent <-> hub (OpenAI Chat Completions): requests, responses, streams.

Mapping decisions (each one either preserves meaning or raises `ConversionError`):

- `systemInstruction` <-> system/developer messages; role `model` <-> `assistant`.
- Gemini has no tool call ids. Calls get `call_<response id>_<n>` (stable for a response,
  unique across turns); a `functionCall.id`, when Gemini sends one, is used as is. A
  call's `thoughtSignature` rides inside the id (see common.encode_call_id) so it goes
  back to Gemini with the next request, as Gemini 3 requires. Tool results map back to
  their call by id when the client kept it, else by function name (first unanswered
  call of that name in the preceding model turn).
- Tool results: a JSON object result becomes `functionResponse.response`; any other
  content becomes `{"output": <content>}` (Gemini's documented key); back again
  `{"output": "<text>"}` becomes the text.
- Media: base64 <-> `inlineData`; an http(s) or gs:// URL becomes `fileData.fileUri`
  with the mime type guessed from the extension (Gemini fetches it; an unknown type is
  left for Gemini to detect). Audio (`input_audio`) and PDFs (`file`) map to `inlineData`.
- Tool schemas go to `parametersJsonSchema` (full JSON Schema); Gemini's OpenAPI-style
  `parameters` (upper-case types) come back as JSON Schema.
- `reasoning_effort` <-> `thinkingConfig` (budget, see common.EFFORT_BUDGET); thought
  parts <-> `reasoning_content`.
- Gemini accepts snake_case field names as well as camelCase; both are read.
- Dropped on purpose: `safetySettings` (the target provider applies its own policy),
  `mediaResolution`, `labels`, message `name`, and the OpenAI-side hints listed in
  anthropic.py.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

import orjson

from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    EFFORT_BUDGET,
    FromOpenAIStream,
    ToOpenAIStream,
    allowed_tool_names,
    decode_call_id,
    dumps_str,
    effort_from_budget,
    encode_call_id,
    foreign_id,
    guess_mime,
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
    gemini_error_event,
    openai_error_type,
)
from fastgate.sse.decoder import SSEDecoder
from fastgate.vocab.usage import (
    Usage,
    gemini_thoughts_tokens,
    gemini_usage_dict,
    openai_usage_dict,
    usage_from_gemini,
    usage_from_openai,
)
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

__all__ = [
    "GeminiToOpenAIStream",
    "OpenAIToGeminiStream",
    "finish_from_gemini",
    "gemini_request_to_openai",
    "gemini_response_to_openai",
    "gemini_usage_dict",
    "openai_request_to_gemini",
    "openai_response_to_gemini",
    "usage_from_gemini",
]

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
FINISH_TO_GEMINI = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}
_SEP = b"\r\n\r\n"  # what Google's alt=sse stream puts between events
# The documented placeholder for a function call whose signature was lost (history
# from another model): Gemini 3 skips validation for it instead of rejecting the call.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def finish_from_gemini(reason: Any, had_calls: bool) -> str:
    """OpenAI `finish_reason` for a Gemini `finishReason` (a function call -> tool_calls)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if had_calls else "stop"


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


# ==================================================================================
# usage
# ==================================================================================


# The codec is the vocabulary's: `usage_from_gemini` and `gemini_usage_dict` are
# re-exported here.
_thoughts = gemini_thoughts_tokens


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


# ==================================================================================
# requests: hub -> Gemini
# ==================================================================================

_O_IGNORED = frozenset(
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
        "tool_choice",
    }
)
_O_TO_GC = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
    "n": "candidateCount",
}


def openai_request_to_gemini(
    req: dict[str, Any], thought_signature_fallback: bool = True
) -> dict[str, Any]:
    """Body for `:generateContent` / `:streamGenerateContent` from a hub request.

    The model and stream flag are not part of a Gemini body: the caller puts them in the
    URL. With `thought_signature_fallback`, model turns whose function calls carry no
    signature (history written by another model) get Gemini's documented placeholder.
    """
    req = require_dict(req, "request body")
    out: dict[str, Any] = {}
    system, contents = _messages_to_gemini(
        require_list(req.get("messages"), "messages"), thought_signature_fallback
    )
    if system:
        out["systemInstruction"] = {"parts": system}
    out["contents"] = contents
    gc: dict[str, Any] = {}
    for key, value in req.items():
        if key in _O_IGNORED or value is None:
            continue
        if key in _O_TO_GC:
            gc[_O_TO_GC[key]] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            if key == "max_completion_tokens" or req.get("max_completion_tokens") is None:
                gc["maxOutputTokens"] = value
        elif key == "stop":
            stops = stop_list(value)
            if stops:
                gc["stopSequences"] = stops
        elif key == "tools":
            decls = [_tool_to_gemini(t, i) for i, t in enumerate(require_list(value, "tools"))]
            if decls:
                out["tools"] = [{"functionDeclarations": decls}]
        elif key == "response_format":
            _response_format_to_gemini(require_dict(value, "response_format"), gc)
        elif key == "reasoning_effort":
            if value == "none":
                gc["thinkingConfig"] = {"thinkingBudget": 0}
            else:
                budget = EFFORT_BUDGET.get(value) or (32768 if value in ("xhigh", "max") else None)
                if budget is None:
                    raise ConversionError(f"reasoning_effort {value!r} is not supported")
                gc["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
        elif key == "parallel_tool_calls":
            if value is False:
                raise ConversionError(
                    "parallel_tool_calls=false is not supported by Gemini channels"
                )
        elif (
            (key in ("logprobs",) and value is False)
            or (key == "logit_bias" and not value)
            or (key == "modalities" and value == ["text"])
        ):
            continue
        elif key in ("functions", "function_call"):
            raise ConversionError(
                f"legacy {key!r} is not supported by Gemini channels; use 'tools'"
            )
        else:
            raise ConversionError(f"parameter {key!r} is not supported by Gemini channels")
    if gc:
        out["generationConfig"] = gc
    tc = req.get("tool_choice")
    if tc is not None:
        fcc = _tool_choice_to_gemini(tc)
        if "tools" in out:
            out["toolConfig"] = {"functionCallingConfig": fcc}
    return out


def _media_to_gemini(url: str, where: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is not None:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    if url.startswith(("http://", "https://", "gs://")):
        fd: dict[str, Any] = {"fileUri": url}
        mime = guess_mime(url)
        if mime:
            fd["mimeType"] = mime
        return {"fileData": fd}
    raise ConversionError(f"{where}: URL scheme is not supported by Gemini")


_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _user_parts_gemini(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(require_list(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        kind = p.get("type")
        if kind == "text":
            if not isinstance(p.get("text"), str):
                raise ConversionError(f"{pw}.text must be a string")
            parts.append({"text": p["text"]})
        elif kind == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            parts.append(_media_to_gemini(url, pw))
        elif kind == "input_audio":
            ia = require_dict(p.get("input_audio"), f"{pw}.input_audio")
            fmt = ia.get("format")
            if fmt not in _AUDIO_MIME or not isinstance(ia.get("data"), str):
                raise ConversionError(f"{pw}.input_audio needs data and format wav or mp3")
            parts.append({"inlineData": {"mimeType": _AUDIO_MIME[fmt], "data": ia["data"]}})
        elif kind == "file":
            f = require_dict(p.get("file"), f"{pw}.file")
            data = f.get("file_data")
            if not isinstance(data, str):
                raise ConversionError(f"{pw}: file_id references are not supported by Gemini")
            parsed = parse_data_url(data)
            if parsed is None:
                mime = guess_mime(str(f.get("filename") or ""), "application/pdf")
                parsed = (mime or "application/pdf", data)
            parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
        else:
            raise ConversionError(f"{pw}: content part type {kind!r} is not supported")
    return parts


def _tool_response_gemini(m: dict[str, Any], names: dict[str, str], where: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str):
        raise ConversionError(f"{where}.tool_call_id must be a string")
    name = names.get(call_id) or m.get("name")
    if not isinstance(name, str):
        raise ConversionError(
            f"{where}: tool_call_id {call_id!r} matches no tool call of an earlier "
            "assistant message (Gemini needs the function name)"
        )
    content = m.get("content")
    extra: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for j, p in enumerate(content):
            pw = f"{where}.content[{j}]"
            p = require_dict(p, pw)
            if p.get("type") == "text":
                texts.append(p.get("text") or "")
            elif p.get("type") == "image_url":
                iu = p.get("image_url")
                url = iu.get("url") if isinstance(iu, dict) else iu
                parsed = parse_data_url(url) if isinstance(url, str) else None
                if parsed is None:
                    raise ConversionError(f"{pw}: images in tool results must be data: URLs")
                extra.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
            else:
                raise ConversionError(f"{pw}: part type {p.get('type')!r} is not supported")
        content = "".join(texts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise ConversionError(f"{where}.content must be a string or an array of parts")
    response: Any
    try:
        parsed_json = orjson.loads(content) if content[:1] == "{" else None
    except orjson.JSONDecodeError:
        parsed_json = None
    response = parsed_json if isinstance(parsed_json, dict) else {"output": content}
    fr: dict[str, Any] = {"name": name, "response": response}
    if extra:
        fr["parts"] = extra
    return {"functionResponse": fr}


def _messages_to_gemini(
    msgs: list[Any], sig_fallback: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        m = require_dict(m, where)
        role = m.get("role")
        if role in ("system", "developer"):
            content = m.get("content")
            if isinstance(content, list):
                for j, p in enumerate(content):
                    system.append({"text": text_of_parts([p], f"{where}.content[{j}]")})
            else:
                system.append({"text": text_of_parts(content, where)})
            continue
        if role == "user":
            g_role, parts = "user", _user_parts_gemini(m.get("content"), where)
        elif role == "assistant":
            g_role, parts = "model", _assistant_parts_gemini(m, where, names, sig_fallback)
            if not parts:
                continue
        elif role == "tool":
            g_role, parts = "user", [_tool_response_gemini(m, names, where)]
        elif role == "function":
            raise ConversionError(f"{where}: legacy 'function' messages are not supported")
        else:
            raise ConversionError(f"{where}.role {role!r} is not supported")
        if contents and contents[-1]["role"] == g_role:
            prev = contents[-1]["parts"]
            if parts and "functionResponse" in parts[0]:
                k = 0  # function responses lead the user turn, right after the calls
                while k < len(prev) and "functionResponse" in prev[k]:
                    k += 1
                prev[k:k] = parts
            else:
                prev.extend(parts)
        else:
            contents.append({"role": g_role, "parts": parts})
    return system, contents


def _assistant_parts_gemini(
    m: dict[str, Any], where: str, names: dict[str, str], sig_fallback: bool
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = text_of_parts(m.get("content"), where, ("text", "refusal"))
    if text:
        parts.append({"text": text})
    if m.get("function_call") is not None:
        raise ConversionError(f"{where}: legacy function_call is not supported; use tool_calls")
    calls = m.get("tool_calls") or []
    first = True
    for k, tc in enumerate(require_list(calls, f"{where}.tool_calls")):
        tw = f"{where}.tool_calls[{k}]"
        tc = require_dict(tc, tw)
        fn = require_dict(tc.get("function"), f"{tw}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not isinstance(tc.get("id"), str):
            raise ConversionError(f"{tw} needs id and function.name")
        names[tc["id"]] = name
        part: dict[str, Any] = {
            "functionCall": {"name": name, "args": json_args(fn.get("arguments"), tw)}
        }
        _, sig = decode_call_id(tc["id"])
        if sig:
            part["thoughtSignature"] = sig
        elif first and sig_fallback:
            part["thoughtSignature"] = SKIP_SIGNATURE
        first = False
        parts.append(part)
    return parts


def _tool_to_gemini(tool: Any, i: int) -> dict[str, Any]:
    name, desc, params = hub_tool(tool, i, by=" by Gemini")
    out: dict[str, Any] = {"name": name}
    if desc is not None:
        out["description"] = desc
    if params is not None:
        out["parametersJsonSchema"] = params
    return out


def _tool_choice_to_gemini(tc: Any) -> dict[str, Any]:
    if tc == "auto":
        return {"mode": "AUTO"}
    if tc == "required":
        return {"mode": "ANY"}
    if tc == "none":
        return {"mode": "NONE"}
    if isinstance(tc, dict):
        if tc.get("type") == "function":
            fn = require_dict(tc.get("function"), "tool_choice.function")
            if not isinstance(fn.get("name"), str):
                raise ConversionError("tool_choice.function.name must be a string")
            return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
        if tc.get("type") == "allowed_tools":
            names, required = allowed_tool_names(tc)
            mode = "ANY" if required else "AUTO"
            return {"mode": mode, "allowedFunctionNames": names}
    raise ConversionError(f"tool_choice {tc!r} is not supported by Gemini channels")


def _response_format_to_gemini(rf: dict[str, Any], gc: dict[str, Any]) -> None:
    kind = rf.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        gc["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        _, schema = json_schema_of(rf)
        gc["responseMimeType"] = "application/json"
        gc["responseJsonSchema"] = schema
        return
    raise ConversionError(f"response_format {kind!r} is not supported by Gemini channels")


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


# ==================================================================================
# streams
# ==================================================================================


def _name(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise UpstreamProtocolError("Gemini functionCall.name is not a string")


class GeminiToOpenAIStream(ToOpenAIStream):
    """Gemini `alt=sse` stream in, OpenAI chat-completion chunk SSE out.

    Each Gemini chunk becomes one chunk per candidate (plus a finish chunk); function
    calls arrive whole from Gemini and leave as one tool-call delta each. The usage chunk
    (if asked for) and `[DONE]` go out at `close()`, since Gemini marks its end only by
    closing the stream; a stream that closes before any `finishReason` was cut short.
    """

    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self._meta: dict[str, Any] | None = None  # the latest usageMetadata
        self._dec = SSEDecoder(max_event_bytes)
        self._id = ""
        self._prefix = ""
        self._created = now()
        self._roled: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self._counter = 0
        self._finished = False
        self._errored = False

    @property
    def usage(self) -> Usage:
        """The upstream's usage so far (Gemini repeats usageMetadata in every chunk)."""
        return usage_from_gemini(self._meta)

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        out: list[Any] = []
        for ev in sse_feed(self._dec, data):
            if ev.data and not self._errored:
                self._event(ev.data, out)
        return out

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF: usage chunk and `DONE`; raises if the stream was cut short."""
        events = sse_close(self._dec)
        out: list[Any] = []
        for ev in events:
            if ev.data and not self._errored:
                self._event(ev.data, out)
        if self._errored:
            return out
        if not self._finished:
            raise UpstreamProtocolError("Gemini stream ended without a finishReason")
        if self.include_usage:
            out.append(self._usage_chunk(_thoughts(self._meta)))
        out.append(DONE)
        return out

    def _event(self, data: bytes, out: list[Any]) -> None:
        obj = load_event_json(data)
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Gemini stream event is not a JSON object")
        try:
            self._dispatch(obj, out)
        except _MALFORMED as exc:
            raise UpstreamProtocolError("malformed Gemini stream event") from exc

    def _dispatch(self, obj: dict[str, Any], out: list[Any]) -> None:
        err = obj.get("error")
        if err is not None:
            err = err if isinstance(err, dict) else {"message": str(err)}
            self._errored = True
            out.append(
                openai_error_chunk(
                    str(err.get("message") or "upstream error"),
                    openai_error_type(
                        None, err.get("code") if isinstance(err.get("code"), int) else 500
                    ),
                    err.get("status") if isinstance(err.get("status"), str) else None,
                )
            )
            return
        if not self._id:
            rid = _g(obj, "responseId", "response_id")
            self._id = hub_id(rid)
            self._prefix = _call_prefix(rid)
        meta = obj.get("usageMetadata")
        if meta is not None:
            if not isinstance(meta, dict):
                raise UpstreamProtocolError("Gemini usageMetadata is not an object")
            self._meta = meta
        cands = obj.get("candidates")
        if not cands:
            feedback = _g(obj, "promptFeedback", "prompt_feedback")
            if isinstance(feedback, dict) and _g(feedback, "blockReason", "block_reason"):
                self._roled.add(0)
                out.append(self._chunk({"role": "assistant", "content": ""}))
                out.append(self._chunk({}, "content_filter"))
                self._finished = True
            return
        for pos, cand in enumerate(cands):
            idx = cand.get("index", pos)
            delta: dict[str, Any] = {}
            if idx not in self._roled:
                self._roled.add(idx)
                delta["role"] = "assistant"
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[dict[str, Any]] = []
            content = cand.get("content")
            parts = content.get("parts") if content else None
            for p in parts or ():
                fc = p.get("functionCall")
                if fc is not None:
                    n = self._calls.get(idx, 0)
                    self._calls[idx] = n + 1
                    gid = fc.get("id")
                    base = gid if isinstance(gid, str) and gid else f"{self._prefix}{self._counter}"
                    self._counter += 1
                    sig = p.get("thoughtSignature")
                    calls.append(
                        {
                            "index": n,
                            "id": encode_call_id(base, sig if isinstance(sig, str) else None),
                            "type": "function",
                            "function": {
                                "name": _name(fc["name"]),
                                "arguments": dumps_str(fc.get("args") or {}),
                            },
                        }
                    )
                else:
                    text = p.get("text")
                    if text:
                        if not isinstance(text, str):
                            raise UpstreamProtocolError("Gemini part text is not a string")
                        (thoughts if p.get("thought") else texts).append(text)
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if texts:
                delta["content"] = "".join(texts)
            elif "role" in delta:
                delta["content"] = ""
            if calls:
                delta["tool_calls"] = calls
            if delta:
                out.append(self._chunk(delta, index=idx))
            reason = cand.get("finishReason")
            if reason:
                finish = finish_from_gemini(reason, idx in self._calls)
                out.append(self._chunk({}, finish, idx))
                self._finished = True


class OpenAIToGeminiStream(FromOpenAIStream):
    """OpenAI chat-completion chunk SSE (or hub chunks via `push`) in, Gemini SSE out.

    Text and thoughts leave chunk by chunk. Tool-call arguments stream in pieces on the
    OpenAI side but a Gemini `functionCall` carries whole `args`, so calls are held until
    the choice finishes and then sent, with `finishReason` and `usageMetadata`, in the
    last chunk (after OpenAI's usage chunk or `[DONE]`).
    """

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.model = model
        self.usage = Usage()
        self._reasoning_tokens = 0
        self._dec = SSEDecoder(max_event_bytes)
        self._rid: str | None = None
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str] = {}
        self._ended = False

    # feed / close / finish / push: FromOpenAIStream

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        """A Gemini stream error (`data: {"error":{code,message,status}}`)."""
        return gemini_error_event(message, type_)

    def _saw_finish(self) -> bool:
        return bool(self._finish)

    def _emit(self, obj: dict[str, Any], out: list[bytes]) -> None:
        out.append(b"data: " + orjson.dumps(obj) + _SEP)

    def _chunk(self, c: dict[str, Any], out: list[bytes]) -> None:
        if "error" in c and not c.get("choices"):
            err = c["error"] if isinstance(c["error"], dict) else {"message": str(c["error"])}
            self._ended = True
            t = err.get("type") if isinstance(err.get("type"), str) else "server_error"
            out.append(gemini_error_event(str(err.get("message") or "upstream error"), t))
            return
        if self._rid is None and isinstance(c.get("id"), str):
            self._rid = c["id"]
        usage = c.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
            self._reasoning_tokens = reasoning_tokens_of(usage)
        choices = c.get("choices") or []
        for ch in choices:
            idx = ch.get("index", 0)
            delta = ch.get("delta") or {}
            parts: list[dict[str, Any]] = []
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                parts.append({"text": reasoning, "thought": True})
            content = delta.get("content")
            if isinstance(content, str) and content:
                parts.append({"text": content})
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                parts.append({"text": refusal})
            for tc in delta.get("tool_calls") or ():
                calls = self._calls.setdefault(idx, {})
                entry = calls.get(tc.get("index", 0))
                if entry is None:
                    entry = calls[tc.get("index", 0)] = {"id": None, "name": "", "args": []}
                fn = tc.get("function") or {}
                if tc.get("id"):
                    entry["id"] = tc["id"]
                if fn.get("name"):
                    entry["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    entry["args"].append(fn["arguments"])
            if parts:
                self._emit(
                    self._response([{"content": {"role": "model", "parts": parts}, "index": idx}]),
                    out,
                )
            if ch.get("finish_reason") is not None:
                self._finish[idx] = ch["finish_reason"]
        if not choices and isinstance(usage, dict) and self._finish:
            self._finalize(out)

    def _response(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {"candidates": candidates, "modelVersion": self.model}
        if self._rid:
            obj["responseId"] = foreign_id(self._rid)
        return obj

    def _finalize(self, out: list[bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        idxs = sorted(set(self._finish) | set(self._calls)) or [0]
        candidates = []
        for idx in idxs:
            parts = [
                _call_part(e["id"], e["name"], "".join(e["args"]))
                for _, e in sorted(self._calls.get(idx, {}).items())
            ]
            candidates.append(
                {
                    "content": {"role": "model", "parts": parts or [{"text": ""}]},
                    "finishReason": FINISH_TO_GEMINI.get(self._finish.get(idx), "STOP"),
                    "index": idx,
                }
            )
        obj = self._response(candidates)
        obj["usageMetadata"] = gemini_usage_dict(self.usage, self._reasoning_tokens)
        self._emit(obj, out)
