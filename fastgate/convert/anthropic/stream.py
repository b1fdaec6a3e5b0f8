"""Anthropic Messages SSE <-> hub chat-completion chunk SSE, both directions.

`AnthropicToOpenAIStream` reads Anthropic events (message_start, content_block_*,
message_delta, message_stop) and yields hub chunks; `OpenAIToAnthropicStream` reads hub
chunks and writes Anthropic events, opening and closing one content block at a time.
Both fill `usage` as events pass.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from fastgate.convert.anthropic.response import finish_from_anthropic, stop_reason_from_openai
from fastgate.convert.common import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    FromOpenAIStream,
    ToOpenAIStream,
    chunk_bytes,
    dumps_str,
    foreign_id,
    hub_id,
    hub_items,
    load_event_json,
    new_id,
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
    anthropic_error_event,
    anthropic_error_type,
    openai_error_type,
)
from fastgate.sse.decoder import SSEDecoder
from fastgate.vocab.usage import (
    Usage,
    anthropic_usage_dict,
    merge_anthropic_usage,
    reported_service_tier,
    usage_from_openai,
)
from fastgate.vocab.usage import openai_reasoning_tokens as reasoning_tokens_of

# streams
# ==================================================================================


class AnthropicToOpenAIStream(ToOpenAIStream):
    """Anthropic Messages SSE in, OpenAI chat-completion chunk SSE out.

    `feed_chunks` / `close_chunks` return the hub chunks (dicts, then `DONE`) so a
    second converter can take them without JSON in between; `feed` / `close` return
    the OpenAI bytes. `usage` follows the upstream's numbers as they arrive.
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
        self._dec = SSEDecoder(max_event_bytes)
        self._id = ""
        self._created = now()
        self._started = False
        self._ended = False  # message_stop or an error event seen
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._merged: dict[str, Any] = {}  # message_start + message_delta usage
        # The hot event's bytes around its text (`_learn`): while they repeat, an
        # event is read without parsing it whole.
        self._pre = b""
        self._suf = b""
        self._tries = _LEARN_TRIES

    # -- public (feed / close / error_event: ToOpenAIStream) ----------------------

    def feed_chunks(self, data: bytes) -> list[Any]:
        """Hub chunks for what `data` completes."""
        out: list[Any] = []
        for d in sse_feed_data(self._dec, data):
            if not self._ended and d:
                self._event(d, out)
        return out

    def feed(self, data: bytes) -> bytes:
        """`chunk_bytes(feed_chunks(data))`, with the hot event (more text for a text
        block) read through the stream's template once it has one (`_learn`): only
        its text token is parsed, and its chunk is written from the stream's own
        chunk around that text. Same bytes out."""
        out: list[bytes] = []
        chunks: list[Any] = []  # hub chunks of the events read whole, not yet written
        pre = self._pre
        suf = self._suf
        lp = len(pre)
        ls = -len(suf)
        around: tuple[bytes, bytes] | None = None  # the chunk before / after its text
        for d in sse_feed_data(self._dec, data):
            if self._ended:
                break
            if not d:
                continue
            if pre and d.startswith(pre) and d.endswith(suf) and len(d) - lp + ls >= 2:
                try:
                    text = orjson.loads(d[lp:ls])
                except orjson.JSONDecodeError:
                    text = None  # not one string token: the event is read whole
                if type(text) is str:
                    if text:
                        if chunks:
                            out.append(chunk_bytes(chunks))
                            chunks = []
                        if around is None:
                            around = self._around()
                            if around is None:  # no template of the chunk: as a dict
                                chunks.append(self._chunk({"content": text}))
                                continue
                        out += (around[0], orjson.dumps(text), around[1])
                    continue
            obj = self._event(d, chunks)
            around = None  # the event may have changed the chunk's id
            if self._tries and (text := _hot_delta_text(obj)) is not None:
                self._learn(d, obj, text)
                pre = self._pre
                suf = self._suf
                lp = len(pre)
                ls = -len(suf)
        if chunks:
            out.append(chunk_bytes(chunks))
        return b"".join(out)

    def _around(self) -> tuple[bytes, bytes] | None:
        """This stream's text chunk in two parts around its text (None: the
        sentinel's token shows up elsewhere in it too)."""
        parts = chunk_bytes([self._chunk({"content": _SENTINEL})]).split(_SENTINEL_TOKEN)
        return (parts[0], parts[1]) if len(parts) == 2 else None

    def _learn(self, data: bytes, obj: dict[str, Any], text: str) -> None:
        """Make the stream's template from a hot event already converted
        (`_template`; the event's chunk depends on its text only)."""
        self._tries -= 1
        found = _template(data, _TEXT_KEY, obj, obj["delta"], "text", text)
        if found is not None:
            self._pre, self._suf = found

    def close_chunks(self) -> list[Any]:
        """Hub chunks at EOF (normally none: message_stop already ended the stream)."""
        events = sse_close(self._dec)
        out: list[Any] = []
        for ev in events:
            if not self._ended and ev.data:
                self._event(ev.data, out)
        if not self._ended:
            raise UpstreamProtocolError("upstream stream ended before message_stop")
        return out

    # -- internals ---------------------------------------------------------------

    def _set_usage(self, u: dict[str, Any], start: bool) -> None:
        if start:
            self._merged = {}
        self.usage = merge_anthropic_usage(self._merged, u)
        self.usage.partial = start  # message_delta brings the final output count

    def _event(self, data: bytes, out: list[Any]) -> dict[str, Any]:
        obj = load_event_json(data)
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Anthropic stream event is not a JSON object")
        try:
            self._dispatch(obj, out)
        except _MALFORMED as exc:
            raise UpstreamProtocolError(
                f"malformed Anthropic stream event {obj.get('type')!r}"
            ) from exc
        return obj

    def _dispatch(self, obj: dict[str, Any], out: list[Any]) -> None:
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._need_start(kind)
            delta = obj["delta"]
            dk = delta["type"]
            if dk == "text_delta":
                text = _str(delta["text"])
                if text:
                    out.append(self._chunk({"content": text}))
            elif dk == "input_json_delta":
                part = _str(delta["partial_json"])
                idx = self._tools.get(obj["index"])
                if idx is None:
                    raise UpstreamProtocolError("input_json_delta for a block that is no tool_use")
                if part:
                    out.append(
                        self._chunk(
                            {"tool_calls": [{"index": idx, "function": {"arguments": part}}]}
                        )
                    )
            elif dk == "thinking_delta" and _str(delta["thinking"]):
                out.append(self._chunk({"reasoning_content": delta["thinking"]}))
            # signature_delta, citations_delta and future delta types carry nothing the
            # chat format can hold
        elif kind == "content_block_start":
            self._need_start(kind)
            block = obj["content_block"]
            bk = block["type"]
            if bk == "text":
                if block.get("text"):
                    out.append(self._chunk({"content": block["text"]}))
            elif bk == "tool_use":
                idx = len(self._tools)
                self._tools[obj["index"]] = idx
                call = {
                    "index": idx,
                    "id": _str(block["id"]),
                    "type": "function",
                    "function": {"name": _str(block["name"]), "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
                if block.get("input"):
                    args = dumps_str(block["input"])
                    out.append(
                        self._chunk(
                            {"tool_calls": [{"index": idx, "function": {"arguments": args}}]}
                        )
                    )
            elif bk == "thinking" and block.get("thinking"):
                out.append(self._chunk({"reasoning_content": block["thinking"]}))
        elif kind == "message_start":
            msg = obj["message"]
            self._id = hub_id(msg.get("id"))
            self._started = True
            self._set_usage(msg.get("usage") or {}, True)
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "message_delta":
            self._need_start(kind)
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._set_usage(usage, False)
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason is not None:
                out.append(self._chunk({}, finish_from_anthropic(reason)))
        elif kind == "message_stop":
            self._need_start(kind)
            self._ended = True
            if self.include_usage:
                out.append(self._usage_chunk())
            out.append(DONE)
        elif kind == "error":
            err = obj.get("error") or {}
            self._ended = True
            message = str(err.get("message") or "upstream error")
            out.append(openai_error_chunk(message, openai_error_type(err.get("type"))))
        # content_block_stop, ping and unknown event types carry nothing to convert

    def _need_start(self, kind: Any) -> None:
        if not self._started:
            raise UpstreamProtocolError(f"Anthropic stream event {kind!r} before message_start")


_EV_MESSAGE_START = b"message_start"
_EV_BLOCK_START = b"content_block_start"
_EV_BLOCK_DELTA = b"content_block_delta"
_EV_BLOCK_STOP = b"content_block_stop"
_EV_MESSAGE_DELTA = b"message_delta"
_EV_MESSAGE_STOP = b"message_stop"


def _str(v: Any) -> str:
    """`v` if it is a string; anything else is a malformed upstream event."""
    if isinstance(v, str):
        return v
    raise UpstreamProtocolError(f"expected a string in the upstream event, got {type(v).__name__}")


_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%b}}\n\n'
)
# The same event in two parts around its text (`feed`'s hot loop).
_TEXT_HEAD, _TEXT_END = _TEXT_DELTA.split(b"%b")


