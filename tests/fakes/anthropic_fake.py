"""A fake Anthropic upstream that speaks the Messages API wire format over a real socket.

Same machinery, behaviours and recording API as FakeOpenAI (tests.fakes.base).
Endpoints: `POST /v1/messages` (stream and not), `POST /v1/messages/count_tokens`,
`GET /v1/models[/{id}]`. It checks what the real API checks that a gateway could get
wrong: a key present, as `x-api-key` or as `Authorization: Bearer` (current official
SDKs send the latter; `Recorded.notes["auth"]` says which) and equal to `api_key`
when one is set,
`anthropic-version` present, `model`/`max_tokens`/`messages` present, roles only
user/assistant, no unknown top-level fields (e.g. OpenAI's `stream_options`).

Deterministic answers: text "Hello from <name>" (truncated to `max_tokens` pieces
with stop_reason "max_tokens"); input tokens by `prompt_tokens_for(body)`; a
`tool_use` block when a ToolCall is scripted or when the request has `tools` and the
last user message names one of them (arguments from `tool_args_for(input_schema)`).
Usage on the wire: `input_tokens` is the uncached part, cache read/creation apart,
as Anthropic reports it; `Recorded.usage` holds the gateway's normalized view.
"""

from __future__ import annotations

import asyncio
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
    dumps,
    pick_tool,
    text_of,
)

__all__ = [
    "ERROR_TYPES",
    "FakeAnthropic",
    "last_user_text",
    "prompt_tokens_for",
    "request_tools",
]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MESSAGES = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
}
# Top-level request fields the Messages API accepts (anything else is a 400).
MESSAGES_FIELDS = frozenset(
    {
        "model",
        "output_config",  # structured outputs (response_format json_schema)
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_format",
    }
)
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_RESET = "2023-11-14T22:14:20Z"


