"""A fake Gemini (AI Studio) upstream speaking the generativelanguage REST format.

Same machinery, behaviours and recording API as FakeOpenAI (tests.fakes.base).
Endpoints, under `/v1beta/` and `/v1/` (and `/v1alpha/`):
`POST models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse`: SSE
events `data: {json}` ended by CRLF CRLF, as Google sends them; without it: one JSON
array streamed element by element, `[{..}\\n,\\r\\n{..}\\n]`), `:countTokens`, and
`:embedContent`, `:batchEmbedContents` (vectors by `embedding_for`, 8 values
unless `outputDimensionality` says otherwise; no token counts, like the Gemini API),
`GET models[/{model}]`. Auth: `x-goog-api-key` header or `?key=` (an
`Authorization: Bearer` token is accepted too); with `api_key` set, any other key
gets Google's 400 API_KEY_INVALID. Unknown top-level fields (e.g. OpenAI's
`messages`) and roles other than user/model are rejected like the real API does.

Deterministic answers: text "Hello from <name>" (cut to
`generationConfig.maxOutputTokens` pieces with finishReason MAX_TOKENS), prompt
tokens by `prompt_tokens_for(body)`, a `functionCall` part when a ToolCall is
scripted or the last user turn names a declared function. Every stream chunk carries
`usageMetadata` with the cumulative candidate count, so only the last one is the
total. `promptTokenCount` includes cached tokens (`cachedContentTokenCount`).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tests.fakes.base import (
    Answer,
    Behaviour,
    Fail,
    FakeUpstream,
    Ok,
    Recorded,
    StreamError,
    chat_prompt_tokens,
    embedding_for,
    pick_tool,
    text_of,
)

__all__ = [
    "STATUS_NAMES",
    "FakeGemini",
    "last_user_text",
    "prompt_tokens_for",
    "request_tools",
]

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
REQUEST_FIELDS = frozenset(
    {
        "model",
        "contents",
        "tools",
        "toolConfig",
        "tool_config",
        "safetySettings",
        "safety_settings",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "cachedContent",
        "cached_content",
    }
)
EMBED_FIELDS = frozenset(
    {
        "model",
        "content",
        "taskType",
        "task_type",
        "title",
        "outputDimensionality",
        "output_dimensionality",
    }
)
_METHOD_RE = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):([A-Za-z]+)$")
_MODELS_RE = re.compile(r"^/(v1|v1beta|v1alpha)/models(?:/([^/:]+))?/?$")
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
JSON_UTF8 = "application/json; charset=UTF-8"


def _get(d: dict, camel: str, snake: str) -> Any:
    """Google's JSON mapping accepts both lowerCamel and snake_case field names."""
    return d[camel] if camel in d else d.get(snake)


def prompt_tokens_for(body: Any) -> int:
    """Prompt tokens the fake computes: `chat_prompt_tokens` over the system
    instruction (if any) and each content's text parts — the same count as the
    equivalent OpenAI chat. A countTokens `generateContentRequest` is unwrapped."""
    if not isinstance(body, dict):
        return 0
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict) and "contents" not in body:
        body = inner
    texts = []
    si = _get(body, "systemInstruction", "system_instruction")
    if isinstance(si, dict):
        texts.append(text_of(si.get("parts")))
    elif isinstance(si, str):
        texts.append(si)
    texts += [text_of(c.get("parts")) for c in body.get("contents") or [] if isinstance(c, dict)]
    return chat_prompt_tokens(texts)


def request_tools(body: Any) -> list[tuple[str, Any]]:
    """(name, parameters schema) of each declared function."""
    out: list[tuple[str, Any]] = []
    for tool in body.get("tools") or [] if isinstance(body, dict) else []:
        if not isinstance(tool, dict):
            continue
        for fd in _get(tool, "functionDeclarations", "function_declarations") or []:
            if isinstance(fd, dict):
                schema = fd.get("parameters") or _get(
                    fd, "parametersJsonSchema", "parameters_json_schema"
                )
                out.append((str(fd.get("name", "")), schema))
    return out


def last_user_text(body: Any) -> str:
    """Text of the last user turn ("" when it only carries function responses)."""
    for c in reversed(body.get("contents") or [] if isinstance(body, dict) else []):
        if isinstance(c, dict) and c.get("role", "user") == "user":
            return text_of(c.get("parts"))
    return ""


def _validate(body: dict) -> str | None:
    for key in body:
        if key not in REQUEST_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    for c in contents:
        if not isinstance(c, dict):
            return "Invalid JSON payload received. Expected an object in contents."
        if c.get("role", "user") not in ("user", "model", "function"):
            return "Please use a valid role: user, model."
    return None


