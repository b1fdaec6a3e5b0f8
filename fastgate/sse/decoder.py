"""Incremental Server-Sent Events decoder (sans-IO).

Every streamed response of every request goes through here, so the decoder is
built around C-speed searches: it looks for the blank line that ends an event
with `bytes.find` over the bytes it has not seen yet (plus a carry of at most
three bytes), keeps one pending buffer for the event still being received, and
splits an event into fields only once it is complete.

Line endings follow the SSE spec: LF, CRLF or a lone CR, mixed freely. A stream
that has shown no CR at all (the usual case) takes a path that searches for
b"\\n\\n" only. A blank line made of a CR at the very end of the input cannot be
told apart from the first half of a CRLF until the next byte arrives, so such an
event waits for that byte (or for `close()`); this keeps `raw` identical however
the input is split.

The module-level helpers (`next_event_end`, `last_event_end`, `parse_event`) are
shared with the usage scanners, which track event boundaries without building an
event object per chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SSEDecoder",
    "SSEError",
    "SSEEvent",
    "last_event_end",
    "next_event_end",
    "parse_event",
    "skip_blank_lines",
]

_LF = 10
_CR = 13
_BOM = b"\xef\xbb\xbf"
_BLANKS = re.compile(rb"[\r\n]*")


class SSEError(ValueError):
    """The stream broke the decoder's bounds (an event larger than allowed)."""


@dataclass(slots=True)
class SSEEvent:
    event: str | None  # the `event:` field, None if absent
    data: bytes  # data lines joined with b"\n"
    id: str | None = None
    raw: bytes = b""  # the event's exact bytes, terminating blank line included


# -- boundary helpers -------------------------------------------------------------
#
# A blank line is a line terminator that starts right after another one. Since a
# terminator is LF, CRLF or CR (and CR followed by LF is always one CRLF), the
# byte pairs where a blank line begins are exactly b"\n\n", b"\n\r" and b"\r\r".
# The blank line's own terminator is the pair's second byte, plus a LF when that
# byte is a CR followed by LF. Callers pass `hi` = len - 1 when the input ends
# with a CR that may still be followed by a LF, so a pair found below `hi` always
# has its closing byte available.


def next_event_end(buf: bytes | bytearray, lo: int, hi: int, cr: bool) -> int:
    """End offset of the first blank-line terminator starting in [lo, hi), or -1.

    `cr` says whether the stream has shown any CR; without one only b"\\n\\n"
    is searched for.
    """
    i = buf.find(b"\n\n", lo, hi)
    if cr:
        h = hi if i < 0 else i + 1
        k = buf.find(b"\n\r", lo, h)
        if k >= 0:
            i = k
            h = k + 1
        k = buf.find(b"\r\r", lo, h)
        if k >= 0:
            i = k
        if i >= 0:
            end = i + 2
            if buf[i + 1] == _CR and end < len(buf) and buf[end] == _LF:
                end += 1
            return end
    return i + 2 if i >= 0 else -1


def last_event_end(buf: bytes | bytearray, lo: int, hi: int, cr: bool) -> int:
    """End offset of the last blank-line terminator starting in [lo, hi), or -1."""
    i = buf.rfind(b"\n\n", lo, hi)
    if cr:
        lo2 = lo if i < 0 else i + 1
        k = buf.rfind(b"\n\r", lo2, hi)
        if k >= 0:
            i = k
            lo2 = k + 1
        k = buf.rfind(b"\r\r", lo2, hi)
        if k >= 0:
            i = k
        if i >= 0:
            end = i + 2
            if buf[i + 1] == _CR and end < len(buf) and buf[end] == _LF:
                end += 1
            return end
    return i + 2 if i >= 0 else -1


def skip_blank_lines(buf: bytes | bytearray, pos: int) -> int:
    """First offset at or after `pos` that is not CR/LF (blank lines between events)."""
    if pos < len(buf) and (buf[pos] == _LF or buf[pos] == _CR):
        return _BLANKS.match(buf, pos).end()  # type: ignore[union-attr]
    return pos


def _fields(body: bytes) -> SSEEvent | None:
    """Build an event from LF-separated lines (no CR left); None if it carries nothing."""
    event: str | None = None
    ident: str | None = None
    parts: list[bytes] = []
    for line in body.split(b"\n"):
        if not line:
            continue
        c = line.find(b":")
        if c == 0:
            continue  # comment
        if c < 0:
            name, value = line, b""
        else:
            name = line[:c]
            value = line[c + 2 :] if line[c + 1 : c + 2] == b" " else line[c + 1 :]
        if name == b"data":
            parts.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            ident = value.decode("utf-8", "replace")
        # `retry` and unknown fields are ignored, as the spec says
    if not parts:
        if event is None:
            return None
        return SSEEvent(event, b"", ident)
    return SSEEvent(event, parts[0] if len(parts) == 1 else b"\n".join(parts), ident)