def prompt_tokens_for(body: Any) -> int:
    """Input tokens the fake computes: `chat_prompt_tokens` over the system prompt (if
    any) and each message's text blocks — the same count as the equivalent OpenAI chat."""
    if not isinstance(body, dict):
        return 0
    texts = []
    if body.get("system") is not None:
        texts.append(text_of(body["system"]))
    texts += [text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    return chat_prompt_tokens(texts)


def request_tools(body: Any) -> list[tuple[str, Any]]:
    """(name, input_schema) of each tool the request declares."""
    tools = body.get("tools") if isinstance(body, dict) else None
    return [
        (str(t.get("name", "")), t.get("input_schema")) for t in tools or [] if isinstance(t, dict)
    ]


def last_user_text(body: Any) -> str:
    """Text of the last user message ("" if it only carries tool results)."""
    for m in reversed(body.get("messages") or [] if isinstance(body, dict) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def _validate(body: dict) -> str | None:
    """The request checks of the real API that a converting gateway could trip over."""
    for key in body:
        if key not in MESSAGES_FIELDS:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    mt = body["max_tokens"]
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    msgs = body.get("messages")
    if msgs is None:
        return "messages: Field required"
    if not isinstance(msgs, list):
        return "messages: Input should be a valid list"
    if not msgs:
        return "messages: at least one message is required"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in m:
            return f"messages.{i}.content: Field required"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    return None


def _sse(event: str, obj: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(obj)}\n\n".encode()


def _display_name(model_id: str) -> str:
    base = re.sub(r"-\d{8}$", "", model_id)
    return " ".join(p.capitalize() for p in base.split("-"))


class FakeAnthropic(FakeUpstream):
    """Fake Anthropic upstream; see the module docstring."""

    default_models = [
        "claude-sonnet-4-20250514",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-20241022",
    ]

    def __init__(
        self,
        name: str = "anthropic",
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
        return "req_01" + uuid.uuid4().hex[:22]

    def _headers(
        self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {
            "content-type": content_type,
            "request-id": rec.response_request_id,
            "anthropic-organization-id": "00000000-0000-4000-8000-00000000fa6e",
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": _RESET,
            "anthropic-ratelimit-input-tokens-limit": "400000",
            "anthropic-ratelimit-input-tokens-remaining": "399000",
            "anthropic-ratelimit-input-tokens-reset": _RESET,
            "anthropic-ratelimit-output-tokens-limit": "80000",
            "anthropic-ratelimit-output-tokens-remaining": "79000",
            "anthropic-ratelimit-output-tokens-reset": _RESET,
        }
        if content_type.startswith("text/event-stream"):
            headers["cache-control"] = "no-cache"
        if extra:
            headers.update(extra)
        return headers

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> dict:
        etype = ERROR_TYPES.get(status, "api_error")
        if message is None:
            message = _MESSAGES.get(status, f"fake upstream error {status}")
        return {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": rec.response_request_id,
        }

    def _fail_headers(self, fail: Fail, rec: Recorded) -> dict[str, str]:
        if fail.status == 429:
            return {"anthropic-ratelimit-requests-remaining": "0"}
        return {}

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        doc = self._error_doc(err.status, err.message, rec)
        return _sse("error", {"type": "error", "error": doc["error"]})

    # ------------------------------------------------------------------ routing

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        known = path in ("/v1/messages", "/v1/messages/count_tokens") or path.startswith(
            "/v1/models"
        )
        if not known:
            return self._error(rec, 404, "Not Found")
        api_key, rec.notes["auth"] = rec.headers.get("x-api-key"), "x-api-key"
        bearer = rec.headers.get("authorization", "")
        if not api_key and bearer[:7].lower() == "bearer " and bearer[7:].strip():
            # current SDKs send the API key as a bearer token
            api_key, rec.notes["auth"] = bearer[7:].strip(), "bearer"
        if not api_key:
            rec.notes["auth"] = None
            return self._error(rec, 401, "x-api-key header is required")
        if self.api_key is not None and api_key != self.api_key:
            return self._error(rec, 401, "invalid x-api-key")
        if not rec.headers.get("anthropic-version"):
            return self._error(rec, 400, "anthropic-version: header is required")
        if path.startswith("/v1/models"):
            if method != "GET":
                return self._error(rec, 405, "Method Not Allowed")
            return self._models(rec, path)
        if method != "POST":
            return self._error(rec, 405, "Method Not Allowed")
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, 400, "There was an error parsing the body of your request.")
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if path == "/v1/messages/count_tokens":
            return self._count_tokens(rec, body, ok)
        problem = _validate(body)
        if problem:
            return self._error(rec, 400, problem)

        tool = pick_tool(request_tools(body), last_user_text(body))
        ans = self._answer(
            behaviour,
            rec,
            computed_prompt=prompt_tokens_for(body),
            max_tokens=body["max_tokens"],
            tool=tool,
            tool_id="toolu_01" + uuid.uuid4().hex[:22],
        )
        model = body["model"]
        msg_id = "msg_01" + uuid.uuid4().hex[:22]
        rec.notes["usage_wire"] = self._usage_obj(ans)
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if not body.get("stream"):
            doc = self._message(msg_id, model, ans)
            return await self._answer_once(request, rec, behaviour, ok, doc)
        return await self._stream(request, rec, behaviour, ok, self._events(msg_id, model, ans))

    def _count_tokens(self, rec: Recorded, body: dict, ok: Ok) -> web.Response:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return self._error(rec, 400, "model: Field required")
        if not isinstance(body.get("messages"), list):
            return self._error(rec, 400, "messages: Field required")
        n = ok.prompt_tokens if ok.prompt_tokens is not None else prompt_tokens_for(body)
        rec.usage = {
            "prompt_tokens": n,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "total_tokens": n,
        }
        return self._json(rec, {"input_tokens": n}, extra=ok.headers)

    def _models(self, rec: Recorded, path: str) -> web.Response:
        def obj(mid: str) -> dict:
            return {
                "type": "model",
                "id": mid,
                "display_name": _display_name(mid),
                "created_at": "2024-10-22T00:00:00Z",
            }

        if path.rstrip("/") != "/v1/models":
            mid = path[len("/v1/models/") :]
            if mid not in self.models:
                return self._error(rec, 404, f"model: {mid}")
            return self._json(rec, obj(mid))
        q = rec.query_params
        ids = list(self.models)
        if q.get("after_id") in ids:
            ids = ids[ids.index(q["after_id"]) + 1 :]
        limit = int(q.get("limit") or 20)
        page = ids[:limit]
        return self._json(
            rec,
            {
                "data": [obj(m) for m in page],
                "has_more": len(ids) > limit,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
        )

    # ------------------------------------------------------------------ wire format

    @staticmethod
    def _usage_obj(ans: Answer) -> dict:
        return {
            "input_tokens": ans.uncached_tokens,
            "cache_creation_input_tokens": ans.cache_write_tokens,
            "cache_read_input_tokens": ans.cached_tokens,
            "output_tokens": ans.completion_tokens,
            "service_tier": ans.service_tier or "standard",
        }

    def _message(self, msg_id: str, model: str, ans: Answer) -> dict:
        content: list[dict] = []
        if ans.text or ans.tool_name is None:
            content.append({"type": "text", "text": ans.text})
        if ans.tool_name is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": ans.tool_id,
                    "name": ans.tool_name,
                    "input": ans.tool_input,
                }
            )
        return {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _STOP_REASONS[ans.stop],
            "stop_sequence": None,
            "usage": self._usage_obj(ans),
        }

    def _events(self, msg_id: str, model: str, ans: Answer) -> list[bytes]:
        start_usage = {**self._usage_obj(ans), "output_tokens": 1}
        events = [
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            )
        ]
        blocks: list[tuple[dict, list[dict]]] = []
        if ans.pieces:
            deltas = [{"type": "text_delta", "text": p} for p in ans.pieces]
            blocks.append(({"type": "text", "text": ""}, deltas))
        if ans.tool_name is not None:
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in ans.tool_pieces]
            start = {"type": "tool_use", "id": ans.tool_id, "name": ans.tool_name, "input": {}}
            blocks.append((start, deltas))
        for index, (block, deltas) in enumerate(blocks):
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
            )
            if index == 0:
                events.append(_sse("ping", {"type": "ping"}))
            for d in deltas:
                events.append(
                    _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": d},
                    )
                )
            events.append(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        events.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP_REASONS[ans.stop], "stop_sequence": None},
                    "usage": {"output_tokens": ans.completion_tokens},
                },
            )
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        return events
