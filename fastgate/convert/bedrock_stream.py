"""Bedrock ConverseStream (AWS event-stream framing) -> hub chunks / OpenAI SSE, sans-IO.

Split from `bedrock.py` (requests and non-stream responses) because the stream is
a state machine of its own: binary frames decoded by `fastgate.wire.eventstream`,
Converse events mapped to chat-completion chunks, exceptions mapped to error chunks.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgate.convert.bedrock import finish_from_converse, usage_from_converse
from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    ToOpenAIStream,
    load_event_json,
    new_id,
    now,
    openai_error_chunk,
)
from fastgate.convert.common import MALFORMED as _MALFORMED
from fastgate.convert.errors import UpstreamProtocolError
from fastgate.vocab.usage import Usage
from fastgate.wire.eventstream import EventStreamDecoder, Message

__all__ = ["ConverseStreamToOpenAI"]

# ConverseStream exception members -> OpenAI error types.
_EXCEPTION_TYPES: Final = {
    "throttlingException": "rate_limit_error",
    "validationException": "invalid_request_error",
    "accessDeniedException": "permission_error",
    "resourceNotFoundException": "not_found_error",
    "internalServerException": "server_error",
    "serviceUnavailableException": "server_error",
    "modelStreamErrorException": "server_error",
    "modelTimeoutException": "server_error",
    "modelNotReadyException": "server_error",
}


class ConverseStreamToOpenAI(ToOpenAIStream):
    """ConverseStream (binary event stream) in, OpenAI chat-completion chunk SSE out.

    Converse ends a message with `messageStop` (the stop reason) followed by `metadata`
    (the usage), so the finish chunk leaves at `messageStop` and the usage chunk (if
    asked for) and `[DONE]` at `metadata`. A stream that ends after `messageStop`
    without `metadata` is closed at EOF without usage; one that ends before
    `messageStop` was cut short. `feed_chunks` / `close_chunks` return hub chunks
    for composition with the `OpenAITo*Stream` converters (`ChainStream`).
    """

    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage = Usage()
        self._dec = EventStreamDecoder(max_event_bytes)
        self._id = new_id("chatcmpl-")
        self._created = now()
        self._started = False
        self._stopped = False  # messageStop seen (finish chunk sent)
        self._metadata = False
        self._ended = False  # [DONE] or an error sent: nothing more goes out
        self._tools: dict[Any, int] = {}  # contentBlockIndex -> OpenAI tool index

    # -- public (feed / close / error_event: ToOpenAIStream) ----------------------

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        out: list[Any] = []
        for msg in self._dec.feed(data):
            if self._ended:
                break
            self._message(msg, out)
        return out

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF: `[DONE]` if `metadata` never came after `messageStop`."""
        if self._ended:
            return []
        self._dec.close()
        if not self._stopped:
            raise UpstreamProtocolError("upstream stream ended before messageStop")
        self._ended = True
        return [DONE]

    # -- internals ---------------------------------------------------------------

    def _message(self, msg: Message, out: list[Any]) -> None:
        h = msg.headers
        mtype = h.get(":message-type")
        if mtype == "event":
            kind = h.get(":event-type")
            obj = load_event_json(msg.payload) if msg.payload else {}
            if not isinstance(obj, dict):
                raise UpstreamProtocolError("Bedrock stream event is not a JSON object")
            try:
                self._event(kind, obj, out)
            except _MALFORMED as exc:
                raise UpstreamProtocolError(f"malformed Bedrock stream event {kind!r}") from exc
        elif mtype in ("exception", "error"):
            if mtype == "exception":
                code = h.get(":exception-type")
                try:
                    body = orjson.loads(msg.payload) if msg.payload else {}
                except orjson.JSONDecodeError:
                    body = {"message": msg.payload.decode("utf-8", "replace")}
                text = None
                if isinstance(body, dict):
                    text = body.get("message") or body.get("Message")
            else:
                code = h.get(":error-code")
                text = h.get(":error-message")
            code = code if isinstance(code, str) else None
            self._ended = True
            out.append(
                openai_error_chunk(
                    str(text or code or "upstream error"),
                    _EXCEPTION_TYPES.get(code or "", "server_error"),
                    code,
                )
            )
        elif mtype is None:
            raise UpstreamProtocolError("Bedrock stream message without :message-type")
        # other message types carry nothing for the client

    def _event(self, kind: Any, obj: dict[str, Any], out: list[Any]) -> None:
        if kind == "contentBlockDelta":
            self._need_start(kind)
            delta = obj["delta"]
            if "text" in delta:
                text = delta["text"]
                if not isinstance(text, str):
                    raise TypeError("text")
                if text:
                    out.append(self._chunk({"content": text}))
            elif "toolUse" in delta:
                part = delta["toolUse"]["input"]
                if not isinstance(part, str):
                    raise TypeError("toolUse.input")
                idx = self._tools.get(obj["contentBlockIndex"])
                if idx is None:
                    raise UpstreamProtocolError("toolUse delta for a block that is no toolUse")
                if part:
                    call = {"index": idx, "function": {"arguments": part}}
                    out.append(self._chunk({"tool_calls": [call]}))
            elif "reasoningContent" in delta:
                text = delta["reasoningContent"].get("text")
                if isinstance(text, str) and text:
                    out.append(self._chunk({"reasoning_content": text}))
            # signature, redacted reasoning, citations: nothing a chat chunk can carry
        elif kind == "contentBlockStart":
            self._need_start(kind)
            start = obj["start"]
            tu = start.get("toolUse")
            if tu is not None:
                if not isinstance(tu["toolUseId"], str) or not isinstance(tu["name"], str):
                    raise TypeError("toolUse")
                idx = len(self._tools)
                self._tools[obj["contentBlockIndex"]] = idx
                call = {
                    "index": idx,
                    "id": tu["toolUseId"],
                    "type": "function",
                    "function": {"name": tu["name"], "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "messageStart":
            if self._started:
                raise UpstreamProtocolError("Bedrock stream sent messageStart twice")
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "messageStop":
            self._need_start(kind)
            self._stopped = True
            out.append(self._chunk({}, finish_from_converse(obj["stopReason"])))
            if self._metadata:
                self._finish(out)
        elif kind == "metadata":
            usage = obj.get("usage")
            if usage is not None and not isinstance(usage, dict):
                raise TypeError("usage")
            self.usage = usage_from_converse(usage) if usage is not None else self.usage
            self._metadata = True
            if self._stopped:
                self._finish(out)
        # contentBlockStop and unknown event types carry nothing to convert

    def _finish(self, out: list[Any]) -> None:
        if self.include_usage and self.usage.found:
            out.append(self._usage_chunk())
        out.append(DONE)
        self._ended = True

    def _need_start(self, kind: Any) -> None:
        if not self._started:
            raise UpstreamProtocolError(f"Bedrock stream event {kind!r} before messageStart")