def _body_event(body: bytes) -> SSEEvent | None:
    """Event from a body whose line terminators may include CR."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if body.startswith(b"data:") and b"\n" not in body:
        return SSEEvent(None, body[6:] if body[5:6] == b" " else body[5:])
    return _fields(body)


def parse_event(raw: bytes | bytearray) -> SSEEvent | None:
    """Parse one event's bytes (terminator and leading blank lines allowed).

    Returns None for an event with neither data nor an event name. `raw` is not
    filled in: callers that need it hold the bytes already.
    """
    return _body_event(bytes(raw))


class SSEDecoder:
    """Incremental SSE parser: `feed(bytes) -> [SSEEvent]`, `close()` at EOF.

    Holds at most one incomplete event (bounded by `max_event_bytes`); each byte is
    searched for a terminator once, apart from a carry of up to three bytes.
    """

    __slots__ = ("_cr", "_failed", "_first", "_max", "_pend")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._max = max_event_bytes
        self._pend = bytearray()  # the incomplete event; starts on a non-blank byte
        self._cr = False  # any CR seen: switch from the b"\n\n"-only search
        self._first = True  # the first event may start with a UTF-8 BOM
        self._failed = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode what `data` completes; raises SSEError for an oversized event."""
        if self._failed:
            raise SSEError("decoder is unusable after an error")
        if not data:
            return []
        if not self._cr and b"\r" in data:
            self._cr = True
        pend = self._pend
        if pend:
            base = len(pend)
            pend += data
            return self._run(pend, base - 2 if base > 2 else 0, 0, False)
        if data[0] == _LF or data[0] == _CR:
            pos = _BLANKS.match(data).end()  # type: ignore[union-attr]
            return self._run(data, pos, pos, False)
        return self._run(data, 0, 0, False)

    def close(self) -> list[SSEEvent]:
        """Flush at EOF: an event that lacks its final blank line is still delivered."""
        if self._failed:
            raise SSEError("decoder is unusable after an error")
        pend = self._pend
        if not pend:
            return []
        events = self._run(pend, 0, 0, True)
        if pend:
            body = bytes(pend)
            raw = body
            if body.endswith(b"\r\n"):
                body = body[:-2]
            elif body.endswith((b"\n", b"\r")):
                body = body[:-1]
            self._pend = bytearray()
            ev = self._event(body)
            if ev is not None:
                ev.raw = raw
                events.append(ev)
        return events

    def _event(self, body: bytes) -> SSEEvent | None:
        if self._first:
            self._first = False
            if body.startswith(_BOM):
                body = body[3:]
        if self._cr:
            return _body_event(body)
        if body.startswith(b"data:") and b"\n" not in body:
            return SSEEvent(None, body[6:] if body[5:6] == b" " else body[5:])
        return _fields(body)

    def _run(self, buf: bytes | bytearray, scan: int, pos: int, final: bool) -> list[SSEEvent]:
        """Cut every complete event out of `buf` (searching from `scan`); keep the rest."""
        events: list[SSEEvent] = []
        n = len(buf)
        cr = self._cr
        hi = n - 1 if cr and not final and buf[n - 1] == _CR else n
        limit = self._max
        pend = buf if buf is self._pend else None
        while True:
            if cr:
                end = next_event_end(buf, scan, hi, True)
            else:
                end = buf.find(b"\n\n", scan)
                if end >= 0:
                    end += 2
            if end < 0:
                break
            if end - pos > limit:
                self._fail(end - pos)
            # i: the last byte of the last line's terminator (the blank line's
            # terminator follows it: one byte, or two for CRLF)
            i = end - 2
            if cr:
                if buf[end - 1] == _LF and buf[end - 2] == _CR:
                    i = end - 3
                if buf[i] == _LF and buf[i - 1] == _CR:
                    i -= 1  # the last line ended with CRLF
            body = bytes(buf[pos:i]) if pend is not None else buf[pos:i]
            ev = self._event(body)  # type: ignore[arg-type]
            if ev is not None:
                ev.raw = buf[pos:end] if pend is None else bytes(buf[pos:end])  # type: ignore[assignment]
                events.append(ev)
            pos = skip_blank_lines(buf, end)
            scan = pos
        if pend is not None:
            if pos:
                del pend[:pos]
        elif pos < n:
            self._pend = bytearray(memoryview(buf)[pos:])
        if len(self._pend) > limit:
            self._fail(len(self._pend))
        return events

    def _fail(self, size: int) -> None:
        self._failed = True
        self._pend = bytearray()
        raise SSEError(f"SSE event exceeds {self._max} bytes (at least {size})")
