"""Protocol plumbing around the exchange: which ingress a request speaks, what
the upstream request for a channel looks like, and how its response becomes the
client's (passthrough scanning or conversion through the OpenAI hub).

The OpenAI -> OpenAI passthrough stays inline in the handler (it is the hot
path); everything here runs only when the ingress is Anthropic or Gemini, the
channel speaks another protocol, or the channel needs a different URL (Azure).
Nothing here names a channel type: what differs per type is asked of its registry
entry (`fastgate.providers.registry`), what differs per protocol of `convert.chain`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson

from fastgate import errors
from fastgate.convert import (
    ConversionError,
    convert_request,
    convert_response,
    stream_converter,
)
from fastgate.convert.embeddings import openai_embeddings
from fastgate.convert.errors import UpstreamProtocolError
from fastgate.providers import registry
from fastgate.scan.estimate import prompt_chars, tokens
from fastgate.vocab.protocols import ANTHROPIC, GEMINI, OPENAI
from fastgate.vocab.usage import Usage, estimate_tokens, reported_service_tier, usage_from_openai

# Ingress kinds (the protocol names are the vocabulary's; re-exported here)
MESSAGES, COUNT = "messages", "count"
GENERATE, STREAM_GENERATE = "generateContent", "streamGenerateContent"
COUNT_TOKENS = "countTokens"
EMBEDDINGS = b"/v1/embeddings"  # converted to each channel type's own embedding API


class Ingress:
    """What the request path says: protocol, endpoint kind, and (Gemini) the model."""

    __slots__ = ("alt_sse", "kind", "model", "protocol", "query_key")

    def __init__(self, protocol: str, kind: str, model: str = "", alt_sse: bool = False) -> None:
        self.protocol = protocol
        self.kind = kind
        self.model = model
        self.alt_sse = alt_sse
        self.query_key = b""


def classify(path: bytes, query: bytes) -> Ingress | None:
    """The ingress of a POST, or None for a plain OpenAI `/v1/*` path."""
    if path.startswith(b"/v1/messages"):
        if path == b"/v1/messages":
            return Ingress(ANTHROPIC, MESSAGES)
        if path == b"/v1/messages/count_tokens":
            return Ingress(ANTHROPIC, COUNT)
        return None
    if path.startswith(b"/v1beta/models/") or (path.startswith(b"/v1/models/") and b":" in path):
        rest = path.split(b"/models/", 1)[1]
        model, sep, method = rest.rpartition(b":")
        if not sep or method not in (b"generateContent", b"streamGenerateContent", b"countTokens"):
            raise errors.NotFound(f"no route for POST {path.decode('latin-1')}")
        ing = Ingress(GEMINI, method.decode(), model.decode("utf-8", "replace"))
        if query:
            params = dict(parse_qsl(query.decode("latin-1")))
            ing.alt_sse = params.get("alt") == "sse"
            ing.query_key = params.get("key", "").encode("latin-1")
        return ing
    return None


# -- upstream requests -----------------------------------------------------------------


def hub_request(ex: Any) -> dict[str, Any]:
    """The request in the OpenAI chat shape (cached on the exchange)."""
    hub = ex.hub
    if hub is None:
        ing = ex.ingress
        try:
            hub = convert_request(ex.obj, ing.protocol, "openai", model=ex.model, stream=ex.stream)
        except ConversionError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        hub = dict(hub)
        hub["model"] = ex.model
        if ex.stream:
            hub["stream"] = True
        ex.hub = hub
    return hub


def converted_request(ex: Any, ch: Any) -> tuple[bytes, bytes, list[bytes]]:
    """(target path+query, body, extra header lines) for a channel whose protocol
    differs from the ingress (or whose URL differs, Azure): the channel type's."""
    try:
        if ex.head.path == EMBEDDINGS:  # to the channel type's own embedding API
            return ch.kind.embed_request(ch, ex.obj, ex.upstream_model)
        hub = hub_request(ex)
        return registry.get(ch.type).converted_request(
            ch, hub, ex.model, ex.upstream_model, ex.stream
        )
    except ConversionError as exc:
        raise errors.InvalidRequest(str(exc)) from exc


def openai_target(ex: Any, ch: Any) -> tuple[bytes, bytes]:
    """(path, query) of an OpenAI-ingress passthrough on the channel (Azure rewrites it)."""
    head = ex.head
    return ch.kind.openai_target(ch, ex.model, ex.upstream_model, head.path, head.query)


