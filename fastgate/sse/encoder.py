"""SSE encoding: the bytes of one server-sent event, built without a template engine.

The converters emit one event per upstream event, so these helpers are on the hot
path: the JSON payloads come from orjson (never containing a newline), and the common
case is a single concatenation. `encode_event` is the general form for payloads that
may span lines.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "DONE",
    "encode_data",
    "encode_event",
    "encode_json",
    "encode_named_json",
]

DONE = b"data: [DONE]\n\n"


def encode_data(payload: bytes, sep: bytes = b"\n\n") -> bytes:
    """`data: <payload>` for a payload known to hold no line break (orjson output)."""
    return b"data: " + payload + sep


def encode_json(obj: Any, sep: bytes = b"\n\n") -> bytes:
    """An unnamed event carrying `obj` as JSON (OpenAI and Gemini streams)."""
    return b"data: " + orjson.dumps(obj) + sep


def encode_named_json(event: bytes, obj: Any) -> bytes:
    """`event: <name>` + JSON data (Anthropic streams); `event` is pre-encoded."""
    return b"event: " + event + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def encode_event(data: bytes | str, event: str | None = None, id: str | None = None) -> bytes:
    """General SSE event: one `data:` line per line of `data` (SSE forbids raw newlines)."""
    if isinstance(data, str):
        data = data.encode()
    parts: list[bytes] = []
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if id is not None:
        parts.append(b"id: " + id.encode() + b"\n")
    for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)
