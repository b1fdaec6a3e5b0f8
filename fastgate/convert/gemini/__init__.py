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
- Hints dropped on purpose are listed where they are dropped: `request_to_hub`
  (Gemini-side) and `request_from_hub` (OpenAI-side).

Modules:

- shared.py            finish reasons, camel/snake field reader, skip-signature placeholder
- request_to_hub.py    Gemini request -> hub request (ingress)
- request_from_hub.py  hub request -> Gemini request (channel)
- response.py          non-stream bodies both ways; call-id prefix and call parts
- stream.py            `alt=sse` stream converters both ways

The usage codec is the vocabulary's (`fastgate.vocab.usage`); `usage_from_gemini` and
`gemini_usage_dict` are re-exported here.
"""

from fastgate.convert.gemini.request_from_hub import openai_request_to_gemini
from fastgate.convert.gemini.request_to_hub import gemini_request_to_openai, guess_ext
from fastgate.convert.gemini.response import gemini_response_to_openai, openai_response_to_gemini
from fastgate.convert.gemini.shared import FINISH_TO_GEMINI, SKIP_SIGNATURE, finish_from_gemini
from fastgate.convert.gemini.stream import GeminiToOpenAIStream, OpenAIToGeminiStream
from fastgate.vocab.usage import gemini_usage_dict, usage_from_gemini

__all__ = [
    "FINISH_TO_GEMINI",
    "SKIP_SIGNATURE",
    "GeminiToOpenAIStream",
    "OpenAIToGeminiStream",
    "finish_from_gemini",
    "gemini_request_to_openai",
    "gemini_response_to_openai",
    "gemini_usage_dict",
    "guess_ext",
    "openai_request_to_gemini",
    "openai_response_to_gemini",
    "usage_from_gemini",
]
