"""Shared pieces of the converters: the hub's vocabulary and small codecs.

The hub is the OpenAI Chat Completions shape (requests, responses, stream chunks as
dicts). It is the OpenAI wire format plus two widely used extensions that let
conversions through it keep information the three protocols share:

- `reasoning_content` on messages and deltas (the reasoning text of thinking models, as
  DeepSeek, vLLM and others name it);
- `top_k` on requests (as vLLM accepts it); OpenAI itself rejects it with a clear 400.

A stream of hub chunks is a list of dicts ending with the `DONE` sentinel.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import time
import uuid
from typing import Any, Final

import orjson

from fastgate.convert.errors import ConversionError, UpstreamProtocolError, openai_error_event
from fastgate.sse.decoder import SSEDecoder, SSEError
from fastgate.vocab.usage import Usage, openai_usage_dict, usage_from_openai
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DONE",
    "HUB_REQUEST_NOT_CONVERTED",
    "FromOpenAIStream",
    "ToOpenAIStream",
    "chunk_bytes",
    "decode_call_id",
    "encode_call_id",
    "foreign_id",
    "guess_mime",
    "hub_id",
    "hub_items",
    "load_event_json",
    "make_data_url",
    "new_id",
    "now",
    "openai_error_chunk",
    "openai_usage_dict",
    "parse_data_url",
    "reasoning_tokens_of",
    "sse_close",
    "sse_feed_data",
    "usage_from_openai",
]


class _Done:
    """The end of a hub chunk stream (OpenAI's `data: [DONE]`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()

# What indexing into a malformed upstream object raises: turned into UpstreamProtocolError.
MALFORMED: Final = (KeyError, TypeError, AttributeError, IndexError)

# Hub (OpenAI chat) request keys that a converter to another protocol does not map
# to a parameter: the body's own parts (model, messages, stream and its options),
# and OpenAI's account-side settings, which another provider has no place for.
# Each converter reads the body's own parts itself and drops the rest.
HUB_REQUEST_NOT_CONVERTED: Final = frozenset(
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

# Gemini may stream generated images inline; keep the bound generous.
DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


def now() -> int:
    """Unix seconds for `created` fields."""
    return int(time.time())


def new_id(prefix: str) -> str:
    """A fresh opaque id (`chatcmpl-…`, `msg_…`) when the upstream gave none."""
    return prefix + uuid.uuid4().hex[:24]


def hub_id(upstream_id: Any) -> str:
    """`chatcmpl-<upstream id>` (a fresh id when the upstream gave none)."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("chatcmpl-") else "chatcmpl-" + upstream_id
    return new_id("chatcmpl-")


def foreign_id(hub: Any, prefix: str = "") -> str:
    """An id for another protocol from a hub id: `chatcmpl-` comes off, `prefix` goes on.

    So an id survives a trip through the hub unchanged (msg_1 -> chatcmpl-msg_1 -> msg_1).
    """
    if not isinstance(hub, str) or not hub:
        return new_id(prefix)
    if hub.startswith("chatcmpl-"):
        hub = hub[9:]
    return hub if hub.startswith(prefix) else prefix + hub


def load_event_json(data: bytes) -> Any:
    """Parse one upstream event's JSON; malformed data is the upstream's fault."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        snippet = data[:200].decode("utf-8", "replace")
        raise UpstreamProtocolError(
            f"malformed JSON in upstream stream event: {snippet!r}"
        ) from exc


def hub_items(datas: list[bytes]) -> list[Any]:
    """OpenAI SSE events' data -> hub items (`[DONE]` -> DONE, the rest parsed JSON)."""
    items: list[Any] = []
    loads = orjson.loads
    try:
        for data in datas:
            if data:
                items.append(DONE if data == b"[DONE]" else loads(data))
    except orjson.JSONDecodeError:
        load_event_json(data)  # raises UpstreamProtocolError, naming the data
        raise
    return items


def chunk_bytes(items: list[Any]) -> bytes:
    """Hub chunks -> OpenAI SSE bytes."""
    out = []
    for it in items:
        if it is DONE:
            out.append(b"data: [DONE]\n\n")
        else:
            out.append(b"data: " + orjson.dumps(it) + b"\n\n")
    return b"".join(out)


def sse_feed_data(dec: SSEDecoder, data: bytes) -> list[bytes]:
    """`dec.feed_data(data)`; a framing error is the upstream's fault."""
    try:
        return dec.feed_data(data)
    except SSEError as exc:
        raise UpstreamProtocolError(str(exc)) from exc


def sse_close(dec: SSEDecoder) -> list[Any]:
    """`dec.close()`; a framing error is the upstream's fault."""
    try:
        return dec.close()
    except SSEError as exc:
        raise UpstreamProtocolError(str(exc)) from exc


# --- data: URLs and media -----------------------------------------------------------


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a `data:<mime>;base64,<data>` URL, else None.

    A data URL that is not base64 is re-encoded so that every target (Anthropic
    `base64` source, Gemini `inlineData`) receives base64.
    """
    if not url.startswith("data:"):
        return None
    head, sep, payload = url[5:].partition(",")
    if not sep:
        raise ConversionError("malformed data: URL (no comma)")
    params = head.split(";")
    mime = params[0] or "text/plain"
    if "base64" in params[1:]:
        return mime, payload
    from urllib.parse import unquote_to_bytes

    return mime, base64.b64encode(unquote_to_bytes(payload)).decode()


def make_data_url(mime: str, b64: str) -> str:
    """`data:<mime>;base64,<b64>`: how the hub carries inline media."""
    return f"data:{mime};base64,{b64}"


def guess_mime(url_or_name: str, default: str | None = None) -> str | None:
    """Mime type from a URL's or file name's extension (query string ignored)."""
    path = url_or_name.split("?", 1)[0].split("#", 1)[0]
    mime, _ = mimetypes.guess_type(path, strict=False)
    return mime or default


# --- tool call ids carrying Gemini thought signatures --------------------------------
#
# Gemini has no tool call ids, but thinking models attach an opaque `thoughtSignature`
# to function calls that must come back with the call in the next request (Gemini 3
# rejects a function call without it). The only field that every client echoes back
# unchanged is the call id, so the signature travels inside it, base64url-encoded
# (the alphabet Anthropic's tool_use id pattern `[A-Za-z0-9_-]+` accepts).

_SIG_MARK: Final = "__sig_"


def encode_call_id(base: str, signature: str | None) -> str:
    """`base`, plus the thought signature when there is one."""
    if not signature:
        return base
    try:
        raw = base64.b64decode(signature + "=" * (-len(signature) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        raw = signature.encode()
    return base + _SIG_MARK + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_call_id(call_id: str) -> tuple[str, str | None]:
    """(id without signature, standard-base64 signature or None)."""
    base, sep, enc = call_id.partition(_SIG_MARK)
    if not sep or not enc:
        return call_id, None
    try:
        raw = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4))
    except (binascii.Error, ValueError):
        return call_id, None
    return base, base64.b64encode(raw).decode()


# --- usage --------------------------------------------------------------------------
#
# The usage codec is the vocabulary's (`fastgate.vocab.usage`); `usage_from_openai`,
# `openai_usage_dict` and `reasoning_tokens_of` are re-exported for the converters.


# --- small request helpers ----------------------------------------------------------


def require_dict(obj: Any, what: str) -> dict[str, Any]:
    """`obj` if it is a JSON object, else a client-facing ConversionError."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{what} must be a JSON object")
    return obj


def require_list(obj: Any, what: str) -> list[Any]:
    """`obj` if it is a JSON array, else a client-facing ConversionError."""
    if not isinstance(obj, list):
        raise ConversionError(f"{what} must be an array")
    return obj


def hub_tool(
    tool: Any, i: int, *, by: str = "", nonempty: bool = False
) -> tuple[str, str | None, dict[str, Any] | None]:
    """Validate hub `tools[i]` once for every converter: (name, description, parameters).

    `by` names the provider in the unsupported-type error (" by Gemini"); `nonempty` is
    for upstreams that reject an empty name, and then drops an empty description too.
    """
    tool = require_dict(tool, f"tools[{i}]")
    if tool.get("type") != "function":
        raise ConversionError(f"tools[{i}]: tool type {tool.get('type')!r} is not supported{by}")
    fn = require_dict(tool.get("function"), f"tools[{i}].function")
    name = fn.get("name")
    if not isinstance(name, str) or (nonempty and not name):
        raise ConversionError(f"tools[{i}].function.name must be a string")
    desc = fn.get("description")
    if not isinstance(desc, str) or (nonempty and not desc):
        desc = None
    params = fn.get("parameters")
    return name, desc, params if isinstance(params, dict) else None


def allowed_tool_names(tc: dict[str, Any]) -> tuple[list[str], bool]:
    """A `tool_choice` of type allowed_tools: (names in order, whether mode is required)."""
    at = require_dict(tc.get("allowed_tools"), "tool_choice.allowed_tools")
    names: list[str] = []
    for t in require_list(at.get("tools"), "tool_choice.allowed_tools.tools"):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ConversionError("tool_choice.allowed_tools.tools needs function names")
        names.append(fn["name"])
    return names, at.get("mode") == "required"


def json_schema_of(rf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `response_format` of type json_schema: (its json_schema object, the schema)."""
    js = require_dict(rf.get("json_schema"), "response_format.json_schema")
    schema = js.get("schema")
    if not isinstance(schema, dict):
        raise ConversionError("response_format.json_schema.schema must be an object")
    return js, schema


def json_args(arguments: Any, where: str) -> dict[str, Any]:
    """Tool call `arguments` (a JSON string) as an object; '' means no arguments."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise ConversionError(f"{where}: function.arguments must be a JSON string")
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise ConversionError(f"{where}: function.arguments is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ConversionError(f"{where}: function.arguments must encode a JSON object")
    return value


def dumps_str(obj: Any) -> str:
    """Compact JSON text (tool arguments, tool results)."""
    return orjson.dumps(obj).decode()


def stop_list(stop: Any, where: str = "stop") -> list[str]:
    """OpenAI `stop` (string or list) as a list of strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise ConversionError(f"{where} must be a string or an array of strings")


def text_of_parts(content: Any, where: str, allowed: tuple[str, ...] = ("text",)) -> str:
    """Plain text of a message `content` that may only hold text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ConversionError(f"{where}.content must be a string or an array of parts")
    out: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in allowed:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ConversionError(f"{where}.content[{i}]: part type {kind!r} is not supported here")
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if not isinstance(text, str):
            raise ConversionError(f"{where}.content[{i}] needs a string text")
        out.append(text)
    return "".join(out)


# Reasoning effort <-> thinking budget. Anthropic needs 1024 <= budget < max_tokens.
EFFORT_BUDGET: Final = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def effort_from_budget(budget: int) -> str:
    """The OpenAI `reasoning_effort` closest to a thinking token budget."""
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


# --- stream converter bases ---------------------------------------------------------


def openai_error_chunk(message: str, type_: str, code: Any = None) -> dict[str, Any]:
    """The hub item for an upstream error inside a stream (OpenAI's error object)."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class ToOpenAIStream:
    """Base of the `*ToOpenAI` stream converters: the OpenAI byte API over hub chunks.

    A subclass sets `model`, `usage`, `_id` and `_created` and implements `feed_chunks`
    / `close_chunks` (hub chunks, so a second converter can take them without JSON in
    between); `feed` / `close` here turn those into OpenAI SSE bytes.
    """

    model: str
    usage: Usage
    _id: str
    _created: int

    def feed(self, data: bytes) -> bytes:
        """Convert what `data` completes; raises UpstreamProtocolError on bad input."""
        return chunk_bytes(self.feed_chunks(data))

    def close(self) -> bytes:
        """At upstream EOF; raises UpstreamProtocolError if the message was cut short."""
        return chunk_bytes(self.close_chunks())

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        """An OpenAI stream error event (after a failure once bytes were sent)."""
        return openai_error_event(message, type_)

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        raise NotImplementedError

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF; raises UpstreamProtocolError if the stream was cut short."""
        raise NotImplementedError

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, index: int = 0
    ) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }

    def _usage_chunk(self, reasoning_tokens: int = 0) -> dict[str, Any]:
        """The choice-less chunk carrying `usage` (`stream_options.include_usage`)."""
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage_dict(self.usage, reasoning_tokens),
        }


