"""Usage from OpenAI responses as they pass: SSE streams (observe or strip) and JSON bodies.

The stream scanner works on events (it must be able to drop one event, the
usage-only chunk the gateway asked for on the client's behalf) and reads usage
from the tail of each chunk; the body scanner is the one JSON-object finder
looking for `"usage": {...}`. Both share the key test of
`fastgate.scan.jsonfind`, and both are on the hot path: the common chunk costs
one C-level search.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from fastgate.scan.jsonfind import ObjectFinder, is_key_object, key_hint, last_object
from fastgate.sse.decoder import last_event_end, next_event_end, parse_event, skip_blank_lines
from fastgate.vocab.usage import Usage, usage_from_openai

# `"usage"` where an object value may follow (one C search per chunk rejects the
# compact `"usage":null` every chat chunk carries)
_USAGE_HINT = key_hint(b"usage")
USAGE_KEY = b'"usage"'  # the key token, quotes included (also the fast path's body tail)
_NULL_END = b'"usage":null}\n\n'  # the end of every chunk of an OpenAI stream but the last
_NULL_END_LEN = len(_NULL_END)
_SHORT_READ = 1024  # up to this size a read is searched forwards in one go
# What follows the top-level "choices" key of a chunk that carries content.
_NONEMPTY_ARRAY = re.compile(rb"[ \t]*:[ \t]*\[[ \t]*[^\] \t\r\n]")
_OPEN_PROBE_BYTES = 4096  # look for that shape only this far into an event
# The response's `"service_tier": "<tier>"` (matched at an rfind of its key; a key
# inside a string would have escaped quotes, so this is always a real key).
SERVICE_TIER = re.compile(rb'"service_tier"[ \t\r\n]*:[ \t\r\n]*"([^"\\]{0,64})"')
TIER_KEY = b'"service_tier"'
_TIER_EDGE = 96  # bytes of a chunk's end joined to the next one's start
_BODY_USAGE_CAP = 64 * 1024
# Up to this size a whole non-stream body is parsed once (`body_usage`): orjson
# reads 2 KB in fewer instructions than finding the usage object's bytes does
# (bench/RESULTS.md, "Stop 25").
SMALL_BODY = 2048
# A `"usage"` object is one with a token count (a JSON schema property named
# "usage" has none): `not COUNT_KEYS.isdisjoint(obj)`.
COUNT_KEYS = frozenset(
    ("prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens")
)


def tier_at(buf: bytes, i: int) -> str | None:
    """The tier of the `"service_tier": "<tier>"` at `i` in `buf` (the tier the
    upstream served the request at: billing's multiplier), or None. Callers find
    `i` with `buf.rfind(TIER_KEY)` (the last one wins) and call only when found."""
    m = SERVICE_TIER.match(buf, i)
    return m.group(1).decode("latin-1") if m is not None else None


def body_usage(tail: bytes, usage: Usage) -> None:
    """Fill `usage` from a whole non-stream OpenAI body (the fast path keeps the
    body while it is under 16 KB). A small body (`SMALL_BODY`) is parsed whole,
    and its top-level `usage` object and `service_tier` are taken: a usage-like
    object nested elsewhere (a tool's JSON schema) cannot be mistaken for them.
    A larger body, or one that does not parse or has no top-level usage, is
    searched from its end as `OpenAIBodyUsage` searches a body: the last usage
    object, the last tier. Either way a usage object counts only with a token
    count in it (`COUNT_KEYS`)."""
    if len(tail) <= SMALL_BODY:
        try:
            obj = orjson.loads(tail)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict:
            found = obj.get("usage")
            if type(found) is dict and not COUNT_KEYS.isdisjoint(found):
                usage_from_openai(found, usage)
                tier = obj.get("service_tier")
                if type(tier) is str and len(tier) <= 64:
                    usage.service_tier = tier
                return
    found = last_object(tail, USAGE_KEY)
    if type(found) is dict and not COUNT_KEYS.isdisjoint(found):
        usage_from_openai(found, usage)
    i = tail.rfind(TIER_KEY)
    if i >= 0 and (tier := tier_at(tail, i)) is not None:
        usage.service_tier = tier


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
    # (find() is -1 when absent: -3 means none of the three is there)
    if head.count(b"{") != 1 or head.find(b"}") + head.find(b"[") + head.find(b"]") != -3:
        return False
    if head.find(b"\n") >= 0 or head.find(b"\r") >= 0:  # "choices" on the first line
        return False
    return _NONEMPTY_ARRAY.match(buf, k + 9) is not None


def _splice(buf: bytes | bytearray, drop: list[int], start: int, stop: int) -> bytes:
    """`buf[start:stop]` without the range `drop` ([start, end], at or after `start`;
    empty: nothing dropped): what strip mode forwards."""
    if not drop:
        return bytes(buf[start:stop])
    return b"".join((buf[start : drop[0]], buf[drop[1] : stop] if stop > drop[1] else b""))


def _hint(buf: bytes | bytearray, pos: int) -> int:
    m = _USAGE_HINT.search(buf, pos)
    return -1 if m is None else m.start()


class OpenAIStreamUsage:
    """Usage from an OpenAI SSE stream (chat.completions, completions, Responses API).

    Usage is read from the tail of each chunk (read): of the events it completes,
    only the last one with a usage object is parsed. A chunk of whole events is
    searched once (up to `_SHORT_READ` bytes: forwards, the frequent
    `"usage":null` rejected on the spot) or from its end back (longer: the last
    `"usage"` key first, nothing before its event parsed). A chunk that ends
    inside an event is scanned event by event, and the bytes of the incomplete
    event are kept so that it can be parsed once it completes.

    Observe mode (`strip_usage_chunk=False`) returns every input chunk as it is.
    Strip mode removes the usage-only chunk (`"choices":[]` plus a `usage` object)
    that the gateway asked for on the client's behalf, when it is a chunk's last
    usage event (an earlier one in the same chunk passes: servers send one, last).
    Complete events go out at once; an incomplete event is held until its blank
    line arrives, unless its first bytes already prove a top-level non-empty
    `choices` (then it cannot be the usage chunk and its bytes go out as they
    come). Every other byte is forwarded unchanged, in order.

    The last usage object of the stream wins, whatever the split (a later
    `"usage":null` never erases it): vLLM-style servers that put usage on the
    last content chunk are counted, and such a chunk is never stripped.
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
        # find(), not `in`: a bytes `in` tries the operand as an integer first and
        # raises and clears a TypeError (formatted) on every call
        if not self._cr and data.find(b"\r") >= 0:
            self._cr = True
        if (
            not self._tail
            and not self._big
            and (data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n"))
        ):
            if len(data) <= _SHORT_READ:  # an event or two: one search over it all
                if _USAGE_HINT.search(data) is None:
                    return data  # whole events, no usage object: the common read
                i = data.rfind(USAGE_KEY)
            else:  # a longer read: its usage is read from the tail, its last key first
                # (OpenAI ends a chunk with a null usage: found without a search)
                end_null = data.endswith(_NULL_END)
                i = len(data) - _NULL_END_LEN if end_null else data.rfind(USAGE_KEY)
                if i < 0:
                    return data  # whole events without a usage key
                if end_null or data.startswith(b":null", i + 7):
                    if _USAGE_HINT.search(data, 0, i) is None:
                        return data  # no usage object in the read
                    i = data.rfind(USAGE_KEY, 0, i)  # an object before a null: rare
            if not self._cr:
                return self._tail_events(data, i)
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

    def _tail_events(self, data: bytes, i: int) -> bytes:
        """`data` is whole LF-delimited events and nothing is carried: read its usage
        from the tail. From the last `"usage"` token (at `i`) back, the first event
        that yields a usage object is the read's last one: it is taken and, in strip
        mode, cut when it is the usage-only chunk; nothing before it is searched."""
        n = len(data)
        while i >= 0:
            if not is_key_object(data, i + 7, n, 7):
                i = data.rfind(USAGE_KEY, 0, i)
                continue
            start = data.rfind(b"\n\n", 0, i)
            start = skip_blank_lines(data, 0 if start < 0 else start + 2)
            end = data.find(b"\n\n", i) + 2  # data ends with a blank line
            if end - start <= self._max:
                only = self._event_usage(data[start:end])
                if only is not None:
                    if only and self._strip:
                        return data[:start] + data[end:]
                    return data
            i = data.rfind(USAGE_KEY, 0, start)
        return data

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
        drop: list[int] = []  # the range strip mode cuts: the read's last usage event
        done = 0  # events ending at or before `done` are settled
        cand = self._cand
        p = _hint(buf, base - 6 if base > 6 else 0)
        while True:
            if cand < 0:
                while p >= 0 and not is_key_object(buf, p + 7, n, 7):
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
            if end - start <= self._max:  # over the bound: forwarded, never parsed
                only = self._event_usage(buf[start:end])
                if only is not None:  # the read's last usage so far: only it may be cut
                    drop = [start, end] if only and strip and start >= sent else []
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
            if not drop and sent == 0 and fwd == n and buf is not self._tail:
                out = buf  # zero copy: the whole chunk goes out as it came
            else:
                out = _splice(buf, drop, sent, fwd)
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

    def _event_usage(self, raw: bytes | bytearray) -> bool | None:
        """Take the usage from one complete event: None if it has no usage object,
        else whether it is the usage-only chunk."""
        ev = parse_event(raw)
        if ev is None or not ev.data:
            return None
        try:
            obj = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict:
            return None
        u = obj.get("usage")
        if type(u) is dict:
            usage = usage_from_openai(u, self.usage)
            tier = obj.get("service_tier")
            if type(tier) is str:
                usage.service_tier = tier
            choices = obj.get("choices")
            return type(choices) is list and not choices
        r = obj.get("response")
        if type(r) is dict:
            u = r.get("usage")
            if type(u) is dict:
                usage = usage_from_openai(u, self.usage)
                tier = r.get("service_tier")
                if type(tier) is str:
                    usage.service_tier = tier
                return False
        return None


class OpenAIBodyUsage(ObjectFinder):
    """Usage from a non-streamed OpenAI JSON body, read as it streams past.

    Nothing but the `usage` object is kept (see `ObjectFinder`). The last usage
    object found wins; an object without any token count (say, a JSON schema
    property named "usage") is ignored.
    """

    __slots__ = ("_prev", "usage")

    def __init__(self) -> None:
        ObjectFinder.__init__(self, b"usage", _BODY_USAGE_CAP)
        self.usage = Usage()
        self._prev = b""  # the previous chunk (a service_tier key may straddle two)

    def feed(self, data: bytes) -> None:
        """Scan `data` for the usage object and the top-level `service_tier` (the
        last one wins; C-level searches only)."""
        prev = self._prev
        if prev:
            joint = prev[-_TIER_EDGE:] + data[:_TIER_EDGE]
            i = joint.rfind(TIER_KEY)
            if i >= 0 and (tier := tier_at(joint, i)) is not None:
                self.usage.service_tier = tier
        i = data.rfind(TIER_KEY)
        if i >= 0 and (tier := tier_at(data, i)) is not None:
            self.usage.service_tier = tier
        self._prev = data
        self.find(data)

    def on_object(self, obj: dict[str, Any]) -> None:
        if not COUNT_KEYS.isdisjoint(obj):
            usage_from_openai(obj, self.usage)

    def close(self) -> Usage:
        """At EOF: the usage found (an unfinished object is ignored)."""
        self.finish()
        return self.usage
