"""Error taxonomy of the gateway.

Each `FastgateError` subclass carries the HTTP status, the OpenAI-style code and
type of docs/contract.md section 3, and renders itself in the ingress protocol's error shape
(OpenAI, Anthropic or Gemini). The names per protocol come from the one error
table, `fastgate.vocab.errors`, which converted upstream errors use too.
Boundaries translate foreign exceptions with `raise ... from exc`; the data plane
never lets one escape into the event loop.
"""

from __future__ import annotations

import orjson

from fastgate.vocab.errors import ERRORS, anthropic_error_body, error_kind, gemini_error_body


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
            return anthropic_error_body(self.message, error_kind(self.status).anthropic)
        if ingress == "gemini":
            return gemini_error_body(self.message, self.status, error_kind(self.status).gemini)
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "code": self.code}}
        )


class InvalidRequest(FastgateError):
    status, code, type = 400, *ERRORS[400][:2]


class InvalidToken(FastgateError):
    status, code, type = 401, *ERRORS[401][:2]


class TokenExpired(FastgateError):
    status, code, type = 401, "token_expired", ERRORS[401].type


class InsufficientQuota(FastgateError):
    status, code, type = 402, *ERRORS[402][:2]


class BudgetExceeded(FastgateError):
    """The key's (or its group's) spend this budget period reached its budget."""

    status, code, type = 402, "budget_exceeded", ERRORS[402].type


class PermissionDenied(FastgateError):
    status, code, type = 403, *ERRORS[403][:2]


class ModelNotFound(FastgateError):
    status, code, type = 404, "model_not_found", ERRORS[404].type


class NotFound(FastgateError):
    status, code, type = 404, *ERRORS[404][:2]


class MethodNotAllowed(FastgateError):
    status, code, type = 405, *ERRORS[405][:2]


class RequestTimeout(FastgateError):
    status, code, type = 408, *ERRORS[408][:2]


class RequestTooLarge(FastgateError):
    status, code, type = 413, *ERRORS[413][:2]


class HeadersTooLarge(FastgateError):
    status, code, type = 431, *ERRORS[431][:2]


class RateLimited(FastgateError):
    status, code, type = 429, *ERRORS[429][:2]


class UpstreamError(FastgateError):
    status, code, type = 502, *ERRORS[502][:2]


class ServiceUnavailable(FastgateError):
    status, code, type = 503, *ERRORS[503][:2]


class UpstreamTimeout(FastgateError):
    status, code, type = 504, *ERRORS[504][:2]


class SharedStateUnavailable(Exception):
    """The fleet's shared state (Redis) cannot be used now. Not an answer to a
    client: the caller applies `[ratelimit] on_redis_error` ("open": serve on
    local state; "closed": ServiceUnavailable)."""
