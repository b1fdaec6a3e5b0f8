"""The error table: one row per HTTP status, naming the error in every protocol.

`ERRORS[status]` gives the OpenAI-style `code` and `type` of docs/contract.md section 3, the
Anthropic error `type` and Google's status name. The gateway's own errors
(`fastgate.errors`) and upstream errors converted to another protocol
(`fastgate.convert.errors`) both read this table, so a 402 is the same error
whichever way it was made. Also here: the mappings between the protocols' type
names, and the three error body shapes.

Anthropic types are Anthropic's own, by the status Anthropic documents for each
(docs/contract.md section 3 names the types of 400/401/403/404/429/5xx; for the statuses it
does not name, Anthropic's documented types are used: 402 `billing_error`, 413
`request_too_large`, 504 `timeout_error`, 529 `overloaded_error`). A 408 (the
client was too slow) is `timeout_error` / `DEADLINE_EXCEEDED`. A 402 has two
codes: `insufficient_quota` (the key's quota) and `budget_exceeded` (its
period's budget), both `insufficient_quota_error` / `billing_error` /
`RESOURCE_EXHAUSTED`. A status with no
row is classed by its range: 5xx as `server_error` / `api_error` / `INTERNAL`,
others as `invalid_request_error` / `INVALID_ARGUMENT`.

This module imports nothing of fastgate (layer 1, the vocabulary).
"""

from __future__ import annotations

from typing import NamedTuple

import orjson


class ErrorKind(NamedTuple):
    code: str  # OpenAI-style `error.code` (docs/contract.md section 3)
    type: str  # OpenAI-style `error.type`
    anthropic: str  # Anthropic `error.type`
    gemini: str  # Google status name


ERRORS: dict[int, ErrorKind] = {
    400: ErrorKind("invalid_request", "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    401: ErrorKind("invalid_token", "invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
    402: ErrorKind("insufficient_quota", "insufficient_quota_error", "billing_error", "RESOURCE_EXHAUSTED"),
    403: ErrorKind("permission_denied", "permission_error", "permission_error", "PERMISSION_DENIED"),
    404: ErrorKind("not_found", "not_found_error", "not_found_error", "NOT_FOUND"),
    405: ErrorKind("method_not_allowed", "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    408: ErrorKind("request_timeout", "invalid_request_error", "timeout_error", "DEADLINE_EXCEEDED"),
    409: ErrorKind("conflict", "invalid_request_error", "conflict_error", "ABORTED"),
    413: ErrorKind("request_too_large", "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    429: ErrorKind("rate_limit_exceeded", "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    431: ErrorKind("headers_too_large", "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    499: ErrorKind("cancelled", "invalid_request_error", "invalid_request_error", "CANCELLED"),
    500: ErrorKind("internal_error", "server_error", "api_error", "INTERNAL"),
    501: ErrorKind("not_implemented", "server_error", "api_error", "UNIMPLEMENTED"),
    502: ErrorKind("upstream_error", "server_error", "api_error", "UNAVAILABLE"),
    503: ErrorKind("service_unavailable", "server_error", "overloaded_error", "UNAVAILABLE"),
    504: ErrorKind("upstream_timeout", "server_error", "timeout_error", "DEADLINE_EXCEEDED"),
    529: ErrorKind("overloaded", "server_error", "overloaded_error", "UNAVAILABLE"),
}  # fmt: skip
_SERVER = ErrorKind("internal_error", "server_error", "api_error", "INTERNAL")
_CLIENT = ErrorKind("invalid_request", "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT")  # fmt: skip


def error_kind(status: int) -> ErrorKind:
    """The table's row for `status` (a range default for a status with no row)."""
    kind = ERRORS.get(status)
    if kind is not None:
        return kind
    return _SERVER if status >= 500 else _CLIENT


# --- type names between protocols -----------------------------------------------------

ANTHROPIC_TYPES = frozenset(k.anthropic for k in ERRORS.values())
# OpenAI / gateway type and code names -> Anthropic type names.
_OPENAI_TO_ANTHROPIC_TYPE = {
    "server_error": "api_error",
    "insufficient_quota_error": "billing_error",
    "insufficient_quota": "billing_error",
    "budget_exceeded": "billing_error",
    "invalid_request": "invalid_request_error",
    "upstream_error": "api_error",
    "upstream_timeout": "timeout_error",
    "service_unavailable": "overloaded_error",
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
GEMINI_STATUS_TO_CODE = {
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
# Any type or code name (OpenAI, Anthropic, gateway) -> HTTP status, for when only
# a type is known (stream error events).
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "invalid_request": 400,
    "authentication_error": 401,
    "invalid_token": 401,
    "billing_error": 402,
    "insufficient_quota_error": 402,
    "insufficient_quota": 402,
    "budget_exceeded": 402,
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

    The status decides when it has a row (OpenAI's `invalid_request_error` covers 401
    too, where Anthropic says `authentication_error`); the type name decides otherwise.
    """
    if status is not None and status in ERRORS:
        return ERRORS[status].anthropic
    if type_ in ANTHROPIC_TYPES:
        return type_  # type: ignore[return-value]
    if type_ in _OPENAI_TO_ANTHROPIC_TYPE:
        return _OPENAI_TO_ANTHROPIC_TYPE[type_]  # type: ignore[index]
    if status is None and type_ is not None:
        status = _STATUS_BY_TYPE.get(type_)
        if status is None:
            return "api_error"
    if status is not None:
        return error_kind(status).anthropic
    return "api_error"


def openai_error_type(type_: str | None = None, status: int | None = None) -> str:
    """OpenAI's `error.type` given any protocol's type name or an HTTP status."""
    if type_ in _ANTHROPIC_TO_OPENAI_TYPE:
        return _ANTHROPIC_TO_OPENAI_TYPE[type_]  # type: ignore[index]
    if type_:
        return type_
    if status is not None:
        return error_kind(status).type
    return "server_error"


def gemini_status(status: int) -> str:
    """Google's canonical status name for an HTTP status."""
    return error_kind(status).gemini


def status_for_type(type_: str | None, default: int = 500) -> int:
    """The HTTP status that a type name (any protocol's, or a Google status) stands for."""
    if type_ is None:
        return default
    if type_ in _STATUS_BY_TYPE:
        return _STATUS_BY_TYPE[type_]
    if type_ in GEMINI_STATUS_TO_CODE:
        return GEMINI_STATUS_TO_CODE[type_]
    return default


# --- bodies ---------------------------------------------------------------------------


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
    """An error body in `protocol`'s shape ("openai" | "anthropic" | "gemini")."""
    if protocol == "anthropic":
        return anthropic_error_body(message, anthropic_error_type(type_, status))
    if protocol == "gemini":
        return gemini_error_body(message, status, gemini_status(status))
    return openai_error_body(message, openai_error_type(type_, status), code)
