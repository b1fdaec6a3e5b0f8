"""Sans-IO protocol converters: OpenAI Chat Completions (the hub) <-> the other protocols.

Everything goes through the OpenAI chat shape (the hub): N ingress formats and M
channel formats need N + M converters, not N x M. Requests and non-stream responses are
dict -> dict functions; streams are classes fed upstream bytes that return client bytes
(`feed` / `close` / `error_event`, with `usage` filled as events pass). Nothing here
touches sockets or asyncio.

- errors.py          ConversionError (-> 400), UpstreamProtocolError (-> 502), error bodies
- common.py          hub vocabulary: DONE sentinel, data URLs, call-id codec, stream bases
- anthropic/         Anthropic Messages <-> hub (requests each way, responses, streams)
- gemini/            Gemini generateContent <-> hub (requests each way, responses, streams)
- bedrock.py         hub -> Bedrock Converse requests, Converse responses -> hub (channel only)
- bedrock_stream.py  ConverseStream (AWS event-stream frames) -> hub chunks
- ollama.py          hub -> Ollama /api/chat requests, its responses and streams -> hub
                     (channel only)
- chain.py           composition (e.g. Anthropic <-> Gemini) and one-call dispatchers

The usage codecs are the vocabulary's (`fastgate.vocab.usage`), not this package's.
"""

from fastgate.convert.anthropic import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
    usage_from_anthropic,
)
from fastgate.convert.chain import (
    ChainStream,
    StreamConverter,
    convert_request,
    convert_response,
    stream_converter,
)
from fastgate.convert.errors import (
    ConversionError,
    UpstreamProtocolError,
    convert_error_body,
    error_body,
    error_event,
)
from fastgate.convert.gemini import (
    GeminiToOpenAIStream,
    OpenAIToGeminiStream,
    gemini_request_to_openai,
    gemini_response_to_openai,
    openai_request_to_gemini,
    openai_response_to_gemini,
    usage_from_gemini,
)

__all__ = [
    "AnthropicToOpenAIStream",
    "ChainStream",
    "ConversionError",
    "GeminiToOpenAIStream",
    "OpenAIToAnthropicStream",
    "OpenAIToGeminiStream",
    "StreamConverter",
    "UpstreamProtocolError",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "convert_error_body",
    "convert_request",
    "convert_response",
    "error_body",
    "error_event",
    "gemini_request_to_openai",
    "gemini_response_to_openai",
    "openai_request_to_anthropic",
    "openai_request_to_gemini",
    "openai_response_to_anthropic",
    "openai_response_to_gemini",
    "stream_converter",
    "usage_from_anthropic",
    "usage_from_gemini",
]
