"""A fake OpenAI upstream that speaks OpenAI's wire format over a real socket.

Functional and adversity tests point fastgate channels at it. It runs an aiohttp
low-level server on 127.0.0.1 (port 0 by default) in its own thread with its own
event loop, so synchronous SDK clients and async tests can share it.

What it answers is decided per request by a *behaviour*: the next one queued with
`script(...)` (FIFO, one per request), else the default (`fake.behaviour`).
Everything it reports is deterministic so tests can derive their expectations from
the fake, never from the gateway: text comes from the behaviour (default
"Hello from <name>"), token counts from `prompt_tokens_for()` and the number of
content pieces, and every request is recorded with the usage the fake reported.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tests.fakes.base import (
    CREATED,
    Behaviour,
    BigStream,
    CloseImmediately,
    DieMidStream,
    Fail,
    FakeUpstream,
    Hang,
    Ok,
    Recorded,
    Slow,
    StreamError,
    ToolCall,
    closed_port,
    content_pieces,
    embedding_for,
)
from tests.fakes.base import JSON_CONTENT_TYPE as JSON_CONTENT_TYPE  # moved; re-exported
from tests.fakes.base import SSE_CONTENT_TYPE as SSE_CONTENT_TYPE
from tests.fakes.base import _ClientGone as _ClientGone
from tests.fakes.base import _CountingServer as _CountingServer
from tests.fakes.base import dumps as _dumps
from tests.fakes.base import text_of as _text_of
from tests.fakes.base import words as _words
from tests.fakes.openai_files import OpenAIFiles

__all__ = [
    "BigStream",
    "CloseImmediately",
    "DieMidStream",
    "Fail",
    "FakeOpenAI",
    "Hang",
    "Ok",
    "Recorded",
    "Slow",
    "StreamError",
    "ToolCall",
    "closed_port",
    "content_pieces",
    "prompt_tokens_for",
]


# --------------------------------------------------------------------------- deterministic model


def prompt_tokens_for(path: str, body: Any) -> int:
    """The prompt token count the fake reports for a request body (deterministic).

    chat: 3 + sum(4 + words(content)) over messages; completions: words(prompt) + 1;
    embeddings: words over all inputs (token arrays count their length);
    responses: 3 + words of the input (string or items).
    """
    if not isinstance(body, dict):
        return 0
    if path.endswith("/chat/completions"):
        msgs = body.get("messages") or []
        return 3 + sum(4 + _words(_text_of(m.get("content"))) for m in msgs if isinstance(m, dict))
    if path.endswith("/completions"):
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            return sum(_words(p) if isinstance(p, str) else 1 for p in prompt) + 1
        return _words(str(prompt)) + 1
    if path.endswith("/embeddings"):
        inp = body.get("input", "")
        items = inp if isinstance(inp, list) else [inp]
        total = 0
        for item in items:
            if isinstance(item, str):
                total += _words(item)
            elif isinstance(item, list):  # token array
                total += len(item)
            else:
                total += 1
        return total
    if path.endswith("/responses"):
        inp = body.get("input", "")
        if isinstance(inp, str):
            return 3 + _words(inp)
        total = 3
        for item in inp if isinstance(inp, list) else []:
            if isinstance(item, dict):
                total += 4 + _words(_text_of(item.get("content")))
        return total
    return 0


# --------------------------------------------------------------------------- the server


class FakeOpenAI(OpenAIFiles, FakeUpstream):
    """Fake OpenAI upstream; see the module docstring (and tests/fakes/openai_files.py
    for files, batches, audio transcriptions and image generation)."""

    default_models = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_files()

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "GET" and path in ("/v1/models", "/models"):
            return self._json(rec, self._models_body())
        answer = await self._no_model_route(request, rec)
        if answer is not None:
            return answer
        if method != "POST" or not path.startswith("/v1/"):
            return self._fail_response(rec, Fail(404, body=_error_body(404, f"Unknown url {path}")))
        if not isinstance(rec.json, dict):
            return self._fail_response(
                rec,
                Fail(
                    400, body=_error_body(400, "We could not parse the JSON body of your request.")
                ),
            )
        problem = _validate(path, rec.json)
        if problem:
            return self._fail_response(rec, Fail(400, body=_error_body(400, problem)))

        body = rec.json
        stream = bool(body.get("stream"))
        if path == "/v1/chat/completions":
            kind = "chat"
        elif path == "/v1/completions":
            kind = "completion"
        elif path == "/v1/responses":
            kind = "responses"
        elif path == "/v1/embeddings":
            return await self._embeddings(request, rec, behaviour)
        else:
            return self._json(rec, {"path": path, "model": body.get("model")})

        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        content = self._content_for(behaviour, ok)
        pieces = content_pieces(content)
        if isinstance(behaviour, BigStream):
            pieces = ["x" * max(1, behaviour.chunk_bytes)] * behaviour.chunks
            content = "".join(pieces)
        usage = {
            "prompt_tokens": ok.prompt_tokens
            if ok.prompt_tokens is not None
            else prompt_tokens_for(path, body),
            "completion_tokens": ok.completion_tokens
            if ok.completion_tokens is not None
            else len(pieces),
            "cached_tokens": ok.cached_tokens,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        rec.usage = usage
        rec.content = content
        model = str(body.get("model", ""))

        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if not stream:
            if isinstance(behaviour, StreamError):
                return self._fail_response(
                    rec,
                    Fail(behaviour.status, body=_error_body(behaviour.status, behaviour.message)),
                )
            if kind == "chat":
                doc = _chat_response(model, content, usage, ok.service_tier or "default")
                if not ok.report_usage:
                    del doc["usage"]
            elif kind == "completion":
                doc = _completion_response(model, content, usage)
            else:
                doc = _responses_response(model, content, usage)
            if isinstance(behaviour, DieMidStream):
                return await self._die_mid_body(request, rec, doc, behaviour.delay)
            return self._json(rec, doc, extra=ok.headers)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if kind == "chat":
            events = _chat_stream(
                model, pieces, usage, include_usage, ok.service_tier or "default", ok.report_usage
            )
        elif kind == "completion":
            events = _completion_stream(model, pieces, usage, include_usage)
        else:
            events = _responses_stream(model, pieces, usage)
        return await self._stream(request, rec, behaviour, ok, events)

    async def _embeddings(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = rec.json
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        inp = body.get("input", "")
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        dims = int(body.get("dimensions") or 8)
        fmt = body.get("encoding_format") or "float"
        data = []
        for i, item in enumerate(items):
            vec = embedding_for(item if isinstance(item, str) else _dumps(item), dims)
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        prompt = (
            ok.prompt_tokens if ok.prompt_tokens is not None else prompt_tokens_for(rec.path, body)
        )
        rec.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "total_tokens": prompt,
        }
        doc = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        if isinstance(behaviour, DieMidStream):
            return await self._die_mid_body(request, rec, doc, behaviour.delay)
        return self._json(rec, doc, extra=ok.headers)

    def _models_body(self) -> dict:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "openai"}
                for m in self.models
            ],
        }

    # ------------------------------------------------------------------ response writers

    # ------------------------------------------------------------------ response writers

    def _headers(self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None):
        headers = {
            "content-type": content_type,
            "x-request-id": rec.response_request_id,
            "openai-processing-ms": "7",
            "openai-version": "2020-10-01",
            "openai-organization": "fake-org",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-tokens": "2ms",
        }
        if extra:
            headers.update(extra)
        return headers

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> dict:
        return _error_body(status, message)

    def _fail_headers(self, fail: Fail, rec: Recorded) -> dict[str, str]:
        return {"x-ratelimit-remaining-requests": "0"} if fail.status == 429 else {}

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        return _sse(_error_body(err.status, err.message))


# --------------------------------------------------------------------------- wire format


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None) -> dict:
    """OpenAI's error JSON for a status."""
    etype, code = _ERROR_TYPES.get(status, ("server_error", None))
    if message is None:
        message = {
            429: "Rate limit reached for requests. Please try again in 1s.",
            500: "The server had an error while processing your request. Sorry about that!",
            502: "Bad gateway.",
            503: "The engine is currently overloaded, please try again later",
        }.get(status, f"fake upstream error {status}")
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _validate(path: str, body: dict) -> str | None:
    """The few request checks the real API makes that a gateway could trip over."""
    needs_model = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
    if path in needs_model and (not isinstance(body.get("model"), str) or not body.get("model")):
        return "you must provide a model parameter"
    so = body.get("stream_options")
    if so is not None:
        if path == "/v1/responses" and isinstance(so, dict) and "include_usage" in so:
            return "Unknown parameter: 'stream_options.include_usage'."
        if path in ("/v1/chat/completions", "/v1/completions") and not body.get("stream"):
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    if path == "/v1/embeddings" and body.get("stream"):
        return "Unknown parameter: 'stream'."
    return None


