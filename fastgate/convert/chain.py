"""Any-to-any conversion by composition through the hub, and one-call dispatchers.

A request from ingress A to channel B goes A -> hub -> B; a stream goes B -> hub -> A.
When neither side is OpenAI, `ChainStream` hands the first converter's hub chunks
(dicts) straight to the second, so each event is parsed once and serialized once.
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
from fastgate.vocab.usage import Usage

__all__ = [
    "PROTOCOLS",
    "ChainStream",
    "StreamConverter",
    "convert_request",
    "convert_response",
    "stream_converter",
]

PROTOCOLS = ("openai", "anthropic", "gemini")


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
        first: AnthropicToOpenAIStream | GeminiToOpenAIStream,
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


def _check(protocol: str) -> None:
    if protocol not in PROTOCOLS:
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
    _check(channel)
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
    if channel == "anthropic":
        return openai_request_to_anthropic(hub, default_max_tokens)
    if channel == "gemini":
        return openai_request_to_gemini(hub)
    return hub


def convert_response(
    resp: dict[str, Any], channel: str, ingress: str, model: str
) -> dict[str, Any]:
    """The ingress protocol's non-stream response for the channel's response body."""
    _check(ingress)
    _check(channel)
    if ingress == channel:
        return resp
    if channel == "anthropic":
        hub = anthropic_response_to_openai(resp, model)
    elif channel == "gemini":
        hub = gemini_response_to_openai(resp, model)
    else:
        hub = resp
    if ingress == "anthropic":
        return openai_response_to_anthropic(hub, model)
    if ingress == "gemini":
        return openai_response_to_gemini(hub, model)
    return hub


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
    _check(channel)
    if ingress == channel:
        return None
    if channel == "openai":
        if ingress == "anthropic":
            return OpenAIToAnthropicStream(model, max_event_bytes)
        return OpenAIToGeminiStream(model, max_event_bytes)
    if channel == "anthropic":
        if ingress == "openai":
            return AnthropicToOpenAIStream(model, include_usage, max_event_bytes)
        return ChainStream(
            AnthropicToOpenAIStream(model, True, max_event_bytes),
            OpenAIToGeminiStream(model, max_event_bytes),
        )
    if ingress == "openai":
        return GeminiToOpenAIStream(model, include_usage, max_event_bytes)
    return ChainStream(
        GeminiToOpenAIStream(model, True, max_event_bytes),
        OpenAIToAnthropicStream(model, max_event_bytes),
    )
