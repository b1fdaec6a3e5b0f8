"""The one JSON-object finder: every `"<key>": {...}` in a byte stream, fed in any split.

The passthrough path forwards upstream bytes untouched; the usage scanners only
look for one object (`usage`, `usageMetadata`) and parse nothing else. They rely
on one property of JSON: a quote inside a string is always escaped, so the bytes
`"usage"` followed by `:` are the key "usage" -- unless the opening quote follows
a backslash, in which case they end some other key (`"x\\"usage"`) and are skipped.

`ObjectFinder` never rescans a byte and never holds the stream: per chunk, one
C-level search for the key; the object's end is found by counting braces between `}`s and
checked by parsing it. Only when that parse fails (a brace inside a string) or
the object spans chunks is it copied, at most `cap` bytes, and matched with
strings and escapes tracked, incrementally. The key helpers (`key_hint`,
`is_key_object`) are shared with the SSE-event scanner of OpenAI streams.

`last_object` is the same finder run backwards over a buffer already whole (the
tail of a non-stream body, on the fast path): the last `"<key>": {` that is a key,
its end found by counting braces and proved by orjson's parse; when a brace in a
string fools the count, parsed in place by the C JSON scanner, which says where
the value ends.
"""

from __future__ import annotations

import json.decoder
import json.scanner
import re
from typing import Any

import orjson

WS = b" \t\r\n"
AFTER_KEY = re.compile(rb"[ \t\r\n]*(:[ \t\r\n]*)?")
_STRUCT = re.compile(rb'[{}"]')
DEFAULT_CAP = 64 * 1024


# The C JSON scanner: one value at an offset, and where it ends (no Python frames).
_scan_value = json.scanner.c_make_scanner(json.decoder.JSONDecoder())


def last_object(buf: bytes, quoted_key: bytes) -> Any:
    """The value of the last `"<key>": {...}` in `buf` (`quoted_key` with its quotes),
    or None. `buf` must hold the whole object; keys and numbers are ASCII, so the
    object is read through a latin-1 view of the bytes."""
    i = buf.rfind(quoted_key)
    k = len(quoted_key)
    while i > 0 and buf[i - 1] == 92:  # an escaped quote: inside a string
        i = buf.rfind(quoted_key, 0, i)
    if i < 0:
        return None
    j = buf.find(b"{", i + k)
    if j < 0 or buf[i + k : j].strip() != b":":
        return None
    # Its end by counting braces (`brace_end`, inlined: hot), proved by orjson's
    # parse of just those bytes (a JSON object is never a proper prefix of
    # another). A brace inside a string fools the count and fails the parse: then
    # the C scanner reads it, over a latin-1 copy of the whole buffer (about ten
    # times the instructions of the common case).
    depth = 0
    pos = j
    while True:
        e = buf.find(b"}", pos)
        if e < 0:
            break
        depth += buf.count(b"{", pos, e) - 1
        pos = e + 1
        if depth <= 0:
            try:
                return orjson.loads(buf[j:pos])
            except orjson.JSONDecodeError:
                break
    try:
        return _scan_value(buf.decode("latin-1"), j)[0]
    except (StopIteration, ValueError):
        return None


def key_hint(key: bytes) -> re.Pattern[bytes]:
    """A regex for `"<key>"` where an object value may follow, or the input ends too
    soon to tell; the compact `"<key>":null` does not match."""
    return re.compile(re.escape(b'"' + key + b'"') + rb"(?:[ \t\r\n]|:[ \t\r\n{]|:?\Z)")


def is_key_object(buf: bytes | bytearray, q: int, n: int, klen: int) -> bool:
    """After a `"<key>"` token (`klen` bytes, quotes included) ending at `q`: is it a
    key whose value is an object?

    True also when the bytes run out before that can be told (the caller then
    parses, which settles it). A backslash before the opening quote means the
    quote is escaped (or closes a string): not the key.
    """
    if q > klen and buf[q - klen - 1] == 92:
        return False
    if q + 1 < n and buf[q] == 58:  # compact `"key":` -- the common case
        c = buf[q + 1]
        if c == 123:  # {
            return True
        if c not in WS:
            return False  # null, a number, a string...
    elif q < n and buf[q] != 58 and buf[q] not in WS:
        return False  # a string value such as "type":"usage"
    m = AFTER_KEY.match(buf, q)
    e = m.end()  # type: ignore[union-attr]
    if e >= n:
        return True
    return m.group(1) is not None and buf[e] == 123  # type: ignore[union-attr]


