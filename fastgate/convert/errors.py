"""Conversion failures and error bodies in each wire protocol.

Two exception types separate blame: `ConversionError` is the client's request asking
for something the channel's protocol cannot express (-> HTTP 400, message shown to the
client); `UpstreamProtocolError` is the upstream sending bytes that break its own
protocol (-> 502, or an error event once the stream has started).

The stream error events below are built for OpenAI, Anthropic and Gemini from the
vocabulary's error table and body shapes (re-exported here), and
`convert_error_body` translates an upstream's error body into the ingress
protocol's shape so a client always sees errors its SDK understands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fastgate.vocab.errors import (
    GEMINI_STATUS_TO_CODE,
    anthropic_error_body,
    anthropic_error_type,
    error_body,
    gemini_error_body,
    gemini_status,
    openai_error_body,
    openai_error_type,
    status_for_type,
)

__all__ = [
    "ConversionError",
    "ErrorInfo",
    "UpstreamProtocolError",
    "anthropic_error_body",
    "anthropic_error_event",
    "anthropic_error_type",
    "convert_error_body",
    "error_body",
    "error_event",
    "gemini_error_body",
    "gemini_error_event",
    "gemini_status",
    "openai_error_body",
    "openai_error_event",
    "openai_error_type",
    "parse_error_body",
]


class ConversionError(ValueError):
    """The request uses a feature the target protocol cannot express (HTTP 400).

    The message is client-facing: it names the field and says what is unsupported.
    """


class UpstreamProtocolError(ValueError):
    """The upstream's bytes are not valid for its protocol (HTTP 502 / stream error)."""


# The status table, the type names between protocols and the three body shapes
# are the vocabulary's (`fastgate.vocab.errors`), shared with the gateway's own errors.

# --- stream error events ------------------------------------------------------------


def openai_error_event(message: str, type_: str = "server_error", code: str | None = None) -> bytes:
    """An OpenAI stream error: a `data:` line the SDK raises on."""
    return b"data: " + openai_error_body(message, openai_error_type(type_), code) + b"\n\n"


def anthropic_error_event(message: str, type_: str = "api_error") -> bytes:
    """Anthropic's `event: error` stream event."""
    return b"event: error\ndata: " + anthropic_error_body(message, type_) + b"\n\n"


def gemini_error_event(message: str, type_: str = "server_error") -> bytes:
    """A Gemini stream error: `data: {"error":{...}}` (google-genai raises APIError on it)."""
    code = status_for_type(type_)
    return b"data: " + gemini_error_body(message, code) + b"\r\n\r\n"


def error_event(protocol: str, message: str, type_: str = "server_error") -> bytes:
    """A stream error event in `protocol`'s stream format."""
    if protocol == "anthropic":
        return anthropic_error_event(message, type_)
    if protocol == "gemini":
        return gemini_error_event(message, type_)
    return openai_error_event(message, type_)


# --- parsing upstream errors --------------------------------------------------------


@dataclass(slots=True)
class ErrorInfo:
    """An upstream error reduced to what every protocol can express."""

    status: int
    message: str
    type: str | None = None  # the upstream's own type / status name
    code: str | None = None


def parse_error_body(body: bytes, status: int) -> ErrorInfo:
    """Read an error body from any of the three protocols (or plain text)."""
    try:
        obj: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return ErrorInfo(status, text[:2000] or f"upstream returned HTTP {status}")
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]  # Gemini sometimes wraps its error in a one-element list
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            message = err.get("message")
            if not isinstance(message, str):
                message = orjson.dumps(err).decode() if message is None else str(message)
            type_ = err.get("type") or err.get("status")
            code = err.get("code")
            return ErrorInfo(
                status,
                message,
                type_ if isinstance(type_, str) else None,
                code if isinstance(code, str) else None,
            )
        if isinstance(err, str):
            return ErrorInfo(status, err)
        if isinstance(obj.get("message"), str):
            return ErrorInfo(status, obj["message"])
    text = body.decode("utf-8", "replace").strip()
    return ErrorInfo(status, text[:2000] or f"upstream returned HTTP {status}")


def convert_error_body(body: bytes, status: int, to_protocol: str) -> bytes:
    """Translate an upstream error body into `to_protocol`'s error shape.

    The HTTP status stays the upstream's; the type is mapped through the status when
    the upstream's type name has no equivalent.
    """
    info = parse_error_body(body, status)
    if to_protocol == "anthropic":
        return anthropic_error_body(info.message, anthropic_error_type(info.type, status))
    if to_protocol == "gemini":
        g_status = info.type if info.type in GEMINI_STATUS_TO_CODE else gemini_status(status)
        return gemini_error_body(info.message, status, g_status)
    type_ = info.type
    if type_ in GEMINI_STATUS_TO_CODE or type_ is None:
        type_ = openai_error_type(None, status)
    else:
        type_ = openai_error_type(type_, status)
    return openai_error_body(info.message, type_, info.code)
