"""Error taxonomy of the gateway.

Each `FastgateError` subclass carries the HTTP status, the OpenAI-style code and
type of SPEC section 3, and renders itself in the ingress protocol's error shape
(OpenAI, Anthropic or Gemini). Boundaries translate foreign exceptions with
`raise ... from exc`; the data plane never lets one escape into the event loop.
"""

from __future__ import annotations

import orjson

# Anthropic's error types and Google's status names for each of our statuses.
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FastgateError(Exception):
    """An error the gateway itself answers with; subclasses fix status/code/type."""

    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(self, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers

    def body(self, ingress: str = "openai") -> bytes:
        """The error body in the ingress protocol's shape."""
        if ingress == "anthropic":
            return orjson.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": _ANTHROPIC_TYPE.get(self.status, "api_error"),
                        "message": self.message,
                    },
                }
            )
        if ingress == "gemini":
            return orjson.dumps(
                {
                    "error": {
                        "code": self.status,
                        "message": self.message,
                        "status": _GOOGLE_STATUS.get(self.status, "UNKNOWN"),
                    }
                }
            )
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "code": self.code}}
        )


class InvalidRequest(FastgateError):
    status, code, type = 400, "invalid_request", "invalid_request_error"


class InvalidToken(FastgateError):
    status, code, type = 401, "invalid_token", "invalid_request_error"


class TokenExpired(FastgateError):
    status, code, type = 401, "token_expired", "invalid_request_error"


class InsufficientQuota(FastgateError):
    status, code, type = 402, "insufficient_quota", "insufficient_quota_error"


class PermissionDenied(FastgateError):
    status, code, type = 403, "permission_denied", "permission_error"


class ModelNotFound(FastgateError):
    status, code, type = 404, "model_not_found", "not_found_error"


class NotFound(FastgateError):
    status, code, type = 404, "not_found", "not_found_error"


class MethodNotAllowed(FastgateError):
    status, code, type = 405, "method_not_allowed", "invalid_request_error"


class RequestTimeout(FastgateError):
    status, code, type = 408, "request_timeout", "invalid_request_error"


class RequestTooLarge(FastgateError):
    status, code, type = 413, "request_too_large", "invalid_request_error"


class HeadersTooLarge(FastgateError):
    status, code, type = 431, "headers_too_large", "invalid_request_error"


class RateLimited(FastgateError):
    status, code, type = 429, "rate_limit_exceeded", "rate_limit_error"


class UpstreamError(FastgateError):
    status, code, type = 502, "upstream_error", "server_error"


class ServiceUnavailable(FastgateError):
    status, code, type = 503, "service_unavailable", "server_error"


class UpstreamTimeout(FastgateError):
    status, code, type = 504, "upstream_timeout", "server_error"
