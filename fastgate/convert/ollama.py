"""Ollama's native chat API (`/api/chat`) <-> hub (OpenAI chat), sans-IO.

With the other protocols' converters; where the request goes and how models are
listed (`/api/tags`) is the channel type's business (`fastgate.providers.ollama`).

Ollama streams newline-delimited JSON (one object per line, `done: true` on the last),
and streams by default, so the converted request always says `stream` explicitly.

Mapping decisions (each preserves meaning or raises `ConversionError`):

- Message content is one string: text parts are joined; images go into the message's
  `images` list as bare base64 (their position among the text parts is lost, as
  Ollama has no way to say it). Image links are refused: Ollama takes bytes only.
- Tool calls carry `arguments` as an object both ways (OpenAI uses a JSON string);
  tool results carry `tool_call_id` and the called function's `tool_name`.
- Sampling parameters go into `options` (`max_tokens` -> `num_predict`); `seed`,
  `stop`, `top_k` and the penalties are native options.
- `response_format` json_object -> `format: "json"`, json_schema -> `format: <schema>`.
- `reasoning_effort` -> `think` ("none" -> false, else the level low/medium/high);
  `thinking` in answers becomes `reasoning_content`.
- Ollama has no tool choice: "auto" is its only behaviour, "none" withholds the
  tools, "required" or a named function is refused.
- Usage: `prompt_eval_count` / `eval_count` (Ollama reports no cached tokens).
"""

from __future__ import annotations

from typing import Any, Final

from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    HUB_REQUEST_NOT_CONVERTED,
    ToOpenAIStream,
    dumps_str,
    hub_tool,
    json_args,
    json_schema_of,
    load_event_json,
    new_id,
    now,
    openai_error_chunk,
    openai_usage_dict,
    parse_data_url,
    require_dict,
    require_list,
    stop_list,
    text_of_parts,
)
from fastgate.convert.common import MALFORMED as _MALFORMED
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.vocab.usage import Usage, usage_from_ollama

__all__ = [
    "OllamaToOpenAIStream",
    "finish_from_ollama",
    "ollama_response_to_openai",
    "openai_request_to_ollama",
    "usage_from_ollama",
]

_OPTIONS: Final = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_THINK: Final = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


