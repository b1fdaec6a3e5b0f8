"""Anthropic Messages <-> hub (OpenAI Chat Completions): requests, responses, streams.

Mapping decisions (each one either preserves meaning or raises `ConversionError`):

- `system` (string or text blocks) <-> system/developer messages, hoisted to the top.
- Anthropic `tool_result` blocks <-> OpenAI `tool` messages; consecutive same-role
  messages are merged, tool results first, because Anthropic wants them that way.
- Images: base64 source <-> `data:` URL; URL source <-> http(s) URL. PDFs: `document`
  base64 source <-> OpenAI `file` part with a data URL; plain-text documents become text.
- `thinking` <-> `reasoning_effort` (budget <-> effort, see common.EFFORT_BUDGET);
  thinking blocks of earlier turns are dropped (only the model that wrote them can read
  them), thinking in responses becomes `reasoning_content` and back.
- `output_config.format` (JSON schema) <-> `response_format: json_schema`.
- An assistant message last in an Anthropic request is a prefill: other APIs would
  answer it instead of continuing it, so it is refused.
- Hints dropped on purpose are listed where they are dropped: `request_to_hub`
  (Anthropic-side) and `request_from_hub` (OpenAI-side).

Modules:

- request_to_hub.py    Anthropic request -> hub request (ingress)
- request_from_hub.py  hub request -> Anthropic request (channel)
- response.py          non-stream bodies both ways; finish/stop reason mapping
- stream.py            SSE stream converters both ways

The usage codec is the vocabulary's (`fastgate.vocab.usage`); `usage_from_anthropic`,
`anthropic_usage_dict` and `merge_anthropic_usage` are re-exported here.
"""

from fastgate.convert.anthropic.request_from_hub import openai_request_to_anthropic
from fastgate.convert.anthropic.request_to_hub import anthropic_request_to_openai
from fastgate.convert.anthropic.response import (
    FINISH_FROM_ANTHROPIC,
    STOP_FROM_OPENAI,
    anthropic_response_to_openai,
    finish_from_anthropic,
    openai_response_to_anthropic,
    stop_reason_from_openai,
)
from fastgate.convert.anthropic.stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from fastgate.vocab.usage import anthropic_usage_dict, merge_anthropic_usage, usage_from_anthropic

__all__ = [
    "FINISH_FROM_ANTHROPIC",
    "STOP_FROM_OPENAI",
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "anthropic_usage_dict",
    "finish_from_anthropic",
    "merge_anthropic_usage",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "stop_reason_from_openai",
    "usage_from_anthropic",
]
