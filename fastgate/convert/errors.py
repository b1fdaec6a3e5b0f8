"""Conversion failures and error bodies in each wire protocol.

Two exception types separate blame: `ConversionError` is the client's request asking
for something the channel's protocol cannot express (-> HTTP 400, message shown to the
client); `UpstreamProtocolError` is the upstream sending bytes that break its own
protocol (-> 502, or an error event once the stream has started).

The renderers below build error bodies and stream error events for OpenAI, Anthropic
and Gemini, and `convert_error_body` translates an upstream's error body into the
ingress protocol's shape so a client always sees errors its SDK understands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

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


# --- status and type vocabularies -------------------------------------------------

_ANTHROPIC_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
        "conflict_error",
    }
)
# OpenAI / gateway type names -> Anthropic type names (SPEC section 3 table).
_OPENAI_TO_ANTHROPIC_TYPE = {
    "server_error": "api_error",
    "insufficient_quota_error": "billing_error",
    "insufficient_quota": "billing_error",
    "invalid_request": "invalid_request_error",
    "upstream_error": "api_error",
    "upstream_timeout": "timeout_error",
    "service_unavailable": "overloaded_error",
}
_OPENAI_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TO_OPENAI_TYPE = {
    "authentication_error": "invalid_request_error",
    "billing_error": "insufficient_quota_error",
    "request_too_large": "invalid_request_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
    "timeout_error": "server_error",
    "conflict_error": "invalid_request_error",
}
_GEMINI_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",
}
_GEMINI_STATUS_TO_CODE = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "DATA_LOSS": 500,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# Any type name (OpenAI, Anthropic, gateway) -> HTTP status, for rendering a Gemini
# error when only a type is known (stream error events).
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "invalid_request": 400,
    "authentication_error": 401,
    "invalid_token": 401,
    "billing_error": 402,
    "insufficient_quota_error": 402,
    "insufficient_quota": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "upstream_timeout": 504,
    "api_error": 500,
    "server_error": 500,
    "upstream_error": 502,
    "overloaded_error": 503,
    "service_unavailable": 503,
}


def anthropic_error_type(type_: str | None = None, status: int | None = None) -> str:
    """Anthropic's name for an error given an HTTP status and/or any protocol's type name.

    The status decides when it is known (OpenAI's `invalid_request_error` covers 401 too,
    where Anthropic says `authentication_error`); the type name decides otherwise.
    """
    if status is not None and status in _ANTHROPIC_BY_STATUS:
        return _ANTHROPIC_BY_STATUS[status]
    if type_ in _ANTHROPIC_TYPES:
        return type_  # type: ignore[return-value]
    if type_ in _OPENAI_TO_ANTHROPIC_TYPE:
        return _OPENAI_TO_ANTHROPIC_TYPE[type_]  # type: ignore[index]
    if status is None and type_ is not None:
        status = _STATUS_BY_TYPE.get(type_)
        if status in _ANTHROPIC_BY_STATUS:
            return _ANTHROPIC_BY_STATUS[status]
    if status is not None:
        return "api_error" if status >= 500 else "invalid_request_error"
    return "api_error"


def openai_error_type(type_: str | None = None, status: int | None = None) -> str:
    """OpenAI's `error.type` given any protocol's type name or an HTTP status."""
    if type_ in _ANTHROPIC_TO_OPENAI_TYPE:
        return _ANTHROPIC_TO_OPENAI_TYPE[type_]  # type: ignore[index]
    if type_:
        return type_
    if status is not None:
        if status in _OPENAI_BY_STATUS:
            return _OPENAI_BY_STATUS[status]
        return "server_error" if status >= 500 else "invalid_request_error"
    return "server_error"


def gemini_status(status: int) -> str:
    """Google's canonical status name for an HTTP status."""
    if status in _GEMINI_BY_STATUS:
        return _GEMINI_BY_STATUS[status]
    return "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"


def _status_for_type(type_: str | None, default: int = 500) -> int:
    if type_ is None:
        return default
    if type_ in _STATUS_BY_TYPE:
        return _STATUS_BY_TYPE[type_]
    if type_ in _GEMINI_STATUS_TO_CODE:
        return _GEMINI_STATUS_TO_CODE[type_]
    return default


# --- bodies -----------------------------------------------------------------------


def openai_error_body(
    message: str, type_: str = "server_error", code: str | None = None, param: str | None = None
) -> bytes:
    """`{"error":{"message","type","param","code"}}` as OpenAI sends it."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def anthropic_error_body(message: str, type_: str = "api_error") -> bytes:
    """`{"type":"error","error":{"type","message"}}` with an Anthropic type name."""
    return orjson.dumps(
        {"type": "error", "error": {"type": anthropic_error_type(type_), "message": message}}
    )


def gemini_error_body(message: str, code: int = 500, status: str | None = None) -> bytes:
    """`{"error":{"code","message","status"}}` with Google's status names."""
    return orjson.dumps(
        {"error": {"code": code, "message": message, "status": status or gemini_status(code)}}
    )


def error_body(
    protocol: str, status: int, message: str, type_: str | None = None, code: str | None = None
) -> bytes:
    """A gateway or converted error in `protocol` ("openai" | "anthropic" | "gemini")."""
    if protocol == "anthropic":
        return anthropic_error_body(message, anthropic_error_type(type_, status))
    if protocol == "gemini":
        return gemini_error_body(message, status, gemini_status(status))
    return openai_error_body(message, openai_error_type(type_, status), code)


# --- stream error events ------------------------------------------------------------


def openai_error_event(message: str, type_: str = "server_error", code: str | None = None) -> bytes:
    """An OpenAI stream error: a `data:` line the SDK raises on."""
    return b"data: " + openai_error_body(message, openai_error_type(type_), code) + b"\n\n"


def anthropic_error_event(message: str, type_: str = "api_error") -> bytes:
    """Anthropic's `event: error` stream event."""
    return b"event: error\ndata: " + anthropic_error_body(message, type_) + b"\n\n"


def gemini_error_event(message: str, type_: str = "server_error") -> bytes:
    """A Gemini stream error: `data: {"error":{...}}` (google-genai raises APIError on it)."""
    code = _status_for_type(type_)
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
        g_status = info.type if info.type in _GEMINI_STATUS_TO_CODE else gemini_status(status)
        return gemini_error_body(info.message, status, g_status)
    type_ = info.type
    if type_ in _GEMINI_STATUS_TO_CODE or type_ is None:
        type_ = openai_error_type(None, status)
    else:
        type_ = openai_error_type(type_, status)
    return openai_error_body(info.message, type_, info.code)