def finish_from_ollama(done_reason: Any, had_calls: bool) -> str:
    """OpenAI `finish_reason` for an Ollama `done_reason` (Ollama says "stop" for calls)."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if had_calls else "stop"


# ==================================================================================
# requests: hub -> Ollama
# ==================================================================================


def openai_request_to_ollama(req: dict[str, Any]) -> dict[str, Any]:
    """`/api/chat` body for a hub (OpenAI chat) request; `stream` is always explicit."""
    req = require_dict(req, "request body")
    out: dict[str, Any] = {"model": req.get("model")}
    out["messages"] = _messages_to_ollama(require_list(req.get("messages"), "messages"))
    out["stream"] = bool(req.get("stream"))
    options: dict[str, Any] = {}
    tools: list[dict[str, Any]] = []
    for key, value in req.items():
        if key in HUB_REQUEST_NOT_CONVERTED or value is None:
            continue
        if key in _OPTIONS:
            options[_OPTIONS[key]] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            if key == "max_completion_tokens" or req.get("max_completion_tokens") is None:
                options["num_predict"] = value
        elif key == "stop":
            stops = stop_list(value)
            if stops:
                options["stop"] = stops
        elif key == "n":
            if value != 1:
                raise ConversionError("n > 1 is not supported by Ollama channels")
        elif key == "tools":
            tools = [_tool_to_ollama(t, i) for i, t in enumerate(require_list(value, "tools"))]
        elif key == "tool_choice":
            if value == "none":
                continue
            if value != "auto":
                raise ConversionError(
                    f"tool_choice {value!r} is not supported by Ollama channels (auto only)"
                )
        elif key == "parallel_tool_calls":
            if value is False:
                raise ConversionError(
                    "parallel_tool_calls=false is not supported by Ollama channels"
                )
        elif key == "response_format":
            _response_format_to_ollama(require_dict(value, "response_format"), out)
        elif key == "reasoning_effort":
            if value == "none":
                out["think"] = False
            elif value in _THINK:
                out["think"] = _THINK[value]
            else:
                raise ConversionError(f"reasoning_effort {value!r} is not supported")
        elif (
            (key == "logprobs" and value is False)
            or (key == "logit_bias" and not value)
            or (key == "modalities" and value == ["text"])
        ):
            continue
        elif key in ("functions", "function_call"):
            raise ConversionError(
                f"legacy {key!r} is not supported by Ollama channels; use 'tools'"
            )
        else:
            raise ConversionError(f"parameter {key!r} is not supported by Ollama channels")
    if tools and req.get("tool_choice") != "none":
        out["tools"] = tools
    if options:
        out["options"] = options
    return out


def _messages_to_ollama(msgs: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for tool results
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        m = require_dict(m, where)
        role = m.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text_of_parts(m.get("content"), where)})
        elif role == "user":
            text, images = _user_content(m.get("content"), where)
            msg: dict[str, Any] = {"role": "user", "content": text}
            if images:
                msg["images"] = images
            out.append(msg)
        elif role == "assistant":
            out.append(_assistant_to_ollama(m, where, names))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ConversionError(f"{where}.tool_call_id must be a string")
            msg = {"role": "tool", "content": text_of_parts(m.get("content"), where)}
            msg["tool_call_id"] = call_id
            if call_id in names:
                msg["tool_name"] = names[call_id]
            out.append(msg)
        elif role == "function":
            raise ConversionError(f"{where}: legacy 'function' messages are not supported")
        else:
            raise ConversionError(f"{where}.role {role!r} is not supported")
    return out


def _image_b64(url: str, where: str) -> str:
    parsed = parse_data_url(url)
    if parsed is None:
        raise ConversionError(f"{where}: Ollama channels take images as data: URLs, not links")
    mime, b64 = parsed
    if not mime.startswith("image/"):
        raise ConversionError(f"{where}: {mime!r} is not an image")
    return b64


def _user_content(content: Any, where: str) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for j, p in enumerate(require_list(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        p = require_dict(p, pw)
        kind = p.get("type")
        if kind == "text":
            if not isinstance(p.get("text"), str):
                raise ConversionError(f"{pw}.text must be a string")
            texts.append(p["text"])
        elif kind == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise ConversionError(f"{pw}.image_url.url must be a string")
            images.append(_image_b64(url, pw))
        elif kind in ("input_audio", "file"):
            raise ConversionError(f"{pw}: {kind} parts are not supported by Ollama channels")
        else:
            raise ConversionError(f"{pw}: content part type {kind!r} is not supported")
    return "".join(texts), images


def _assistant_to_ollama(m: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    text = text_of_parts(m.get("content"), where, ("text", "refusal"))
    if not text and isinstance(m.get("refusal"), str):
        text = m["refusal"]
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    reasoning = m.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        msg["thinking"] = reasoning
    if m.get("function_call") is not None:
        raise ConversionError(f"{where}: legacy function_call is not supported; use tool_calls")
    calls = m.get("tool_calls")
    if calls:
        out_calls = []
        for k, tc in enumerate(require_list(calls, f"{where}.tool_calls")):
            tw = f"{where}.tool_calls[{k}]"
            tc = require_dict(tc, tw)
            if tc.get("type", "function") != "function":
                raise ConversionError(f"{tw}: only function tool calls are supported")
            fn = require_dict(tc.get("function"), f"{tw}.function")
            if not isinstance(fn.get("name"), str):
                raise ConversionError(f"{tw}.function.name must be a string")
            call: dict[str, Any] = {
                "function": {"name": fn["name"], "arguments": json_args(fn.get("arguments"), tw)}
            }
            if isinstance(tc.get("id"), str) and tc["id"]:
                call["id"] = tc["id"]
                names[tc["id"]] = fn["name"]
            out_calls.append(call)
        msg["tool_calls"] = out_calls
    return msg


def _tool_to_ollama(tool: Any, i: int) -> dict[str, Any]:
    name, desc, params = hub_tool(tool, i)
    out: dict[str, Any] = {"name": name}
    if desc is not None:
        out["description"] = desc
    out["parameters"] = params if params is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": out}


def _response_format_to_ollama(rf: dict[str, Any], out: dict[str, Any]) -> None:
    kind = rf.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        out["format"] = "json"
        return
    if kind == "json_schema":
        _, schema = json_schema_of(rf)
        out["format"] = schema
        return
    raise ConversionError(f"response_format {kind!r} is not supported by Ollama channels")


# ==================================================================================
# responses
# ==================================================================================


def _tool_calls_to_openai(calls: Any, start: int) -> list[dict[str, Any]]:
    """OpenAI tool calls (with `index` from `start`) for Ollama `tool_calls`."""
    if not isinstance(calls, list):
        raise UpstreamProtocolError("Ollama tool_calls is not a list")
    out = []
    for k, tc in enumerate(calls):
        try:
            fn = tc["function"]
            name = fn["name"]
            args = fn.get("arguments")
        except _MALFORMED as exc:
            raise UpstreamProtocolError("malformed Ollama tool call") from exc
        if not isinstance(name, str):
            raise UpstreamProtocolError("Ollama tool call name is not a string")
        if isinstance(args, str):
            arguments = args
        elif args is None or isinstance(args, dict):
            arguments = dumps_str(args or {})
        else:
            raise UpstreamProtocolError("Ollama tool call arguments are not an object")
        cid = tc.get("id")
        out.append(
            {
                "index": start + k,
                "id": cid if isinstance(cid, str) and cid else new_id("call_"),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    return out


def _message_of(obj: dict[str, Any]) -> dict[str, Any]:
    msg = obj.get("message")
    if msg is None:
        return {}
    if not isinstance(msg, dict):
        raise UpstreamProtocolError("Ollama message is not an object")
    for key in ("content", "thinking"):
        if msg.get(key) is not None and not isinstance(msg[key], str):
            raise UpstreamProtocolError(f"Ollama message {key} is not a string")
    return msg


def _error_of(obj: dict[str, Any]) -> dict[str, Any]:
    err = obj["error"]
    text = err if isinstance(err, str) else (err.get("message") if isinstance(err, dict) else None)
    return openai_error_chunk(str(text or "upstream error"), "server_error")


def ollama_response_to_openai(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Chat completion for a non-stream `/api/chat` answer."""
    if not isinstance(resp, dict):
        raise UpstreamProtocolError("Ollama response is not a JSON object")
    if resp.get("error") is not None:
        raise UpstreamProtocolError(f"Ollama error: {_error_of(resp)['error']['message']}")
    if "message" not in resp:
        raise UpstreamProtocolError("Ollama response has no message")
    msg = _message_of(resp)
    calls = _tool_calls_to_openai(msg["tool_calls"], 0) if msg.get("tool_calls") else []
    for c in calls:
        del c["index"]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": msg.get("content") or (None if calls else ""),
        "refusal": None,
    }
    if msg.get("thinking"):
        message["reasoning_content"] = msg["thinking"]
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
                "finish_reason": finish_from_ollama(resp.get("done_reason"), bool(calls)),
                "logprobs": None,
            }
        ],
        "usage": openai_usage_dict(usage_from_ollama(resp)),
    }


