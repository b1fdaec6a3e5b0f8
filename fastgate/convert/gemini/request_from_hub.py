"""Hub (OpenAI Chat Completions) request -> Gemini generateContent request.

Used when a channel speaks Gemini. Tool results map back to their call by id when the
client kept it, else by function name (first unanswered call of that name in the
preceding model turn). A JSON object result becomes `functionResponse.response`; any
other content becomes `{"output": <content>}` (Gemini's documented key). An http(s) or
gs:// URL becomes `fileData.fileUri` with the mime type guessed from the extension;
audio and PDFs become `inlineData`. Tool schemas go to `parametersJsonSchema`. A call
whose signature was lost gets the documented skip placeholder.

Dropped on purpose: message `name` and the OpenAI-side hints listed in
`fastgate.convert.anthropic.request_from_hub` (`store`, `metadata`, `service_tier`,
`prompt_cache_key`, `safety_identifier`, `user`).
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.convert.common import (
    EFFORT_BUDGET,
    HUB_REQUEST_NOT_CONVERTED,
    allowed_tool_names,
    decode_call_id,
    guess_mime,
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
from fastgate.convert.gemini.shared import SKIP_SIGNATURE

# ==================================================================================
# requests: hub -> Gemini
# ==================================================================================

_O_IGNORED = HUB_REQUEST_NOT_CONVERTED | {"tool_choice"}
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
