"""Gemini `alt=sse` stream <-> hub chat-completion chunk SSE, both directions.

`GeminiToOpenAIStream` turns each Gemini chunk into hub chunks per candidate;
`OpenAIToGeminiStream` turns hub chunks into Gemini chunks, holding tool-call
arguments until they are complete (Gemini sends a call whole). Both fill `usage`.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    FromOpenAIStream,
    ToOpenAIStream,
    dumps_str,
    encode_call_id,
    foreign_id,
    hub_id,
    load_event_json,
    now,
    openai_error_chunk,
    sse_close,
    sse_feed_data,
)
from fastgate.convert.common import (
    MALFORMED as _MALFORMED,
)
from fastgate.convert.errors import (
    UpstreamProtocolError,
    gemini_error_event,
    openai_error_type,
)
from fastgate.convert.gemini.response import _call_part, _call_prefix
from fastgate.convert.gemini.shared import FINISH_TO_GEMINI, _g, _thoughts, finish_from_gemini
from fastgate.sse.decoder import SSEDecoder
from fastgate.vocab.usage import (
    Usage,
    gemini_usage_dict,
    reported_service_tier,
    usage_from_gemini,
    usage_from_openai,
)
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

_SEP = b"\r\n\r\n"  # what Google's alt=sse stream puts between events


# ==================================================================================
# streams
# ==================================================================================


def _name(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise UpstreamProtocolError("Gemini functionCall.name is not a string")


class GeminiToOpenAIStream(ToOpenAIStream):
    """Gemini `alt=sse` stream in, OpenAI chat-completion chunk SSE out.

    Each Gemini chunk becomes one chunk per candidate (plus a finish chunk); function
    calls arrive whole from Gemini and leave as one tool-call delta each. The usage chunk
    (if asked for) and `[DONE]` go out at `close()`, since Gemini marks its end only by
    closing the stream; a stream that closes before any `finishReason` was cut short.
    """

    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self._meta: dict[str, Any] | None = None  # the latest usageMetadata
        self._dec = SSEDecoder(max_event_bytes)
        self._id = ""
        self._prefix = ""
        self._created = now()
        self._roled: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self._counter = 0
        self._finished = False
        self._errored = False

    @property
    def usage(self) -> Usage:
        """The upstream's usage so far (Gemini repeats usageMetadata in every chunk)."""
        return usage_from_gemini(self._meta)

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        out: list[Any] = []
        for d in sse_feed_data(self._dec, data):
            if d and not self._errored:
                self._event(d, out)
        return out

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF: usage chunk and `DONE`; raises if the stream was cut short."""
        events = sse_close(self._dec)
        out: list[Any] = []
        for ev in events:
            if ev.data and not self._errored:
                self._event(ev.data, out)
        if self._errored:
            return out
        if not self._finished:
            raise UpstreamProtocolError("Gemini stream ended without a finishReason")
        if self.include_usage:
            out.append(self._usage_chunk(_thoughts(self._meta)))
        out.append(DONE)
        return out

    def _event(self, data: bytes, out: list[Any]) -> None:
        obj = load_event_json(data)
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Gemini stream event is not a JSON object")
        try:
            self._dispatch(obj, out)
        except _MALFORMED as exc:
            raise UpstreamProtocolError("malformed Gemini stream event") from exc

    def _dispatch(self, obj: dict[str, Any], out: list[Any]) -> None:
        err = obj.get("error")
        if err is not None:
            err = err if isinstance(err, dict) else {"message": str(err)}
            self._errored = True
            out.append(
                openai_error_chunk(
                    str(err.get("message") or "upstream error"),
                    openai_error_type(
                        None, err.get("code") if isinstance(err.get("code"), int) else 500
                    ),
                    err.get("status") if isinstance(err.get("status"), str) else None,
                )
            )
            return
        if not self._id:
            rid = _g(obj, "responseId", "response_id")
            self._id = hub_id(rid)
            self._prefix = _call_prefix(rid)
        meta = obj.get("usageMetadata")
        if meta is not None:
            if not isinstance(meta, dict):
                raise UpstreamProtocolError("Gemini usageMetadata is not an object")
            self._meta = meta
        cands = obj.get("candidates")
        if not cands:
            feedback = _g(obj, "promptFeedback", "prompt_feedback")
            if isinstance(feedback, dict) and _g(feedback, "blockReason", "block_reason"):
                self._roled.add(0)
                out.append(self._chunk({"role": "assistant", "content": ""}))
                out.append(self._chunk({}, "content_filter"))
                self._finished = True
            return
        for pos, cand in enumerate(cands):
            idx = cand.get("index", pos)
            delta: dict[str, Any] = {}
            if idx not in self._roled:
                self._roled.add(idx)
                delta["role"] = "assistant"
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[dict[str, Any]] = []
            content = cand.get("content")
            parts = content.get("parts") if content else None
            for p in parts or ():
                fc = p.get("functionCall")
                if fc is not None:
                    n = self._calls.get(idx, 0)
                    self._calls[idx] = n + 1
                    gid = fc.get("id")
                    base = gid if isinstance(gid, str) and gid else f"{self._prefix}{self._counter}"
                    self._counter += 1
                    sig = p.get("thoughtSignature")
                    calls.append(
                        {
                            "index": n,
                            "id": encode_call_id(base, sig if isinstance(sig, str) else None),
                            "type": "function",
                            "function": {
                                "name": _name(fc["name"]),
                                "arguments": dumps_str(fc.get("args") or {}),
                            },
                        }
                    )
                else:
                    text = p.get("text")
                    if text:
                        if not isinstance(text, str):
                            raise UpstreamProtocolError("Gemini part text is not a string")
                        (thoughts if p.get("thought") else texts).append(text)
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if texts:
                delta["content"] = "".join(texts)
            elif "role" in delta:
                delta["content"] = ""
            if calls:
                delta["tool_calls"] = calls
            if delta:
                out.append(self._chunk(delta, index=idx))
            reason = cand.get("finishReason")
            if reason:
                finish = finish_from_gemini(reason, idx in self._calls)
                out.append(self._chunk({}, finish, idx))
                self._finished = True


class OpenAIToGeminiStream(FromOpenAIStream):
    """OpenAI chat-completion chunk SSE (or hub chunks via `push`) in, Gemini SSE out.

    Text and thoughts leave chunk by chunk. Tool-call arguments stream in pieces on the
    OpenAI side but a Gemini `functionCall` carries whole `args`, so calls are held until
    the choice finishes and then sent, with `finishReason` and `usageMetadata`, in the
    last chunk (after OpenAI's usage chunk or `[DONE]`).
    """

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.model = model
        self.usage = Usage()
        self._reasoning_tokens = 0
        self._dec = SSEDecoder(max_event_bytes)
        self._rid: str | None = None
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str] = {}
        self._ended = False

    # feed / close / finish / push: FromOpenAIStream

    def error_event(self, message: str, type_: str = "server_error") -> bytes:
        """A Gemini stream error (`data: {"error":{code,message,status}}`)."""
        return gemini_error_event(message, type_)

    def _saw_finish(self) -> bool:
        return bool(self._finish)

    def _emit(self, obj: dict[str, Any], out: list[bytes]) -> None:
        out.append(b"data: " + orjson.dumps(obj) + _SEP)

    def _chunk(self, c: dict[str, Any], out: list[bytes]) -> None:
        if "error" in c and not c.get("choices"):
            err = c["error"] if isinstance(c["error"], dict) else {"message": str(c["error"])}
            self._ended = True
            t = err.get("type") if isinstance(err.get("type"), str) else "server_error"
            out.append(gemini_error_event(str(err.get("message") or "upstream error"), t))
            return
        if self._rid is None and isinstance(c.get("id"), str):
            self._rid = c["id"]
        usage = c.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
            self.usage.service_tier = reported_service_tier(c)
            self._reasoning_tokens = reasoning_tokens_of(usage)
        choices = c.get("choices") or []
        for ch in choices:
            idx = ch.get("index", 0)
            delta = ch.get("delta") or {}
            parts: list[dict[str, Any]] = []
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                parts.append({"text": reasoning, "thought": True})
            content = delta.get("content")
            if isinstance(content, str) and content:
                parts.append({"text": content})
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                parts.append({"text": refusal})
            for tc in delta.get("tool_calls") or ():
                calls = self._calls.setdefault(idx, {})
                entry = calls.get(tc.get("index", 0))
                if entry is None:
                    entry = calls[tc.get("index", 0)] = {"id": None, "name": "", "args": []}
                fn = tc.get("function") or {}
                if tc.get("id"):
                    entry["id"] = tc["id"]
                if fn.get("name"):
                    entry["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    entry["args"].append(fn["arguments"])
            if parts:
                self._emit(
                    self._response([{"content": {"role": "model", "parts": parts}, "index": idx}]),
                    out,
                )
            if ch.get("finish_reason") is not None:
                self._finish[idx] = ch["finish_reason"]
        if not choices and isinstance(usage, dict) and self._finish:
            self._finalize(out)

    def _response(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {"candidates": candidates, "modelVersion": self.model}
        if self._rid:
            obj["responseId"] = foreign_id(self._rid)
        return obj

    def _finalize(self, out: list[bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        idxs = sorted(set(self._finish) | set(self._calls)) or [0]
        candidates = []
        for idx in idxs:
            parts = [
                _call_part(e["id"], e["name"], "".join(e["args"]))
                for _, e in sorted(self._calls.get(idx, {}).items())
            ]
            candidates.append(
                {
                    "content": {"role": "model", "parts": parts or [{"text": ""}]},
                    "finishReason": FINISH_TO_GEMINI.get(self._finish.get(idx), "STOP"),
                    "index": idx,
                }
            )
        obj = self._response(candidates)
        obj["usageMetadata"] = gemini_usage_dict(self.usage, self._reasoning_tokens)
        self._emit(obj, out)
