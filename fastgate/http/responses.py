"""Pre-encoded pieces of HTTP/1.1 responses: status lines, framing, simple bodies."""

from __future__ import annotations

from http import HTTPStatus

STATUS_LINE: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
STATUS_LINE[499] = b"HTTP/1.1 499 Client Closed Request\r\n"

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_END = b"0\r\n\r\n"
CRLF = b"\r\n"


def status_line(status: int) -> bytes:
    """The status line for any code, known or not."""
    line = STATUS_LINE.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    request_id: bytes = b"",
    keep_alive: bool = True,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    raw: bytes = b"",
) -> bytes:
    """A complete response with a body, as one bytes object (one write)."""
    parts = [status_line(status), b"content-type: ", content_type, b"\r\ncontent-length: "]
    parts.append(b"%d\r\n" % len(body))
    if request_id:
        parts += (b"x-request-id: ", request_id, CRLF)
    for name, value in extra:
        parts += (name, b": ", value, CRLF)
    if raw:  # header lines already encoded ("name: value\r\n"...)
        parts.append(raw)
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (CRLF, body)
    return b"".join(parts)
