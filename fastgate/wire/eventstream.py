"""AWS event-stream binary framing (`application/vnd.amazon.eventstream`), sans-IO.

Bedrock's ConverseStream answers with this framing instead of SSE. Each message is

    prelude   total length (uint32 BE), headers length (uint32 BE),
              prelude CRC32 (of the 8 bytes before it)
    headers   repeated: name length (uint8), name (UTF-8), value type (uint8), value
    payload   total - headers - 16 bytes
    CRC32     of every byte of the message before it

Header value types: 0 true, 1 false, 2 byte (int8), 3 short (int16), 4 integer
(int32), 5 long (int64), 6 byte array (uint16 length + bytes), 7 string (uint16 length
+ UTF-8), 8 timestamp (int64 milliseconds since the epoch), 9 UUID (16 bytes).

The decoder checks the prelude CRC as soon as 12 bytes are in, so an absurd length is
refused before anything is buffered for it, and parses each message once it is whole;
it never rescans bytes. Any violation is the upstream's fault: `UpstreamProtocolError`.
The encoder exists for tests and fake upstreams.
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from fastgate.convert.errors import UpstreamProtocolError

__all__ = [
    "MAX_HEADERS_BYTES",
    "MAX_MESSAGE_BYTES",
    "EventStreamDecoder",
    "HeaderValue",
    "Message",
    "TypedHeader",
    "encode_message",
]

HeaderValue: TypeAlias = "bool | int | bytes | str | _dt.datetime | uuid.UUID"

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
MAX_HEADERS_BYTES: Final = 128 * 1024  # botocore's bound too
_PRELUDE: Final = 12
_OVERHEAD: Final = 16  # prelude + message CRC
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

_U32 = struct.Struct(">I")
_PRELUDE_STRUCT = struct.Struct(">III")
_INTS = {
    2: struct.Struct(">b"),
    3: struct.Struct(">h"),
    4: struct.Struct(">i"),
    5: struct.Struct(">q"),
}
_I64 = _INTS[5]
_U16 = struct.Struct(">H")


@dataclass(slots=True)
class Message:
    """One decoded message: headers by name, and the raw payload."""

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class TypedHeader:
    """A header value with an explicit wire type (byte, short, timestamp...) for encoding."""

    type: int
    value: HeaderValue


class EventStreamDecoder:
    """Incremental decoder: `feed(bytes) -> list[Message]`, `close()` at EOF."""

    __slots__ = ("_buf", "_max", "_need")

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_message_bytes
        self._need = 0  # total length of the message being received, 0 = prelude unread

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """The messages `data` completes, in order."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        while True:
            if not self._need:
                if end - pos < _PRELUDE:
                    break
                self._need = self._prelude(buf, pos)
            need = self._need
            if end - pos < need:
                break
            out.append(self._message(buf, pos, need))
            pos += need
            self._need = 0
        if pos:
            del buf[:pos]
        return out

    def close(self) -> None:
        """At EOF: raises if the stream stopped inside a message."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            self._need = 0
            raise UpstreamProtocolError(f"event stream ended inside a message ({n} bytes left)")

    # -- internals ---------------------------------------------------------------

    def _prelude(self, buf: bytearray, pos: int) -> int:
        total, hlen, crc = _PRELUDE_STRUCT.unpack_from(buf, pos)
        if zlib.crc32(buf[pos : pos + 8]) != crc:
            raise UpstreamProtocolError("event stream prelude CRC mismatch")
        if total < _OVERHEAD or total > self._max:
            raise UpstreamProtocolError(f"event stream message length {total} out of bounds")
        if hlen > MAX_HEADERS_BYTES or hlen > total - _OVERHEAD:
            raise UpstreamProtocolError(f"event stream headers length {hlen} out of bounds")
        return total

    def _message(self, buf: bytearray, pos: int, total: int) -> Message:
        body_end = pos + total - 4
        (crc,) = _U32.unpack_from(buf, body_end)
        (hlen,) = _U32.unpack_from(buf, pos + 4)
        hstart = pos + _PRELUDE
        # the view is released before the buffer is resized, even on error
        with memoryview(buf) as view:
            if zlib.crc32(view[pos:body_end]) != crc:
                raise UpstreamProtocolError("event stream message CRC mismatch")
            raw_headers = bytes(view[hstart : hstart + hlen])
            payload = bytes(view[hstart + hlen : body_end])
        return Message(_parse_headers(raw_headers), payload)


def _parse_headers(raw: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    i = 0
    n = len(raw)
    try:
        while i < n:
            nlen = raw[i]
            i += 1
            if nlen == 0 or i + nlen > n:
                raise UpstreamProtocolError("event stream header name out of bounds")
            name = raw[i : i + nlen].decode("utf-8")
            i += nlen
            kind = raw[i]
            i += 1
            value: HeaderValue
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind in _INTS:
                st = _INTS[kind]
                if i + st.size > n:
                    raise UpstreamProtocolError("event stream header value out of bounds")
                (value,) = st.unpack_from(raw, i)
                i += st.size
            elif kind in (6, 7):
                if i + 2 > n:
                    raise UpstreamProtocolError("event stream header value out of bounds")
                (vlen,) = _U16.unpack_from(raw, i)
                i += 2
                if i + vlen > n:
                    raise UpstreamProtocolError("event stream header value out of bounds")
                chunk = raw[i : i + vlen]
                value = chunk if kind == 6 else chunk.decode("utf-8")
                i += vlen
            elif kind == 8:
                if i + 8 > n:
                    raise UpstreamProtocolError("event stream header value out of bounds")
                (ms,) = _I64.unpack_from(raw, i)
                i += 8
                value = _EPOCH + _dt.timedelta(milliseconds=ms)
            elif kind == 9:
                if i + 16 > n:
                    raise UpstreamProtocolError("event stream header value out of bounds")
                value = uuid.UUID(bytes=raw[i : i + 16])
                i += 16
            else:
                raise UpstreamProtocolError(f"event stream header type {kind} is unknown")
            if name in headers:
                raise UpstreamProtocolError(f"event stream header {name!r} repeated")
            headers[name] = value
    except IndexError as exc:
        raise UpstreamProtocolError("event stream header truncated") from exc
    except (UnicodeDecodeError, OverflowError) as exc:
        raise UpstreamProtocolError("event stream header is malformed") from exc
    return headers


# -- encoder -------------------------------------------------------------------------


def _encode_value(value: HeaderValue | TypedHeader) -> bytes:
    if isinstance(value, TypedHeader):
        kind, v = value.type, value.value
        if kind in (0, 1):
            return bytes([kind])
        if kind in _INTS:
            return bytes([kind]) + _INTS[kind].pack(v)  # type: ignore[arg-type]
        if kind == 8:
            if isinstance(v, _dt.datetime):
                v = (v - _EPOCH) // _dt.timedelta(milliseconds=1)
            return b"\x08" + _I64.pack(v)  # type: ignore[arg-type]
        return _encode_value(v)
    if isinstance(value, bool):
        return b"\x00" if value else b"\x01"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"\x04" + _INTS[4].pack(value)
        return b"\x05" + _I64.pack(value)
    if isinstance(value, (bytes, bytearray)):
        return b"\x06" + _U16.pack(len(value)) + bytes(value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"\x07" + _U16.pack(len(raw)) + raw
    if isinstance(value, _dt.datetime):
        ms = (value - _EPOCH) // _dt.timedelta(milliseconds=1)
        return b"\x08" + _I64.pack(ms)
    if isinstance(value, uuid.UUID):
        return b"\x09" + value.bytes
    raise TypeError(f"cannot encode header value of type {type(value).__name__}")


def encode_message(headers: Mapping[str, HeaderValue | TypedHeader], payload: bytes = b"") -> bytes:
    """One framed message. Ints encode as int32 (int64 beyond), datetimes as timestamps."""
    hparts = []
    for name, value in headers.items():
        raw = name.encode("utf-8")
        if not 0 < len(raw) < 256:
            raise ValueError(f"header name {name!r} must be 1..255 bytes")
        hparts.append(bytes([len(raw)]) + raw + _encode_value(value))
    hbytes = b"".join(hparts)
    total = _OVERHEAD + len(hbytes) + len(payload)
    head = struct.pack(">II", total, len(hbytes))
    head += _U32.pack(zlib.crc32(head))
    body = head + hbytes + payload
    return body + _U32.pack(zlib.crc32(body))