def _hot_text(c: dict[str, Any]) -> str | None:
    """The text of the hot chunk of an OpenAI stream, else None: one choice (index
    0, no finish) whose delta is only `content`, a string; no usage, no error."""
    choices = c.get("choices")
    if (
        type(choices) is list
        and len(choices) == 1
        and c.get("usage") is None
        and type(ch := choices[0]) is dict
        and type(delta := ch.get("delta")) is dict
        and len(delta) == 1
        and type(content := delta.get("content")) is str
        and ch.get("finish_reason") is None
        and ch.get("index", 0) == 0
        and "error" not in c
    ):
        return content
    return None


def _hot_delta_text(obj: dict[str, Any]) -> str | None:
    """The text of an Anthropic `content_block_delta` of a `text_delta`, else None
    (the event whose chunk is its text only: `AnthropicToOpenAIStream._dispatch`)."""
    if obj.get("type") == "content_block_delta":
        delta = obj.get("delta")
        if type(delta) is dict and delta.get("type") == "text_delta":
            text = delta.get("text")
            if type(text) is str:
                return text
    return None


# A string token: where a hot chunk's text is in its bytes (see `_learn`).
_STRING = re.compile(rb'[ \t\r\n]*("(?:[^"\\]|\\.)*")')
_CONTENT_KEY = b'"content":'
_TEXT_KEY = b'"text":'
_SENTINEL = "\x01fastgate"  # a text no upstream sends (it proves the template)
_SENTINEL_TOKEN = orjson.dumps(_SENTINEL)
_LEARN_TRIES = 4  # hot chunks a stream may fail to make a template of, then no more