def _usage_obj(usage: dict[str, int]) -> dict:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_response(
    model: str, content: str, usage: dict[str, int], service_tier: str = "default"
) -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage_obj(usage),
        "service_tier": service_tier,
        "system_fingerprint": "fp_fake0001",
    }


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def _chat_stream(
    model: str,
    pieces: list[str],
    usage: dict[str, int],
    include_usage: bool,
    service_tier: str = "default",
    report_usage: bool = True,
) -> list[bytes]:
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]

    def chunk(delta: dict, finish: str | None) -> dict:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": service_tier,
            "system_fingerprint": "fp_fake0001",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None
        return obj

    events = [_sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += [_sse(chunk({"content": p}, None)) for p in pieces]
    events.append(_sse(chunk({}, "stop")))
    if include_usage and report_usage:
        events.append(
            _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "service_tier": service_tier,
                    "system_fingerprint": "fp_fake0001",
                    "choices": [],
                    "usage": _usage_obj(usage),
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _completion_response(model: str, content: str, usage: dict[str, int]) -> dict:
    return {
        "id": "cmpl-" + uuid.uuid4().hex[:24],
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "choices": [{"text": content, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }


def _completion_stream(
    model: str, pieces: list[str], usage: dict[str, int], include_usage: bool
) -> list[bytes]:
    cid = "cmpl-" + uuid.uuid4().hex[:24]

    def chunk(text: str, finish: str | None) -> dict:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": CREATED,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "model": model,
            "system_fingerprint": None,
        }
        if include_usage:
            obj["usage"] = None
        return obj

    events = [_sse(chunk(p, None)) for p in pieces]
    events.append(_sse(chunk("", "stop")))
    if include_usage:
        events.append(
            _sse(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "choices": [],
                    "model": model,
                    "system_fingerprint": None,
                    "usage": {
                        "prompt_tokens": usage["prompt_tokens"],
                        "completion_tokens": usage["completion_tokens"],
                        "total_tokens": usage["total_tokens"],
                    },
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _responses_usage(usage: dict[str, int]) -> dict:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def _response_obj(rid: str, model: str, status: str, output: list, usage: dict | None) -> dict:
    return {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message_item(mid: str, text: str, status: str) -> dict:
    return {
        "id": mid,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
    }


def _responses_response(model: str, content: str, usage: dict[str, int]) -> dict:
    rid = "resp_" + uuid.uuid4().hex
    mid = "msg_" + uuid.uuid4().hex
    return _response_obj(
        rid, model, "completed", [_message_item(mid, content, "completed")], _responses_usage(usage)
    )


def _responses_stream(model: str, pieces: list[str], usage: dict[str, int]) -> list[bytes]:
    rid = "resp_" + uuid.uuid4().hex
    mid = "msg_" + uuid.uuid4().hex
    text = "".join(pieces)
    seq = 0
    events: list[bytes] = []

    def ev(etype: str, payload: dict) -> None:
        nonlocal seq
        obj = {"type": etype, "sequence_number": seq, **payload}
        seq += 1
        events.append(f"event: {etype}\ndata: {_dumps(obj)}\n\n".encode())

    ev("response.created", {"response": _response_obj(rid, model, "in_progress", [], None)})
    ev("response.in_progress", {"response": _response_obj(rid, model, "in_progress", [], None)})
    item = {
        "id": mid,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    ev("response.output_item.added", {"output_index": 0, "item": item})
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    ev(
        "response.content_part.added",
        {"item_id": mid, "output_index": 0, "content_index": 0, "part": part},
    )
    for p in pieces:
        ev(
            "response.output_text.delta",
            {"item_id": mid, "output_index": 0, "content_index": 0, "delta": p, "logprobs": []},
        )
    ev(
        "response.output_text.done",
        {"item_id": mid, "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
    )
    ev(
        "response.content_part.done",
        {
            "item_id": mid,
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": text},
        },
    )
    done_item = _message_item(mid, text, "completed")
    ev("response.output_item.done", {"output_index": 0, "item": done_item})
    ev(
        "response.completed",
        {"response": _response_obj(rid, model, "completed", [done_item], _responses_usage(usage))},
    )
    return events
