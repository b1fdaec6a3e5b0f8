"""Any-to-any conversion by composition through the hub, and one-call dispatchers.

A request from ingress A to channel B goes A -> hub -> B; a stream goes B -> hub -> A.
When neither side is OpenAI, `ChainStream` hands the first converter's hub chunks
(dicts) straight to the second, so each event is parsed once and serialized once.

Which converter serves which wire protocol is written once, in the tables below:
ingress protocols (`PROTOCOLS`) convert both ways; the channel-only protocols
(Ollama, Bedrock Converse) only to the hub. A channel type names its wire protocol
(`fastgate.providers`), and everything about converting its answers follows from it.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastgate.convert.anthropic import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from fastgate.convert.bedrock import converse_response_to_openai, openai_request_to_converse
from fastgate.convert.bedrock_stream import ConverseStreamToOpenAI
from fastgate.convert.common import DEFAULT_MAX_EVENT_BYTES
from fastgate.convert.errors import ConversionError
from fastgate.convert.gemini import (
    GeminiToOpenAIStream,
    OpenAIToGeminiStream,
    gemini_request_to_openai,
    gemini_response_to_openai,
    openai_request_to_gemini,
    openai_response_to_gemini,
)
from fastgate.convert.ollama import (
    OllamaToOpenAIStream,
    ollama_response_to_openai,
    openai_request_to_ollama,
)
from fastgate.vocab.usage import Usage

__all__ = [
    "CHANNEL_PROTOCOLS",
    "PROTOCOLS",
    "ChainStream",
    "StreamConverter",
    "convert_request",
    "convert_response",
    "stream_converter",
]

PROTOCOLS = ("openai", "anthropic", "gemini")  # a client may speak these
CHANNEL_PROTOCOLS = (*PROTOCOLS, "ollama", "bedrock")  # an upstream may speak these

# hub -> channel request body: f(hub, default_max_tokens); Gemini takes no default.
_REQUEST_FROM_HUB: dict[str, Any] = {
    "anthropic": openai_request_to_anthropic,
    "gemini": lambda hub, _max: openai_request_to_gemini(hub),
    "ollama": lambda hub, _max: openai_request_to_ollama(hub),
    "bedrock": openai_request_to_converse,
}
# channel response -> hub: f(resp, model)
_RESPONSE_TO_HUB: dict[str, Any] = {
    "anthropic": anthropic_response_to_openai,
    "gemini": gemini_response_to_openai,
    "ollama": ollama_response_to_openai,
    "bedrock": converse_response_to_openai,
}
# hub -> ingress response: f(hub, model)
_RESPONSE_FROM_HUB: dict[str, Any] = {
    "anthropic": openai_response_to_anthropic,
    "gemini": openai_response_to_gemini,
}
# channel stream -> hub chunks: cls(model, include_usage, max_event_bytes)
_STREAM_TO_HUB: dict[str, Any] = {
    "anthropic": AnthropicToOpenAIStream,
    "gemini": GeminiToOpenAIStream,
    "ollama": OllamaToOpenAIStream,
    "bedrock": ConverseStreamToOpenAI,
}
# hub chunks -> ingress stream: cls(model, max_event_bytes)
_STREAM_FROM_HUB: dict[str, Any] = {
    "anthropic": OpenAIToAnthropicStream,
    "gemini": OpenAIToGeminiStream,
}


class StreamConverter(Protocol):
    """What the data plane drives: bytes in, client bytes out, usage as it comes."""

    usage: Usage

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    def error_event(self, message: str, type_: str = ...) -> bytes: ...


class ChainStream:
    """Upstream -> hub -> client with two converters and no JSON in between.

    `first` turns the upstream's SSE into hub chunks (`feed_chunks`/`close_chunks`),
    `second` turns hub chunks into the client's SSE (`push`/`finish`). Usage is the
    upstream's, as `first` reads it.
    """

    __slots__ = ("first", "second")

    def __init__(
        self,
        first: Any,
        second: OpenAIToAnthropicStream | OpenAIToGeminiStream,
    ) -> None:
        self.first = first
        self.second = second

    @property
    def usage(self) -> Usage:
        """The upstream's usage, as reported so far."""
        return self.first.usage

    def feed(self, data: bytes) -> bytes:
        """Client bytes for what `data` completes."""
        items = self.first.feed_chunks(data)
        return self.second.push(items) if items else b""

    def close(self) -> bytes:
        """Client bytes at upstream EOF; raises UpstreamProtocolError if cut short."""
        items = self.first.close_chunks()
        out = self.second.push(items) if items else b""
        return out + self.second.finish()

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        """An error event in the client's protocol."""
        return self.second.error_event(message, type_)


def _check(protocol: str, known: tuple[str, ...] = PROTOCOLS) -> None:
    if protocol not in known:
        raise ValueError(f"unknown protocol {protocol!r}")


def convert_request(
    req: dict[str, Any],
    ingress: str,
    channel: str,
    *,
    model: str | None = None,
    stream: bool = False,
    default_max_tokens: int = 4096,
) -> dict[str, Any]:
    """The channel's request body for an ingress request body.

    For Gemini ingress, `model` and `stream` come from the URL; for a Gemini channel the
    returned body has neither (they go into the URL: `:streamGenerateContent?alt=sse`).
    Same protocol on both sides returns `req` itself (passthrough is the caller's job).
    """
    _check(ingress)
    _check(channel, CHANNEL_PROTOCOLS)
    if ingress == channel:
        return req
    if ingress == "anthropic":
        hub = anthropic_request_to_openai(req)
    elif ingress == "gemini":
        if model is None:
            raise ConversionError("model is required")
        hub = gemini_request_to_openai(req, model, stream)
    else:
        hub = req
    from_hub = _REQUEST_FROM_HUB.get(channel)
    return hub if from_hub is None else from_hub(hub, default_max_tokens)


def convert_response(
    resp: dict[str, Any], channel: str, ingress: str, model: str
) -> dict[str, Any]:
    """The ingress protocol's non-stream response for the channel's response body."""
    _check(ingress)
    _check(channel, CHANNEL_PROTOCOLS)
    if ingress == channel:
        return resp
    to_hub = _RESPONSE_TO_HUB.get(channel)
    hub = resp if to_hub is None else to_hub(resp, model)
    from_hub = _RESPONSE_FROM_HUB.get(ingress)
    return hub if from_hub is None else from_hub(hub, model)


def stream_converter(
    channel: str,
    ingress: str,
    model: str,
    include_usage: bool = False,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> StreamConverter | None:
    """The stream converter from `channel`'s SSE to `ingress`'s SSE (None: same protocol).

    `include_usage` matters for OpenAI ingress only: emit the usage-only chunk before
    `[DONE]` (the client asked for `stream_options.include_usage`).
    """
    _check(ingress)
    _check(channel, CHANNEL_PROTOCOLS)
    if ingress == channel:
        return None
    from_hub = _STREAM_FROM_HUB.get(ingress)
    to_hub = _STREAM_TO_HUB.get(channel)
    if to_hub is None:  # an OpenAI channel: its stream is hub chunks already
        return from_hub(model, max_event_bytes)
    if from_hub is None:  # OpenAI ingress
        return to_hub(model, include_usage, max_event_bytes)
    return ChainStream(to_hub(model, True, max_event_bytes), from_hub(model, max_event_bytes))
