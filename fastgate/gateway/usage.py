"""Token usage: the numbers one request consumed, and the record it leaves behind.

`Usage` is what the extractors below fill from the upstream's own bytes.
`UsageRecord` is the one row each request produces (SPEC section 5); the data
plane builds it when the response ends and hands it to the log sink.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from fastgate.sse.decoder import last_event_end, next_event_end, parse_event, skip_blank_lines


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # all input tokens, cached and cache-write included
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache-read input tokens
    cache_write_tokens: int = 0  # cache-creation input tokens (Anthropic)
    found: bool = False  # the upstream reported usage (False -> estimated or none)


@dataclass(slots=True)
class UsageRecord:
    ts: float  # unix time when the request arrived
    request_id: str
    key_name: str
    group: str
    ingress: str  # "openai" | "anthropic" | "gemini"
    channel: str
    provider: str
    model: str  # as requested (after alias resolution: the public name)
    upstream_model: str
    stream: bool
    status: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    estimated: bool
    cost_micros: int  # integer micro-dollars
    latency_ms: float
    ttfb_ms: float
    attempts: int
    client_ip: str
    tag: str  # the client's x-fastgate-tag header
    cache_hit: bool = False
    uid: str = ""  # unique per record (the gateway's own id): replays never duplicate a row


def estimate_tokens(value: object) -> int:
    """A rough token count of request text (~4 characters a token, 3 per message),
    for the mock provider and for count-tokens calls no channel can answer."""
    if isinstance(value, str):
        return max(1, len(value) // 4)
    if isinstance(value, list):
        return sum(estimate_tokens(v) for v in value)
    if isinstance(value, dict):
        return sum(estimate_tokens(v) for k, v in value.items() if k not in ("role", "type")) + 3
    return 0


# -- OpenAI usage extraction ------------------------------------------------------
#
# The passthrough path forwards upstream bytes untouched, so these scanners only
# look for the `usage` object and parse nothing else. They rely on one property of
# JSON: a quote inside a string is always escaped, so the bytes `"usage"` followed
# by `:` are the key "usage" -- unless the opening quote follows a backslash, in
# which case they end some other key (`"x\"usage"`) and are skipped.

_USAGE_KEY = b'"usage"'
# `"usage"` where an object value may follow, or the input ends too soon to tell;
# the compact `"usage":null` every chat chunk carries does not match, so one C
# search per chunk rejects those without a Python-level loop
_USAGE_HINT = re.compile(rb'"usage"(?:[ \t\r\n]|:[ \t\r\n{]|:?\Z)')
_WS = b" \t\r\n"
_AFTER_KEY = re.compile(rb"[ \t\r\n]*(:[ \t\r\n]*)?")
# What follows the top-level "choices" key of a chunk that carries content.
_NONEMPTY_ARRAY = re.compile(rb"[ \t]*:[ \t]*\[[ \t]*[^\] \t\r\n]")
_OPEN_PROBE_BYTES = 4096  # look for that shape only this far into an event
_STRUCT = re.compile(rb'[{}"]')
_BODY_USAGE_CAP = 64 * 1024
_USAGE_FIELDS = (
    "prompt_tokens",
    "input_tokens",
    "completion_tokens",
    "output_tokens",
    "total_tokens",
)


def _count(value: object) -> int:
    """A token count from JSON: ints as they are, floats truncated, anything else 0."""
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and 0 < value < 1e18:
        return int(value)
    return 0


def usage_from_openai(obj: dict, usage: Usage) -> None:
    """Fill `usage` from an OpenAI `usage` object (chat, completions, embeddings, Responses).

    Every field is overwritten, so the last usage object seen wins. Missing or null
    counts become 0; a missing prompt or completion count is derived from
    `total_tokens` when that is present. DeepSeek's `prompt_cache_hit_tokens` and
    OpenRouter's `cache_write_tokens` are read when the standard fields are absent.
    """
    get = obj.get
    prompt = get("prompt_tokens")
    if prompt is None:
        prompt = get("input_tokens")
    completion = get("completion_tokens")
    if completion is None:
        completion = get("output_tokens")
    details = get("prompt_tokens_details")
    if type(details) is not dict:
        details = get("input_tokens_details")
    cached = cache_write = 0
    if type(details) is dict:
        cached = _count(details.get("cached_tokens"))
        cache_write = _count(details.get("cache_write_tokens"))
    if not cached:
        cached = _count(get("prompt_cache_hit_tokens"))
    total = _count(get("total_tokens"))
    c = _count(completion)
    p = _count(prompt) if prompt is not None else max(0, total - c)
    if completion is None:
        c = max(0, total - p)
    usage.prompt_tokens = p
    usage.completion_tokens = c
    usage.cached_tokens = cached
    usage.cache_write_tokens = cache_write
    usage.found = True


def _is_usage_object(buf: bytes | bytearray, q: int, n: int) -> bool:
    """After a `"usage"` token ending at `q`: is it a key whose value is an object?

    True also when the bytes run out before that can be told (the caller then
    parses the event, which settles it). A backslash before the opening quote
    means the quote is escaped (or closes a string): not the key `usage`.
    """
    if q > 7 and buf[q - 8] == 92:
        return False
    if q + 1 < n and buf[q] == 58:  # compact `"usage":` -- the common case
        c = buf[q + 1]
        if c == 123:  # {
            return True
        if c not in _WS:
            return False  # null, a number, a string...
    elif q < n and buf[q] != 58 and buf[q] not in _WS:
        return False  # a string value such as "type":"usage"
    m = _AFTER_KEY.match(buf, q)
    e = m.end()  # type: ignore[union-attr]
    if e >= n:
        return True
    return m.group(1) is not None and buf[e] == 123  # type: ignore[union-attr]


def _is_content_chunk(buf: bytes | bytearray, ev0: int, n: int) -> bool:
    """Does the (incomplete) event at `ev0` start like a chat chunk with content?

    That is: a first line `data:` with exactly one `{` and no other bracket before
    a "choices" key that follows `{` or `,`, whose array is not empty. Brackets
    inside strings are counted too, and a quote right after `{` or `,` is never an
    escaped one, so in any event that parses at all this is the top-level
    "choices": the event cannot be the usage-only chunk. Anything else
    (pretty-printed data, a nested member first, a comment line first) is "no",
    and the event simply waits for its end.
    """
    if not buf.startswith(b"data:", ev0):
        return False
    k = buf.find(b'"choices"', ev0, min(n, ev0 + _OPEN_PROBE_BYTES))
    if k < 0:
        return False
    j = k - 1
    while buf[j] == 32 or buf[j] == 9:
        j -= 1
    if buf[j] != 123 and buf[j] != 44:  # { or ,
        return False
    head = buf[ev0:k]
    if head.count(b"{") != 1 or b"}" in head or b"[" in head or b"]" in head:
        return False
    if b"\n" in head or b"\r" in head:  # "choices" must be on the first line
        return False
    return _NONEMPTY_ARRAY.match(buf, k + 9) is not None


def _hint(buf: bytes | bytearray, pos: int) -> int:
    m = _USAGE_HINT.search(buf, pos)
    return -1 if m is None else m.start()


class OpenAIStreamUsage:
    """Usage from an OpenAI SSE stream (chat.completions, completions, Responses API).

    Observe mode (`strip_usage_chunk=False`) returns every input chunk as it is and
    only looks: one search for `"usage"` per chunk (the frequent `"usage":null` is
    rejected on the spot), one reverse search for the last event boundary, and a
    copy of the bytes of the event still incomplete at the end of the chunk (so an
    event with a usage object can be parsed once it completes).

    Strip mode removes the usage-only chunk (`"choices":[]` plus a `usage` object)
    that the gateway asked for on the client's behalf. Complete events go out at
    once; an incomplete event is held until its blank line arrives, unless its
    first bytes already prove a top-level non-empty `choices` (then it cannot be
    the usage chunk and its bytes go out as they come). Every other byte is
    forwarded unchanged, in order.

    The last non-null usage wins: vLLM-style servers that put usage on the last
    content chunk are counted, and such a chunk is never stripped.
    """

    __slots__ = ("_big", "_cand", "_cr", "_max", "_open", "_sent", "_strip", "_tail", "usage")

    def __init__(
        self, strip_usage_chunk: bool = False, max_event_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self.usage = Usage()
        self._strip = strip_usage_chunk
        self._max = max_event_bytes
        self._tail = bytearray()  # bytes of the incomplete event (from after the last blank line)
        self._cand = -1  # offset in _tail of a `"usage": {` seen in the incomplete event
        self._sent = 0  # strip mode: bytes at the start of _tail already forwarded
        self._open = False  # strip mode: the incomplete event cannot be the usage chunk
        self._big = False  # the incomplete event outgrew the bound: _tail is only a carry
        self._cr = False  # the stream has shown a CR: search for every blank-line form

    def feed(self, data: bytes) -> bytes:
        """Look at `data`; return the bytes to forward (`data` itself in observe mode)."""
        if not data:
            return data
        if not self._cr and b"\r" in data:
            self._cr = True
        if (
            not self._tail
            and not self._big
            and (data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n"))
            and _USAGE_HINT.search(data) is None
        ):
            return data  # whole events, none with a usage object: the common chunk
        if self._big:
            out = self._skip_big(data)
            return data if not self._strip else out
        if not self._strip:
            self._process(data, False)
            return data
        return self._process(data, False)

    def close(self) -> bytes:
        """At EOF: settle the last event (it may lack its blank line); return what is left."""
        tail = self._tail
        if self._big or not tail:
            self._tail = bytearray()
            return b""
        self._tail = bytearray()
        out = self._scan(tail, len(tail), True)
        return bytes(out) if self._strip else b""

    # -- internals ------------------------------------------------------------------

    def _skip_big(self, data: bytes) -> bytes:
        """Pass the rest of an oversized event (forwarded, not parsed), then go on."""
        carry = self._tail
        base = len(carry)
        buf = bytes(carry) + data
        n = len(buf)
        hi = n - 1 if self._cr and buf[n - 1] == 13 else n
        end = next_event_end(buf, 0, hi, self._cr)
        if end < 0:
            self._tail = bytearray(buf[-3:])
            return data
        self._big = False
        self._tail = bytearray()
        cut = end - base  # the oversized event ends here in `data`
        if cut >= len(data):
            return data
        rest = self._process(data[cut:], False)
        return data[:cut] + rest if self._strip else data

    def _process(self, data: bytes, final: bool) -> bytes:
        tail = self._tail
        if tail:
            base = len(tail)
            tail += data
            return self._scan(tail, base, final)
        return self._scan(data, 0, final)

    def _scan(self, buf: bytes | bytearray, base: int, final: bool) -> bytes:
        """Handle the events that `buf` completes; keep its incomplete tail.

        `buf` is the kept tail (`base` bytes) followed by the new bytes; only the
        new bytes and a few carried ones are searched.
        """
        n = len(buf)
        cr = self._cr
        hi = n - 1 if cr and not final and buf[n - 1] == 13 else n
        strip = self._strip
        sent = self._sent if strip else 0
        cuts: list[int] = []
        done = 0  # events ending at or before `done` are settled
        cand = self._cand
        p = _hint(buf, base - 6 if base > 6 else 0)
        while True:
            if cand < 0:
                while p >= 0 and not _is_usage_object(buf, p + 7, n):
                    p = _hint(buf, p + 7)
                if p < 0:
                    break
                cand = p
            end = next_event_end(buf, cand if cand > base - 2 else base - 2, hi, cr)
            if end < 0:
                if not final:
                    break
                end = n
            start = last_event_end(buf, done, cand, cr)
            start = skip_blank_lines(buf, done if start < 0 else start)
            if end - start > self._max:
                pass  # over the bound: forwarded, never parsed (whatever the split)
            elif self._event_usage(buf[start:end]) and strip and start >= sent:
                cuts.append(start)
                cuts.append(end)
            done = end
            cand = -1
            if p >= 0:
                p = _hint(buf, end)
        # the incomplete tail starts after the last blank line
        if final or buf.endswith(b"\n\n") or buf.endswith(b"\r\n\r\n"):
            cut = n
        else:
            cut = last_event_end(buf, base - 2 if base > 2 else 0, hi, cr)
            if cut < done:
                cut = done
        out = b""
        if strip:
            same_event = cut == 0
            opened = self._open if same_event else False
            fwd = n
            if not opened and cut < n:
                # blank lines ahead of the incomplete event belong to no event
                ev0 = skip_blank_lines(buf, cut)
                opened = _is_content_chunk(buf, ev0, n)
                if not opened:
                    fwd = ev0 if ev0 > sent else sent
            if not cuts and sent == 0 and fwd == n and buf is not self._tail:
                out = buf  # zero copy: the whole chunk goes out as it came
            else:
                pieces = []
                for k in range(0, len(cuts), 2):
                    pieces.append(buf[sent : cuts[k]])
                    sent = cuts[k + 1]
                if fwd > sent:
                    pieces.append(buf[sent:fwd])
                out = b"".join(pieces)
            self._open = opened
            self._sent = fwd - cut if fwd > cut else 0
        # keep the incomplete event
        self._cand = cand - cut if cand >= 0 else -1
        if buf is self._tail:
            if cut:
                del buf[:cut]
        elif cut < n:
            self._tail = bytearray(memoryview(buf)[cut:])
        if len(self._tail) > self._max:
            out = self._give_up_event(out)
        return out  # type: ignore[return-value]

    def _give_up_event(self, out: bytes) -> bytes:
        """The incomplete event is too big to hold or parse: forward it and skip it."""
        tail = self._tail
        if self._strip and self._sent < len(tail):
            out += bytes(tail[self._sent :])
        self._tail = bytearray(tail[-3:])
        self._big = True
        self._cand = -1
        self._sent = 0
        self._open = False
        return out

    def _event_usage(self, raw: bytes | bytearray) -> bool:
        """Take the usage from one complete event; True if it is the usage-only chunk."""
        ev = parse_event(raw)
        if ev is None or not ev.data:
            return False
        try:
            obj = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            return False
        if type(obj) is not dict:
            return False
        u = obj.get("usage")
        if type(u) is dict:
            usage_from_openai(u, self.usage)
            choices = obj.get("choices")
            return type(choices) is list and not choices
        r = obj.get("response")
        if type(r) is dict:
            u = r.get("usage")
            if type(u) is dict:
                usage_from_openai(u, self.usage)
        return False


class OpenAIBodyUsage:
    """Usage from a non-streamed OpenAI JSON body, read as it streams past.

    Nothing but the `usage` object is kept: one C-level search for `"usage"` per
    chunk (a carry only when a chunk ends inside that token), then the object's
    end is found by counting braces between `}`s and checked by parsing it; only
    if that parse fails (a brace inside a string), or the object spans chunks, is
    it copied (at most 64 KiB) and matched with strings and escapes tracked. The
    last usage object found wins; an object without any token count (say, a JSON
    schema property named "usage") is ignored.
    """

    __slots__ = ("_before", "_cap", "_carry", "_cpos", "_depth", "_instr", "_last", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self._carry = b""  # end of the previous chunk that may begin `"usage"...`
        self._before = -1  # the byte before the carry (a backslash: escaped quote)
        self._last = -1  # the last byte fed so far
        self._cap: bytearray | None = None  # a usage object spanning chunks
        self._cpos = 0
        self._depth = 0
        self._instr = False

    def feed(self, data: bytes) -> None:
        """Scan `data` (any size, any split)."""
        if not data:
            return
        before = self._last
        self._last = data[-1]
        if self._cap is not None:
            rest = self._capture(data)
            if not rest:
                return
            data = rest
            before = -1  # right after the object's `}`
        carry = self._carry
        if carry:
            self._carry = b""
            data = carry + data
            before = self._before
        self._scan(data, before)

    def close(self) -> Usage:
        """At EOF: the usage found (an unfinished object is ignored)."""
        self._cap = None
        self._carry = b""
        return self.usage

    def _scan(self, buf: bytes, before: int) -> None:
        """Search `buf` (`before`: the stream's byte just ahead of it, or -1)."""
        n = len(buf)
        p = _hint(buf, 0)
        while p >= 0:
            q = p + 7
            if (buf[p - 1] if p else before) == 92 or not _is_usage_object(buf, q, n):
                p = _hint(buf, q)
                continue
            b = _AFTER_KEY.match(buf, q).end()  # type: ignore[union-attr]
            if b >= n:  # can't tell yet: carry from the token
                if n - p <= 256:
                    self._carry = buf[p:]
                    self._before = buf[p - 1] if p else before
                return
            end = _brace_end(buf, b, n)
            if end >= 0 and end - b <= _BODY_USAGE_CAP and self._take(buf[b:end]):
                p = _hint(buf, end)
                continue
            # spans chunks, or a brace inside a string fooled the count
            self._cap = bytearray()
            self._cpos = self._depth = 0
            self._instr = False
            rest = self._capture(memoryview(buf)[b:])
            if not rest:
                return
            buf = rest
            before = -1
            n = len(buf)
            p = _hint(buf, 0)
        # a chunk ending inside `"usage` carries those bytes over
        q = buf.rfind(b'"', n - 6 if n > 6 else 0)
        if q >= 0 and _USAGE_KEY.startswith(buf[q:]):
            self._carry = buf[q:]
            self._before = buf[q - 1] if q else before

    def _take(self, raw: bytes | bytearray) -> bool:
        """Parse a candidate object; False if it is not valid JSON."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if type(obj) is dict and any(k in obj for k in _USAGE_FIELDS):
            usage_from_openai(obj, self.usage)
        return True

    def _capture(self, chunk: bytes | memoryview) -> bytes:
        """Feed the object being captured; return the body bytes that follow it.

        Returns b"" while the object is still open. An object that outgrows the
        cap is dropped, and the bytes it swallowed are not searched again.
        """
        cap = self._cap
        assert cap is not None
        room = _BODY_USAGE_CAP + 1 - len(cap)
        cap += chunk[:room]
        end = self._match(cap)
        if end >= 0:
            self._cap = None
            self._take(cap[:end])
            return bytes(cap[end:]) + bytes(chunk[room:])
        if len(cap) > _BODY_USAGE_CAP:
            self._cap = None
            return bytes(chunk[room:])
        return b""

    def _match(self, cap: bytearray) -> int:
        """Advance the string-aware brace matcher over new bytes; offset after `}` or -1."""
        pos = self._cpos
        depth = self._depth
        instr = self._instr
        n = len(cap)
        result = -1
        while pos < n:
            if instr:
                j = cap.find(b'"', pos)
                if j < 0:
                    pos = n
                    break
                k = j
                while cap[k - 1] == 92:  # backslashes before the quote
                    k -= 1
                pos = j + 1
                if not (j - k) & 1:
                    instr = False
            else:
                m = _STRUCT.search(cap, pos)
                if m is None:
                    pos = n
                    break
                j = m.start()
                pos = j + 1
                c = cap[j]
                if c == 34:
                    instr = True
                elif c == 123:
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        result = pos
                        break
        self._cpos = pos
        self._depth = depth
        self._instr = instr
        return result


def _brace_end(buf: bytes, b: int, n: int) -> int:
    """Offset after the `}` that balances the `{` at `b`, counting every brace.

    Braces inside strings are counted too; the caller confirms the result by
    parsing it (a JSON object is never a proper prefix of another, so a parse
    that succeeds proves the end is right).
    """
    depth = 0
    pos = b
    limit = b + _BODY_USAGE_CAP + 1
    if limit > n:
        limit = n
    while True:
        j = buf.find(b"}", pos, limit)
        if j < 0:
            return -1
        depth += buf.count(b"{", pos, j) - 1
        pos = j + 1
        if depth <= 0:
            return pos
