"""Usage scanners for the Anthropic and Gemini passthrough paths.

On a passthrough the response bytes go to the client untouched; these only look
for the provider's usage object as the bytes pass. `ObjectScanner` finds every
`"<key>": {...}` object in a byte stream without holding the stream: a C-level
search for the key, then the object is closed by trying each `}` whose slice
has balanced braces (a usage object holds numbers and nested objects only; a
slice that does not parse is skipped). Only an unfinished object is carried
over to the next chunk, bounded by `cap`. Valid JSON never has the bytes
`"key":` inside a string (the inner quotes would be escaped), so a match is a key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from fastgate.convert.anthropic import usage_from_anthropic
from fastgate.convert.gemini import usage_from_gemini
from fastgate.gateway.usage import Usage

_WS = b" \t\r\n"


class ObjectScanner:
    """Calls `on_object(dict)` for each `"key": {...}` found in the fed bytes."""

    __slots__ = ("_cap", "_carry", "_keypat", "_on_object")

    def __init__(
        self, key: bytes, on_object: Callable[[dict[str, Any]], None], cap: int = 64 * 1024
    ) -> None:
        self._keypat = b'"' + key + b'"'
        self._on_object = on_object
        self._carry = b""
        self._cap = cap

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        self._carry = b""
        keypat = self._keypat
        klen = len(keypat)
        n = len(buf)
        pos = 0
        while True:
            i = buf.find(keypat, pos)
            if i < 0:
                # A key split across chunks: its start is the tail's last quote.
                q = buf.rfind(b'"', max(pos, n - klen + 1))
                if q >= 0 and keypat.startswith(buf[q:]):
                    self._carry = bytes(buf[q:])
                return
            j = i + klen
            while j < n and buf[j] in _WS:
                j += 1
            if j < n and buf[j] != 0x3A:  # not ':': the key was a value
                pos = j
                continue
            j += 1
            while j < n and buf[j] in _WS:
                j += 1
            if j >= n:
                self._keep(buf, i)
                return
            if buf[j] != 0x7B:  # '{': null or another value
                pos = j
                continue
            end = self._close(buf, j)
            if end < 0:
                self._keep(buf, i)
                return
            pos = end

    def _close(self, buf: bytes, start: int) -> int:
        """Parse the object at `start`; the offset after it, or -1 if incomplete."""
        e = buf.find(b"}", start)
        limit = start + self._cap
        while 0 <= e < limit:
            seg = buf[start : e + 1]
            if seg.count(b"{") == seg.count(b"}"):
                try:
                    obj = orjson.loads(seg)
                except orjson.JSONDecodeError:
                    pass
                else:
                    if type(obj) is dict:
                        self._on_object(obj)
                    return e + 1
            e = buf.find(b"}", e + 1)
        if e >= limit:
            return limit  # not a usage object anyone sends: skip past it
        return -1

    def _keep(self, buf: bytes, i: int) -> None:
        if len(buf) - i <= self._cap:
            self._carry = bytes(buf[i:])


class AnthropicUsage:
    """Anthropic messages, stream or not: merges `message_start` and
    `message_delta` usage (later non-null fields win), or the body's usage."""

    __slots__ = ("_merged", "_scanner", "usage")

    def __init__(self) -> None:
        self._merged: dict[str, Any] = {}
        self._scanner = ObjectScanner(b"usage", self._on_usage)
        self.usage = Usage()

    def _on_usage(self, obj: dict[str, Any]) -> None:
        merged = self._merged
        for k, v in obj.items():
            if v is not None:
                merged[k] = v
        self.usage = usage_from_anthropic(merged)

    def feed(self, data: bytes) -> bytes:
        self._scanner.feed(data)
        return data

    def close(self) -> bytes:
        return b""


class GeminiUsage:
    """Gemini generateContent, streamed (SSE or JSON array) or not: the last
    `usageMetadata` wins (each chunk carries the running totals)."""

    __slots__ = ("_scanner", "usage")

    def __init__(self) -> None:
        self._scanner = ObjectScanner(b"usageMetadata", self._on_usage)
        self.usage = Usage()

    def _on_usage(self, obj: dict[str, Any]) -> None:
        self.usage = usage_from_gemini(obj)

    def feed(self, data: bytes) -> bytes:
        self._scanner.feed(data)
        return data

    def close(self) -> bytes:
        return b""
