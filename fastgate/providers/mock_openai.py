"""The mock's answers in the OpenAI wire format: chat completions, completions,
embeddings and the Responses API, whole or streamed.

What is said comes from `mock_answer`; this module only writes it down: `n`
choices (streamed interleaved, one token per chunk), tool calls (streamed as
`tool_calls` deltas: id and name first, then the arguments a token at a time),
finish reasons, and usage equal to the tokens sent.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from fastgate.providers.mock_answer import (
    Choice,
    answer,
    spec_from_completions,
    spec_from_openai,
    spec_from_responses,
)
from fastgate.vocab.usage import Usage, estimate_tokens, openai_usage_dict, responses_usage_dict

__all__ = ["SSE_HEADERS", "chat", "completions", "embeddings", "error", "responses"]

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
JSON_HEADERS = [(b"content-type", b"application/json")]
Answer = tuple[int, list, list[bytes]]


def error(status: int, message: str, code: str | None = None) -> Answer:
    err = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    err["error"]["code"] = code
    return status, JSON_HEADERS, [orjson.dumps(err)]


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _include_usage(obj: dict[str, Any], inject: bool) -> bool:
    so = obj.get("stream_options")
    return inject or (isinstance(so, dict) and so.get("include_usage") is True)


def _interleave(lists: list[list[bytes]]) -> list[bytes]:
    """Round robin over the choices' chunks, as a real upstream streams `n` > 1."""
    if len(lists) == 1:
        return lists[0]
    out: list[bytes] = []
    for step in range(max(len(x) for x in lists)):
        out.extend(x[step] for x in lists if step < len(x))
    return out


# -- chat completions ---------------------------------------------------------------------


def _message(c: Choice) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None}
    if c.calls:
        msg["tool_calls"] = [
            {"id": k.id, "type": "function", "function": {"name": k.name, "arguments": k.args}}
            for k in c.calls
        ]
    return msg


def _chat_chunks(i: int, c: Choice, base: dict[str, Any], extra: dict[str, Any]) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice], **extra})

    out = []
    if c.calls:
        for k, call in enumerate(c.calls):
            head = {
                "index": k,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            first = {"role": "assistant", "content": None} if k == 0 else {}
            out.append(chunk({**first, "tool_calls": [head]}))
            out.extend(
                chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]})
                for p in call.pieces
            )
    else:
        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        out.extend(chunk({"content": p}) for p in c.pieces)
    out.append(chunk({}, c.finish))
    return out