# ==================================================================================
# streams
# ==================================================================================


class OllamaToOpenAIStream(ToOpenAIStream):
    """Ollama NDJSON stream in, OpenAI chat-completion chunk SSE out.

    Each line is parsed once it is complete (a lone last line without its newline is
    taken at `close()`). The object with `done: true` ends the message: finish chunk,
    usage chunk (if asked for) and `[DONE]`; a stream that ends without it was cut
    short. An `{"error": ...}` line becomes an OpenAI error chunk and ends the stream.
    `feed_chunks` / `close_chunks` return hub chunks for composition (`ChainStream`).
    """

    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        max_line_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage = Usage()
        self._max = max_line_bytes
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already searched for a newline
        self._id = new_id("chatcmpl-")
        self._created = now()
        self._roled = False
        self._calls = 0
        self._ended = False  # done or error seen

    # -- public (feed / close / error_event: ToOpenAIStream) ----------------------

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for the lines `data` completes."""
        out: list[Any] = []
        if self._ended:
            return out
        buf = self._buf
        buf += data
        start = 0
        nl = buf.find(b"\n", self._scan)
        while nl >= 0:
            if nl - start > self._max:
                raise UpstreamProtocolError(f"Ollama stream line over {self._max} bytes")
            self._line(bytes(buf[start:nl]), out)
            start = nl + 1
            if self._ended:
                buf.clear()
                self._scan = 0
                return out
            nl = buf.find(b"\n", start)
        if start:
            del buf[:start]
        if len(buf) > self._max:
            raise UpstreamProtocolError(f"Ollama stream line over {self._max} bytes")
        self._scan = len(buf)
        return out

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF (the last line may lack its newline)."""
        out: list[Any] = []
        if not self._ended and self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            self._scan = 0
            self._line(rest, out)
        if not self._ended:
            raise UpstreamProtocolError("Ollama stream ended before done")
        return out

    # -- internals ---------------------------------------------------------------

    def _line(self, line: bytes, out: list[Any]) -> None:
        line = line.strip()
        if not line:
            return
        obj = load_event_json(line)
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Ollama stream line is not a JSON object")
        if obj.get("error") is not None:
            self._ended = True
            out.append(_error_of(obj))
            return
        msg = _message_of(obj)
        delta: dict[str, Any] = {}
        if not self._roled:
            self._roled = True
            delta["role"] = "assistant"
        if msg.get("thinking"):
            delta["reasoning_content"] = msg["thinking"]
        if msg.get("content"):
            delta["content"] = msg["content"]
        elif "role" in delta:
            delta["content"] = ""
        if msg.get("tool_calls"):
            calls = _tool_calls_to_openai(msg["tool_calls"], self._calls)
            self._calls += len(calls)
            delta["tool_calls"] = calls
        if delta:
            out.append(self._chunk(delta))
        done = obj.get("done")
        if done is True:
            self.usage = usage_from_ollama(obj)
            out.append(self._chunk({}, finish_from_ollama(obj.get("done_reason"), self._calls > 0)))
            if self.include_usage and self.usage.found:
                out.append(self._usage_chunk())
            out.append(DONE)
            self._ended = True
        elif done not in (False, None):
            raise UpstreamProtocolError("Ollama stream `done` is not a boolean")