def brace_end(buf: bytes, b: int, n: int, cap: int) -> int:
    """Offset after the `}` that balances the `{` at `b`, counting every brace; -1 if
    not within `cap` bytes or `n`.

    Braces inside strings are counted too; the caller confirms the result by
    parsing it (a JSON object is never a proper prefix of another, so a parse
    that succeeds proves the end is right).
    """
    depth = 0
    pos = b
    limit = b + cap + 1
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


class ObjectFinder:
    """Calls `on_object(dict)` for each `"<key>": {...}` in the bytes given to `find`.

    A subclass implements `on_object`. An object larger than `cap` bytes is
    dropped (no usage object is that big), and the bytes it spans are not
    searched again.
    """

    __slots__ = (
        "_before",
        "_cap",
        "_capmax",
        "_carry",
        "_cpos",
        "_depth",
        "_instr",
        "_key",
        "_last",
    )

    def __init__(self, key: bytes, cap: int = DEFAULT_CAP) -> None:
        self._key = b'"' + key + b'"'
        self._capmax = cap
        self._carry = b""  # end of the previous chunk that may begin `"key"...`
        self._before = -1  # the byte before the carry (a backslash: escaped quote)
        self._last = -1  # the last byte fed so far
        self._cap: bytearray | None = None  # an object spanning chunks
        self._cpos = 0
        self._depth = 0
        self._instr = False

    def on_object(self, obj: dict[str, Any]) -> None:
        """One object found (in stream order)."""
        raise NotImplementedError

    def find(self, data: bytes) -> None:
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

    def finish(self) -> None:
        """At EOF: an unfinished object is ignored."""
        self._cap = None
        self._carry = b""

    # -- internals ------------------------------------------------------------------

    def _scan(self, buf: bytes, before: int) -> None:
        """Search `buf` (`before`: the stream's byte just ahead of it, or -1)."""
        n = len(buf)
        key = self._key
        klen = len(key)
        capmax = self._capmax
        p = buf.find(key)
        while p >= 0:
            q = p + klen
            if q + 1 < n and buf[q] == 58 and buf[q + 1] == 123:  # compact `"key":{`
                if (buf[p - 1] if p else before) == 92:
                    p = buf.find(key, q)
                    continue
                b = q + 1
            else:
                if (buf[p - 1] if p else before) == 92 or not is_key_object(buf, q, n, klen):
                    p = buf.find(key, q)
                    continue
                b = AFTER_KEY.match(buf, q).end()  # type: ignore[union-attr]
                if b >= n:  # can't tell yet: carry from the token
                    if n - p <= 256 + klen:
                        self._carry = buf[p:]
                        self._before = buf[p - 1] if p else before
                    return
            # the end of a flat object is its first `}`; else count braces
            end = buf.find(b"}", b, b + capmax + 1)
            if end >= 0:
                end = end + 1 if buf.count(b"{", b, end) == 1 else brace_end(buf, b, n, capmax)
            if end >= 0 and end - b <= capmax and self._take(buf[b:end]):
                p = buf.find(key, end)
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
            p = buf.find(key)
        # a chunk ending inside `"key` carries those bytes over
        q = buf.rfind(b'"', n - klen + 1 if n > klen - 1 else 0)
        if q >= 0 and key.startswith(buf[q:]):
            self._carry = buf[q:]
            self._before = buf[q - 1] if q else before

    def _take(self, raw: bytes | bytearray) -> bool:
        """Parse a candidate object; False if it is not valid JSON."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if type(obj) is dict:
            self.on_object(obj)
        return True

    def _capture(self, chunk: bytes | memoryview) -> bytes:
        """Feed the object being captured; return the bytes that follow it.

        Returns b"" while the object is still open. An object that outgrows the
        cap is dropped, and the bytes it swallowed are not searched again.
        """
        cap = self._cap
        assert cap is not None
        room = self._capmax + 1 - len(cap)
        cap += chunk[:room]
        end = self._match(cap)
        if end >= 0:
            self._cap = None
            self._take(cap[:end])
            return bytes(cap[end:]) + bytes(chunk[room:])
        if len(cap) > self._capmax:
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