def chat(obj: dict[str, Any], model: str, rid: str, created: int, inject: bool) -> Answer:
    spec = spec_from_openai(obj)
    choices = answer(spec, rid, "call_")
    usage = openai_usage_dict(Usage(spec.prompt_tokens, sum(c.tokens for c in choices)))
    base = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created}
    base["model"] = model
    if obj.get("stream") is not True:
        body = {
            **base,
            "choices": [
                {"index": i, "message": _message(c), "logprobs": None, "finish_reason": c.finish}
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }
        return 200, JSON_HEADERS, [orjson.dumps(body)]
    base["object"] = "chat.completion.chunk"
    include = _include_usage(obj, inject)
    extra = {"usage": None} if include else {}
    chunks = _interleave([_chat_chunks(i, c, base, extra) for i, c in enumerate(choices)])
    if include:
        chunks.append(_sse({**base, "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return 200, SSE_HEADERS, chunks


# -- completions ----------------------------------------------------------------------------


def completions(obj: dict[str, Any], model: str, rid: str, created: int, inject: bool) -> Answer:
    spec = spec_from_completions(obj)
    choices = answer(spec, rid, "call_")
    completion = sum(c.tokens for c in choices)
    usage = {
        "prompt_tokens": spec.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": spec.prompt_tokens + completion,
    }
    base = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model}
    if obj.get("stream") is not True:
        body = {
            **base,
            "choices": [
                {"index": i, "text": c.text or "", "finish_reason": c.finish, "logprobs": None}
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }
        return 200, JSON_HEADERS, [orjson.dumps(body)]

    def chunk(i: int, text: str, finish: str | None) -> bytes:
        choice = {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
        return _sse({**base, "choices": [choice]})

    chunks = _interleave(
        [
            [*(chunk(i, p, None) for p in c.pieces), chunk(i, "", c.finish)]
            for i, c in enumerate(choices)
        ]
    )
    if _include_usage(obj, inject):
        chunks.append(_sse({**base, "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return 200, SSE_HEADERS, chunks


# -- embeddings -----------------------------------------------------------------------------


def embeddings(obj: dict[str, Any], model: str) -> Answer:
    inp = obj.get("input", "")
    items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
    dims = obj.get("dimensions") if isinstance(obj.get("dimensions"), int) else 8
    data = []
    for i, item in enumerate(items):
        h = hashlib.sha256(orjson.dumps(item)).digest()
        vec = [round((h[j % 32] - 128) / 128.0, 6) for j in range(dims)]
        data.append({"object": "embedding", "index": i, "embedding": vec})
    prompt = estimate_tokens(items)
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return 200, JSON_HEADERS, [orjson.dumps(body)]


# -- Responses API --------------------------------------------------------------------------


def responses(obj: dict[str, Any], model: str, rid: str, created: int) -> Answer:
    spec = spec_from_responses(obj)
    (c,) = answer(spec, rid, "call_")
    usage = responses_usage_dict(Usage(spec.prompt_tokens, c.tokens))
    if c.calls:
        items = [
            {
                "id": f"fc_{k.id[5:]}",
                "type": "function_call",
                "status": "completed",
                "call_id": k.id,
                "name": k.name,
                "arguments": k.args,
            }
            for k in c.calls
        ]
    else:
        part = {"type": "output_text", "text": c.text or "", "annotations": []}
        items = [
            {
                "id": f"msg_{rid}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        ]
    cut = c.finish == "length"
    resp = {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "model": model,
        "output": items,
        "parallel_tool_calls": spec.parallel,
        "tool_choice": obj.get("tool_choice", "auto"),
        "tools": obj.get("tools") or [],
        "usage": usage,
    }
    if obj.get("stream") is not True:
        return 200, JSON_HEADERS, [orjson.dumps(resp)]
    return 200, SSE_HEADERS, _responses_events(resp, c)


def _responses_events(resp: dict[str, Any], c: Choice) -> list[bytes]:
    seq = 0
    out: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        nonlocal seq
        out.append(_sse_event(kind, {"type": kind, "sequence_number": seq, **fields}))
        seq += 1

    pending = {**resp, "status": "in_progress", "incomplete_details": None}
    pending.update(output=[], usage=None)
    event("response.created", response=pending)
    event("response.in_progress", response=pending)
    for n, item in enumerate(resp["output"]):
        at = {"output_index": n, "item_id": item["id"]}
        if item["type"] == "function_call":
            event("response.output_item.added", output_index=n, item={**item, "arguments": ""})
            for p in c.calls[n].pieces:
                event("response.function_call_arguments.delta", **at, delta=p)
            event("response.function_call_arguments.done", **at, arguments=item["arguments"])
        else:
            part = item["content"][0]
            event("response.output_item.added", output_index=n, item={**item, "content": []})
            empty = {**part, "text": ""}
            event("response.content_part.added", **at, content_index=0, part=empty)
            for p in c.pieces:
                event("response.output_text.delta", **at, content_index=0, delta=p, logprobs=[])
            text = part["text"]
            event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            event("response.content_part.done", **at, content_index=0, part=part)
        event("response.output_item.done", output_index=n, item=item)
    kind = "response.incomplete" if resp["status"] == "incomplete" else "response.completed"
    event(kind, response=resp)
    return out