def passthrough_request(ex: Any, ch: Any) -> tuple[bytes, bytes]:
    """(target, body) for an Anthropic or Gemini request to a channel of its own kind."""
    ing = ex.ingress
    model = ex.upstream_model
    if ing.protocol == ANTHROPIC:
        body = ex.head.body
        if model != ex.requested:
            obj = dict(ex.obj, model=model)
            body = orjson.dumps(obj)
        return ex.head.path, body
    # Gemini: the model is in the URL; keep the client's query minus its key.
    query = ex.head.query
    params = [(k, v) for k, v in parse_qsl(query.decode("latin-1")) if k != "key"]
    target = b"/v1beta/models/" + quote(model, safe="").encode() + b":" + ing.kind.encode()
    if params:
        target += b"?" + urlencode(params).encode("latin-1")
    return target, ex.head.body


# -- responses -------------------------------------------------------------------------


def stream_processor(ex: Any, ch: Any) -> Any:
    """The stream converter from the channel's wire format to the ingress's."""
    ing = ex.ingress.protocol
    try:
        conv = stream_converter(ch.protocol, ing, ex.model, ex.client_include_usage)
    except ValueError:
        raise errors.UpstreamError(f"no stream converter for channel type {ch.type}") from None
    if ing == GEMINI and not ex.ingress.alt_sse:
        conv = SSEToJSONArray(conv)
    return conv


def convert_body(
    ex: Any, ch: Any, body: bytes, headers: list[bytes] | None = None
) -> tuple[bytes, Usage]:
    """A whole non-stream response converted to the ingress's shape, and its usage
    (`headers`: the upstream's forwarded header pieces, which some usage is in)."""
    try:
        resp = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamError(f"upstream sent invalid JSON: {exc}") from exc
    if ex.head.path == EMBEDDINGS:
        return embeddings_body(ex, ch, resp, headers or [])
    model = ex.model
    ing = ex.ingress.protocol
    try:
        hub = convert_response(resp, ch.protocol, OPENAI, model)
        out = hub if ing == OPENAI else convert_response(hub, OPENAI, ing, model)
    except ConversionError as exc:
        raise errors.UpstreamError(f"upstream response could not be converted: {exc}") from exc
    usage = Usage()
    u = hub.get("usage") if isinstance(hub, dict) else None
    if isinstance(u, dict):
        usage_from_openai(u, usage)
    usage.service_tier = reported_service_tier(resp)
    return orjson.dumps(out), usage


def embeddings_body(ex: Any, ch: Any, resp: Any, headers: list[bytes]) -> tuple[bytes, Usage]:
    """An embeddings answer of the channel's own API as OpenAI's. An upstream that
    reports no token count (the Gemini API) gets the gateway's estimate of the
    input (`scan.estimate`, recorded `estimated`), the same in answer and record."""
    try:
        vectors, usage = ch.kind.embed_response(ch, resp, ex.upstream_model, headers)
    except UpstreamProtocolError as exc:
        raise errors.UpstreamError(f"upstream embeddings answer unreadable: {exc}") from exc
    if not usage.found:
        usage = Usage(prompt_tokens=tokens(prompt_chars(ex.head.body)), found=True, estimated=True)
    out = openai_embeddings(vectors, ex.model, usage, ex.obj.get("encoding_format"))
    return orjson.dumps(out), usage


class SSEToJSONArray:
    """Gemini's streamGenerateContent without alt=sse: a JSON array, one element
    per converted SSE event, written as the events come."""

    __slots__ = ("_conv", "_first", "_pending")

    def __init__(self, conv: Any) -> None:
        self._conv = conv
        self._first = True
        self._pending = b""

    @property
    def usage(self) -> Usage:
        return self._conv.usage

    def _frame(self, sse: bytes) -> bytes:
        buf = self._pending + sse
        out = []
        while True:
            i = buf.find(b"\n\n")
            j = buf.find(b"\r\n\r\n")
            if i < 0 and j < 0:
                break
            if j >= 0 and (i < 0 or j < i):
                event, buf = buf[:j], buf[j + 4 :]
            else:
                event, buf = buf[:i], buf[i + 2 :]
            data = b"\n".join(
                line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")
            )
            if not data:
                continue
            out.append((b"[" if self._first else b",\r\n") + data)
            self._first = False
        self._pending = buf
        return b"".join(out)

    def feed(self, data: bytes) -> bytes:
        return self._frame(self._conv.feed(data))

    def close(self) -> bytes:
        out = self._frame(self._conv.close())
        return out + (b"[]" if self._first else b"]")

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        err = orjson.dumps({"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}})
        return (b"[" if self._first else b",\r\n") + err + b"]"


def count_tokens_locally(ex: Any) -> bytes:
    """Answer a count-tokens call when no channel of the ingress's kind serves it."""
    obj = ex.obj
    n = estimate_tokens(obj.get("messages") or obj.get("contents") or obj)
    n += estimate_tokens(obj.get("system") or obj.get("systemInstruction") or "")
    if ex.ingress.protocol == ANTHROPIC:
        return orjson.dumps({"input_tokens": n})
    return orjson.dumps({"totalTokens": n})