def _template(
    data: bytes, key: bytes, obj: dict[str, Any], holder: dict[str, Any], field: str, text: str
) -> tuple[bytes, bytes] | None:
    """The bytes of `data` (which parsed to `obj`) before and after the string token
    of `holder[field]` (`text`, a value inside `obj`), found after an occurrence of
    `key`. Proved, not assumed: with that token replaced by a sentinel the bytes
    must parse to `obj` with the sentinel in that field (JSON parses a string token
    the same wherever its value comes from), so any string token between the two
    parts is the text of an object otherwise equal to `obj`. None: no occurrence
    proves (a decoy key with the same string comes first in the bytes, say)."""
    if text == _SENTINEL:
        return None
    i = data.find(key)
    while i >= 0:
        m = _STRING.match(data, i + len(key))
        if m is not None:
            pre, suf = data[: m.start(1)], data[m.end(1) :]
            try:
                trial = orjson.loads(pre + _SENTINEL_TOKEN + suf)
            except orjson.JSONDecodeError:
                trial = None
            holder[field] = _SENTINEL
            same = trial == obj
            holder[field] = text
            if same:
                return pre, suf
        i = data.find(key, i + 1)
    return None


def _ev(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class OpenAIToAnthropicStream(FromOpenAIStream):
    """OpenAI chat-completion chunk SSE (or hub chunks via `push`) in, Anthropic SSE out.

    OpenAI reports usage in a final chunk after `finish_reason`, so the closing
    `message_delta` (stop reason + usage) waits for that chunk or for `[DONE]`; text
    and tool-call deltas leave as they come.
    """

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.model = model
        self.usage = Usage()
        self._reasoning_tokens = 0
        self._dec = SSEDecoder(max_event_bytes)
        self._started = False
        self._ended = False
        self._next = 0  # next Anthropic block index
        self._open: tuple[str, Any] | None = None  # ("text"|"thinking"|"tool", key)
        self._open_index = -1
        self._tools: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self._stop: str | None = None
        # The hot chunk's bytes around its text (`_learn`): while they repeat, a
        # chunk is read without parsing it whole.
        self._pre = b""
        self._suf = b""
        self._tries = _LEARN_TRIES

    # -- public (feed / close / finish / push: FromOpenAIStream) ------------------

    def error_event(self, message: str, type_: str = "api_error") -> bytes:
        """An Anthropic `event: error` (after a failure once bytes were sent)."""
        return anthropic_error_event(message, type_)

    # -- internals ---------------------------------------------------------------

    def _saw_finish(self) -> bool:
        return self._stop is not None

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        mid = foreign_id(chunk.get("id"), "msg_")
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage_dict(self.usage),
        }
        out.append(_ev(_EV_MESSAGE_START, {"type": "message_start", "message": message}))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                _ev(_EV_BLOCK_STOP, {"type": "content_block_stop", "index": self._open_index})
            )
            self._open = None

    def _open_block(self, kind: str, key: Any, block: dict[str, Any], out: list[bytes]) -> int:
        self._close_block(out)
        idx = self._next
        self._next += 1
        self._open = (kind, key)
        self._open_index = idx
        out.append(
            _ev(
                _EV_BLOCK_START,
                {"type": "content_block_start", "index": idx, "content_block": block},
            )
        )
        return idx

    def _delta(self, idx: int, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            _ev(_EV_BLOCK_DELTA, {"type": "content_block_delta", "index": idx, "delta": delta})
        )

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open[0] != kind:
            block = {"type": "text", "text": ""}
            if kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_block(kind, None, block, out)
        if kind == "thinking":
            self._delta(self._open_index, {"type": "thinking_delta", "thinking": text}, out)
        else:  # the hot event of a stream: the same bytes as _delta, without the dicts
            out.append(_TEXT_DELTA % (self._open_index, orjson.dumps(text)))

    def feed(self, data: bytes) -> bytes:
        """`FromOpenAIStream.feed`, reading a hot chunk from its bytes once it
        matches the stream's template (`_learn`): the text between the template's
        two parts, a string token, is the only thing parsed. Same events out.

        Hot loop: what a hot chunk's test and event need (the template, the open
        text block's event head) is read once, and again only after a chunk went
        through `push`, the one place that changes it."""
        datas = sse_feed_data(self._dec, data)
        if not self._pre and not self._tries:
            return self.push(hub_items(datas))  # no template for this stream
        if self._ended:
            return b""
        out: list[bytes] = []
        loads = orjson.loads
        dumps = orjson.dumps
        pre = self._pre
        suf = self._suf
        lp = len(pre)
        ls = -len(suf)
        # The event of more text for the open text block, up to that text (None: no
        # template, or no text block open; then `push` reads the chunk).
        head = self._text_head() if pre else None
        for i, d in enumerate(datas):
            if head is not None and d.startswith(pre) and d.endswith(suf) and len(d) - lp + ls >= 2:
                try:
                    text = loads(d[lp:ls])
                except orjson.JSONDecodeError:
                    text = None  # not one string token: the chunk is parsed whole
                if type(text) is str:
                    if text:
                        out += (head, dumps(text), _TEXT_END)
                    continue
            items = hub_items([d])
            if not items:
                continue
            # `push(items)` for this one chunk, without its loop and join and with
            # the chunk tested once (most of a stream's other chunks come one at a
            # time: its first, the finish, the usage, [DONE]).
            it = items[0]
            text = _hot_text(it) if type(it) is dict else None
            if text is not None and (h := self._text_head()) is not None:
                if text:
                    out += (h, dumps(text), _TEXT_END)  # `push`'s hot item
            else:
                self._item(it, out)
            if self._ended:
                break
            if text is not None:
                # A hot chunk the template did not fit (or there is none yet): learn
                # from it while tries last; then read the stream as before.
                if self._tries:
                    self._learn(d, it, text)
                else:
                    self._pre = self._suf = b""
                    out.append(self.push(hub_items(datas[i + 1 :])))  # no template: the rest
                    break
                pre = self._pre
                suf = self._suf
                lp = len(pre)
                ls = -len(suf)
            head = self._text_head() if pre else None
        return b"".join(out)

    def _text_head(self) -> bytes | None:
        """The open text block's delta event up to its text; None: no text block."""
        op = self._open
        return _TEXT_HEAD % self._open_index if op is not None and op[0] == "text" else None

    def _learn(self, data: bytes, chunk: dict[str, Any], text: str) -> None:
        """Make the stream's template from a hot chunk already converted
        (`_template`). OpenAI's own streams add a per-chunk `obfuscation` string:
        they never repeat, and after a few tries the stream is read chunk by chunk
        as before."""
        self._tries -= 1
        delta = chunk["choices"][0]["delta"]
        found = _template(data, _CONTENT_KEY, chunk, delta, "content", text)
        if found is not None:
            self._pre, self._suf = found

    def push(self, items: list[Any]) -> bytes:
        """`FromOpenAIStream.push` with the hot chunk done in the loop: one choice
        whose delta is only more text for the open text block (no usage, no finish).
        Its event is the one `_chunk` would write, without that path's dozen lookups
        per chunk (most chunks of a stream are this one); any other item goes
        through `FromOpenAIStream._item`."""
        if self._ended:
            return b""
        out: list[bytes] = []
        dumps = orjson.dumps
        # The open text block's event head, made at the first hot item after a push
        # (b"": not made yet; None: no text block is open).
        head: bytes | None = b""
        for it in items:
            if head is not None and type(it) is dict and (text := _hot_text(it)) is not None:
                if not head:
                    head = self._text_head()
                if head is not None:
                    if text:
                        out += (head, dumps(text), _TEXT_END)
                    continue
            self._item(it, out)
            if self._ended:
                break
            head = b""  # the item may have opened or closed a block
        return b"".join(out)

    def _chunk(self, c: dict[str, Any], out: list[bytes]) -> None:
        if "error" in c and not c.get("choices"):
            err = c["error"] if isinstance(c["error"], dict) else {"message": str(c["error"])}
            self._ended = True
            out.append(
                anthropic_error_event(
                    str(err.get("message") or "upstream error"),
                    anthropic_error_type(
                        err.get("type") if isinstance(err.get("type"), str) else None
                    ),
                )
            )
            return
        usage = c.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
            self.usage.service_tier = reported_service_tier(c)
            self._reasoning_tokens = reasoning_tokens_of(usage)
        if not self._started:
            self._start(c, out)
        choices = c.get("choices") or []
        for ch in choices:
            if ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._text("thinking", reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text("text", content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text("text", refusal, out)
            for tc in delta.get("tool_calls") or ():
                self._tool_delta(tc, out)
            finish = ch.get("finish_reason")
            if finish is not None:
                self._close_block(out)
                self._stop = stop_reason_from_openai(finish)
        if not choices and isinstance(usage, dict) and self._stop is not None:
            self._finalize(out)  # the usage chunk after the finish: nothing else follows

    def _tool_delta(self, tc: dict[str, Any], out: list[bytes]) -> None:
        oi = tc.get("index", 0)
        fn = tc.get("function") or {}
        idx = self._tools.get(oi)
        if idx is None:
            block = {
                "type": "tool_use",
                "id": tc.get("id") or new_id("call_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            idx = self._open_block("tool", oi, block, out)
            self._tools[oi] = idx
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self._delta(idx, {"type": "input_json_delta", "partial_json": args}, out)

    def _finalize(self, out: list[bytes]) -> None:
        if self._ended:
            return
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        self._ended = True
        usage = anthropic_usage_dict(self.usage)
        out.append(
            _ev(
                _EV_MESSAGE_DELTA,
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_ev(_EV_MESSAGE_STOP, {"type": "message_stop"}))