def _sse_json(doc: Any) -> bytes:
    """One SSE event as Google writes it: `": "` after keys, CRLF line ends."""
    return (
        b"data: "
        + json.dumps(doc, separators=(",", ": "), ensure_ascii=False).encode()
        + b"\r\n\r\n"
    )


def _pretty(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


class FakeGemini(FakeUpstream):
    """Fake Gemini upstream; see the module docstring."""

    default_models = ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro"]
    json_content_type = JSON_UTF8
    error_content_type = JSON_UTF8
    sse_content_type = "text/event-stream"

    def __init__(
        self,
        name: str = "gemini",
        *,
        models: list[str] | None = None,
        port: int = 0,
        behaviour: Behaviour | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(name, models=models, port=port, behaviour=behaviour)
        self.api_key = api_key

    # ------------------------------------------------------------------ hooks

    def _new_request_id(self) -> str:
        return uuid.uuid4().hex[:22]  # the responseId

    def _headers(
        self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {"content-type": content_type, "vary": "Origin, X-Origin, Referer"}
        if extra:
            headers.update(extra)
        return headers

    def _dump(self, doc: Any) -> bytes:
        return _pretty(doc)

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> dict:
        if message is None:
            message = _MESSAGES.get(status, f"fake upstream error {status}")
        return {
            "error": {
                "code": status,
                "message": message,
                "status": STATUS_NAMES.get(status, "UNKNOWN"),
            }
        }

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        doc = self._error_doc(err.status, err.message, rec)
        if rec.query_params.get("alt") == "sse":
            return _sse_json(doc)
        return (b"\n,\r\n" if rec.response_body else b"[") + _pretty(doc) + b"\n]"

    # ------------------------------------------------------------------ routing

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        m_method = _METHOD_RE.match(path)
        m_models = _MODELS_RE.match(path)
        if not m_method and not m_models:
            return self._error(rec, 404, f"Method not found: {path}")
        problem = self._auth_problem(rec)
        if problem is not None:
            return problem
        if m_models:
            if method != "GET":
                return self._error(rec, 400, "Method not allowed")
            return self._models(rec, m_models.group(1), m_models.group(2))
        assert m_method is not None
        _version, model, verb = m_method.groups()
        if method != "POST":
            return self._error(rec, 400, "Method not allowed")
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, 400, "Invalid JSON payload received.")
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if verb in ("embedContent", "batchEmbedContents"):
            return self._embed(rec, model, verb, body, ok)
        if verb == "countTokens":
            return self._count_tokens(rec, body, ok)
        if verb not in ("generateContent", "streamGenerateContent"):
            return self._error(rec, 404, f"Method {verb} is not supported by the fake.")
        problem_text = _validate(body)
        if problem_text:
            return self._error(rec, 400, problem_text)

        config = _get(body, "generationConfig", "generation_config") or {}
        max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
        tool = pick_tool(request_tools(body), last_user_text(body))
        ans = self._answer(
            behaviour,
            rec,
            computed_prompt=prompt_tokens_for(body),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            tool=tool,
        )
        rec.notes["usage_wire"] = self._usage(ans, ans.completion_tokens)
        rec.notes["model"] = model
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if verb == "generateContent":
            return await self._answer_once(
                request, rec, behaviour, ok, self._response(model, ans, rec)
            )
        chunks = self._chunks(model, ans, rec)
        if rec.query_params.get("alt") == "sse":
            return await self._stream(request, rec, behaviour, ok, [_sse_json(c) for c in chunks])
        events = [(b"[" if i == 0 else b"\n,\r\n") + _pretty(c) for i, c in enumerate(chunks)]
        events.append(b"\n]")
        return await self._stream(request, rec, behaviour, ok, events, content_type=JSON_UTF8)

    def _auth_problem(self, rec: Recorded) -> web.Response | None:
        key = rec.headers.get("x-goog-api-key") or rec.query_params.get("key")
        if not key:
            if rec.headers.get("authorization", "").lower().startswith("bearer "):
                return None
            return self._error(
                rec,
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to "
                "call this API.",
            )
        if self.api_key is not None and key != self.api_key:
            doc = self._error_doc(400, "API key not valid. Please pass a valid API key.", rec)
            doc["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            return self._error_with(rec, 400, doc)
        return None

    def _error_with(self, rec: Recorded, status: int, doc: dict) -> web.Response:
        return self._fail_response(rec, Fail(status, body=doc))

    def _count_tokens(self, rec: Recorded, body: dict, ok: Ok) -> web.Response:
        inner = body.get("generateContentRequest")
        contents = body.get("contents", inner.get("contents") if isinstance(inner, dict) else None)
        if not isinstance(contents, list):
            return self._error(
                rec, 400, "* CountTokensRequest.contents: contents is not specified\n"
            )
        n = ok.prompt_tokens if ok.prompt_tokens is not None else prompt_tokens_for(body)
        rec.usage = {
            "prompt_tokens": n,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "total_tokens": n,
        }
        doc = {"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}
        return self._json(rec, doc, extra=ok.headers)

    def _embed(self, rec: Recorded, model: str, verb: str, body: dict, ok: Ok) -> web.Response:
        """`embedContent` -> `{"embedding":{"values"}}`; `batchEmbedContents` (every
        request naming `models/{model}`) -> `{"embeddings":[{"values"}]}`. Like the
        Gemini API, no token counts; `rec.usage` holds the words embedded (for tests)."""
        if verb == "embedContent":
            items = [body]
        else:
            items = body.get("requests")
            if not isinstance(items, list) or not items:
                return self._error(rec, 400, "* BatchEmbedContentsRequest.requests: empty")
            for item in items:
                if not isinstance(item, dict) or item.get("model") != f"models/{model}":
                    return self._error(
                        rec,
                        400,
                        "Model names in the batch requests must match the model in the URL.",
                    )
        vectors = []
        n = 0
        for item in items:
            for k in item:
                if k not in EMBED_FIELDS:
                    return self._error(
                        rec,
                        400,
                        f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.',
                    )
            content = item.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                return self._error(
                    rec, 400, "* EmbedContentRequest.content: contents is not specified"
                )
            text = text_of(parts)
            dims = _get(item, "outputDimensionality", "output_dimensionality") or 8
            vectors.append(embedding_for(text, int(dims)))
            n += len(text.split())
        rec.usage = {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}
        if verb == "embedContent":
            return self._json(rec, {"embedding": {"values": vectors[0]}}, extra=ok.headers)
        doc = {"embeddings": [{"values": v} for v in vectors]}
        return self._json(rec, doc, extra=ok.headers)

    def _models(self, rec: Recorded, version: str, model: str | None) -> web.Response:
        def obj(mid: str) -> dict:
            return {
                "name": f"models/{mid}",
                "version": "001",
                "displayName": mid.replace("-", " ").title(),
                "description": f"Fake {mid}",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 8192,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "temperature": 1,
                "topP": 0.95,
                "topK": 40,
                "maxTemperature": 2,
            }

        if model is not None:
            if model not in self.models:
                return self._error(
                    rec, 404, f"models/{model} is not found for API version {version}"
                )
            return self._json(rec, obj(model))
        q = rec.query_params
        start = int(q.get("pageToken") or 0)
        size = int(q.get("pageSize") or 50)
        page = self.models[start : start + size]
        doc: dict[str, Any] = {"models": [obj(m) for m in page]}
        if start + size < len(self.models):
            doc["nextPageToken"] = str(start + size)
        return self._json(rec, doc)

    # ------------------------------------------------------------------ wire format

    @staticmethod
    def _usage(ans: Answer, candidates: int) -> dict:
        usage = {
            "promptTokenCount": ans.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": ans.prompt_tokens + candidates,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": ans.prompt_tokens}],
        }
        if ans.cached_tokens:
            usage["cachedContentTokenCount"] = ans.cached_tokens
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": ans.cached_tokens}]
        return usage

    @staticmethod
    def _candidate(parts: list[dict], finish: str | None) -> dict:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if finish:
            cand["finishReason"] = finish
        cand["index"] = 0
        return cand

    @staticmethod
    def _call_part(ans: Answer) -> dict:
        return {"functionCall": {"name": ans.tool_name, "args": ans.tool_input}}

    def _response(self, model: str, ans: Answer, rec: Recorded) -> dict:
        parts: list[dict] = []
        if ans.text or ans.tool_name is None:
            parts.append({"text": ans.text})
        if ans.tool_name is not None:
            parts.append(self._call_part(ans))
        return {
            "candidates": [self._candidate(parts, _FINISH[ans.stop])],
            "usageMetadata": self._usage(ans, ans.completion_tokens),
            "modelVersion": model,
            "responseId": rec.response_request_id,
        }

    def _chunks(self, model: str, ans: Answer, rec: Recorded) -> list[dict]:
        parts = [[{"text": p}] for p in ans.pieces]
        if ans.tool_name is not None:
            parts.append([self._call_part(ans)])
        out = []
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            seen = ans.completion_tokens if last else min(i + 1, ans.completion_tokens)
            out.append(
                {
                    "candidates": [self._candidate(p, _FINISH[ans.stop] if last else None)],
                    "usageMetadata": self._usage(ans, seen),
                    "modelVersion": model,
                    "responseId": rec.response_request_id,
                }
            )
        return out