class FromOpenAIStream:
    """Base of the `OpenAITo*` stream converters: OpenAI SSE or hub chunks in.

    A subclass sets `_dec` and `_ended` and implements `_chunk` (one hub chunk dict),
    `_finalize` (the closing events, once), `_saw_finish` and `error_event`; `feed`,
    `close`, `finish` and `push` here drive them.
    """

    _dec: SSEDecoder
    _ended: bool

    def feed(self, data: bytes) -> bytes:
        """Convert what `data` completes; raises UpstreamProtocolError on bad input."""
        return self.push(hub_items(sse_feed_data(self._dec, data)))

    def close(self) -> bytes:
        """At upstream EOF: the closing events if the stream was cut after its finish."""
        events = sse_close(self._dec)
        out = self.push(hub_items([ev.data for ev in events])) if events else b""
        return out + self.finish()

    def finish(self) -> bytes:
        """End of the hub stream: close it if it finished, else raise."""
        if self._ended:
            return b""
        if not self._saw_finish():
            raise UpstreamProtocolError("upstream stream ended before a finish_reason")
        out: list[bytes] = []
        try:
            self._finalize(out)
        except MALFORMED as exc:
            raise UpstreamProtocolError("malformed OpenAI stream") from exc
        return b"".join(out)

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        """This protocol's stream error event (after a failure once bytes were sent)."""
        raise NotImplementedError

    def push(self, items: list[Any]) -> bytes:
        """Convert hub chunks (dicts and `DONE`) to this protocol's events."""
        out: list[bytes] = []
        for it in items:
            if self._ended:
                break
            self._item(it, out)
        return b"".join(out)

    def _item(self, it: Any, out: list[bytes]) -> None:
        """One hub item's events onto `out` (`push`, one item)."""
        try:
            if it is DONE:
                self._finalize(out)
            elif isinstance(it, dict):
                self._chunk(it, out)
            else:
                raise UpstreamProtocolError("OpenAI stream chunk is not a JSON object")
        except MALFORMED as exc:
            raise UpstreamProtocolError("malformed OpenAI stream chunk") from exc

    def _saw_finish(self) -> bool:
        """Whether a `finish_reason` came (so EOF may close the stream)."""
        raise NotImplementedError

    def _chunk(self, c: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _finalize(self, out: list[bytes]) -> None:
        raise NotImplementedError
