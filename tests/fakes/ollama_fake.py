"""A fake Ollama server speaking Ollama's native API over a real socket.

Same machinery, behaviours and recording API as FakeOpenAI (tests.fakes.base).
Endpoints: `POST /api/chat` and `POST /api/generate` — streaming by default
(NDJSON, `application/x-ndjson`, one object per line, a final `"done": true` line
with `done_reason`, `prompt_eval_count`, `eval_count` and durations) unless the body
says `"stream": false`; `POST /api/embed` (vectors by `embedding_for`, `prompt_eval_count` = words);
`GET /api/tags`, `GET /api/version`, `GET /`. No auth, like
Ollama. Errors are `{"error": "..."}`; a model outside `models` is a 404 only when
`strict_models=True` (real Ollama: not pulled).

Deterministic answers: text "Hello from <name>" (cut to `options.num_predict`
pieces with done_reason "length"), prompt tokens by `prompt_tokens_for(body)`, and
`message.tool_calls` when a ToolCall is scripted or the last user message names a
declared tool. Durations: 1 ms load, 0.1 ms per prompt token, 10 ms per output token.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tests.fakes.base import (
    Answer,
    Behaviour,
    FakeUpstream,
    Ok,
    Recorded,
    StreamError,
    chat_prompt_tokens,
    dumps,
    embedding_for,
    pick_tool,
    text_of,
)

__all__ = ["CREATED_AT", "FakeOllama", "durations", "prompt_tokens_for", "request_tools"]

CREATED_AT = "2023-11-14T22:13:20.000000000Z"
NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"
_MESSAGES = {
    400: "invalid request",
    404: "not found",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_DONE = {"stop": "stop", "length": "length", "tool": "stop"}


def prompt_tokens_for(body: Any) -> int:
    """Prompt tokens the fake computes: `chat_prompt_tokens` over the messages' text
    (/api/chat, same as the OpenAI rule) or over [system, prompt] (/api/generate)."""
    if not isinstance(body, dict):
        return 0
    if "messages" in body:
        msgs = body.get("messages") or []
        return chat_prompt_tokens([text_of(m.get("content")) for m in msgs if isinstance(m, dict)])
    texts = [str(body["system"])] if body.get("system") else []
    return chat_prompt_tokens([*texts, str(body.get("prompt") or "")])


def request_tools(body: Any) -> list[tuple[str, Any]]:
    """(name, parameters) of each `{"type": "function", "function": {...}}` tool."""
    out: list[tuple[str, Any]] = []
    for t in body.get("tools") or [] if isinstance(body, dict) else []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict):
            out.append((str(fn.get("name", "")), fn.get("parameters")))
    return out


def _last_user_text(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def durations(prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
    """The deterministic nanosecond timings of a final line."""
    load, prompt_ns, eval_ns = 1_000_000, prompt_tokens * 100_000, eval_tokens * 10_000_000
    return {
        "total_duration": load + prompt_ns + eval_ns,
        "load_duration": load,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_tokens,
        "eval_duration": eval_ns,
    }


def _line(obj: Any) -> bytes:
    return dumps(obj).encode() + b"\n"


class FakeOllama(FakeUpstream):
    """Fake Ollama server; see the module docstring."""

    default_models = ["llama3.2:latest", "qwen2.5:0.5b"]
    json_content_type = JSON_UTF8
    error_content_type = JSON_UTF8
    sse_content_type = NDJSON

    def __init__(
        self,
        name: str = "ollama",
        *,
        models: list[str] | None = None,
        port: int = 0,
        behaviour: Behaviour | None = None,
        strict_models: bool = False,
    ) -> None:
        super().__init__(name, models=models, port=port, behaviour=behaviour)
        self.strict_models = strict_models

    # ------------------------------------------------------------------ hooks

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> dict:
        return {"error": message or _MESSAGES.get(status, f"fake upstream error {status}")}

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        return _line(self._error_doc(err.status, err.message, rec))

    # ------------------------------------------------------------------ routing

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        if method in ("GET", "HEAD") and path == "/":
            rec.status, rec.completed = 200, True
            return web.Response(text="Ollama is running")
        if method == "GET" and path == "/api/version":
            return self._json(rec, {"version": "0.6.2"})
        if method == "GET" and path == "/api/tags":
            return self._json(rec, {"models": [self._tag(m) for m in self.models]})
        if path == "/api/embed" and method == "POST":
            return self._embed(rec, behaviour)
        if path not in ("/api/chat", "/api/generate"):
            return self._error(rec, 404, "404 page not found")
        if method != "POST":
            return self._error(rec, 405, "method not allowed")
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, 400, "invalid character in request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(rec, 400, "model is required")
        if self.strict_models and model not in self.models and f"{model}:latest" not in self.models:
            return self._error(rec, 404, f'model "{model}" not found, try pulling it first')
        chat = path == "/api/chat"
        if chat and not isinstance(body.get("messages", []), list):
            return self._error(rec, 400, "messages must be an array")

        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        num_predict = options.get("num_predict")
        tool = pick_tool(request_tools(body), _last_user_text(body)) if chat else None
        ans = self._answer(
            behaviour,
            rec,
            computed_prompt=prompt_tokens_for(body),
            max_tokens=num_predict if isinstance(num_predict, int) and num_predict > 0 else None,
            tool=tool,
        )
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if body.get("stream", True) is False:
            doc = self._final(model, ans, chat, whole=True)
            return await self._answer_once(request, rec, behaviour, ok, doc)
        return await self._stream(request, rec, behaviour, ok, self._lines(model, ans, chat))

    # ------------------------------------------------------------------ wire format

    def _embed(self, rec: Recorded, behaviour: Behaviour) -> web.StreamResponse:
        """`/api/embed`: `input` a string or a list of strings -> `embeddings` (one
        vector each, `dimensions` long, 8 by default) and `prompt_eval_count` (the
        words embedded)."""
        body = rec.json
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._error(rec, 400, "model is required")
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self._error(rec, 400, "invalid input type")
        for k in body:
            if k not in ("model", "input", "truncate", "options", "keep_alive", "dimensions"):
                return self._error(rec, 400, f"json: unknown field {k!r}")
        dims = int(body.get("dimensions") or 8)
        n = sum(len(t.split()) for t in texts)
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if ok.prompt_tokens is not None:
            n = ok.prompt_tokens
        rec.usage = {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}
        doc = {
            "model": body["model"],
            "embeddings": [embedding_for(t, dims) for t in texts],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": n,
        }
        return self._json(rec, doc, extra=ok.headers)

    @staticmethod
    def _tag(name: str) -> dict:
        full = name if ":" in name else f"{name}:latest"
        family = full.split(":")[0].rstrip("0123456789.")
        return {
            "name": full,
            "model": full,
            "modified_at": "2024-11-14T22:13:20.000000000Z",
            "size": 2019393189,
            "digest": hashlib.sha256(full.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }

    @staticmethod
    def _tool_calls(ans: Answer) -> list[dict]:
        return [{"function": {"name": ans.tool_name, "arguments": ans.tool_input}}]

    def _final(self, model: str, ans: Answer, chat: bool, *, whole: bool) -> dict:
        doc: dict[str, Any] = {"model": model, "created_at": CREATED_AT}
        text = ans.text if whole else ""
        if chat:
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if whole and ans.tool_name is not None:
                msg["tool_calls"] = self._tool_calls(ans)
            doc["message"] = msg
        else:
            doc["response"] = text
        doc["done_reason"] = _DONE[ans.stop]
        doc["done"] = True
        if not chat:
            doc["context"] = [1, 2, 3]
        doc.update(durations(ans.prompt_tokens, ans.completion_tokens))
        return doc

    def _lines(self, model: str, ans: Answer, chat: bool) -> list[bytes]:
        lines = []
        for p in ans.pieces:
            obj: dict[str, Any] = {"model": model, "created_at": CREATED_AT}
            if chat:
                obj["message"] = {"role": "assistant", "content": p}
            else:
                obj["response"] = p
            obj["done"] = False
            lines.append(_line(obj))
        if ans.tool_name is not None:
            msg = {"role": "assistant", "content": "", "tool_calls": self._tool_calls(ans)}
            lines.append(
                _line({"model": model, "created_at": CREATED_AT, "message": msg, "done": False})
            )
        lines.append(_line(self._final(model, ans, chat, whole=False)))
        return lines
