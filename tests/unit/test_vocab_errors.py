"""The error table (`fastgate.vocab.errors`): one naming per status, used by the
gateway's own errors and by converted upstream errors alike.

The two tables it replaces disagreed for Anthropic and Gemini on 402, 408, 504
and on statuses neither listed; these tests pin the decisions (module docstring
of fastgate.vocab.errors) and that both users agree.
"""

from __future__ import annotations

import orjson
import pytest

from fastgate import errors
from fastgate.convert import convert_error_body, error_body
from fastgate.vocab.errors import ERRORS, error_kind

# docs/contract.md section 3: status, code, type for the gateway's own errors
CONTRACT_TABLE = [
    (errors.InvalidRequest, 400, "invalid_request", "invalid_request_error"),
    (errors.InvalidToken, 401, "invalid_token", "invalid_request_error"),
    (errors.TokenExpired, 401, "token_expired", "invalid_request_error"),
    (errors.InsufficientQuota, 402, "insufficient_quota", "insufficient_quota_error"),
    (errors.PermissionDenied, 403, "permission_denied", "permission_error"),
    (errors.ModelNotFound, 404, "model_not_found", "not_found_error"),
    (errors.RequestTooLarge, 413, "request_too_large", "invalid_request_error"),
    (errors.HeadersTooLarge, 431, "headers_too_large", "invalid_request_error"),
    (errors.RateLimited, 429, "rate_limit_exceeded", "rate_limit_error"),
    (errors.UpstreamError, 502, "upstream_error", "server_error"),
    (errors.ServiceUnavailable, 503, "service_unavailable", "server_error"),
    (errors.UpstreamTimeout, 504, "upstream_timeout", "server_error"),
]


@pytest.mark.parametrize(("cls", "status", "code", "type_"), CONTRACT_TABLE)
def test_gateway_errors_follow_spec_section_3(cls, status, code, type_) -> None:
    assert (cls.status, cls.code, cls.type) == (status, code, type_)
    assert ERRORS[status].type == type_
    body = orjson.loads(cls("m").body("openai"))
    assert body == {"error": {"message": "m", "type": type_, "code": code}}


ALL_GATEWAY_ERRORS = [
    c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FastgateError)
]


@pytest.mark.parametrize("cls", ALL_GATEWAY_ERRORS, ids=lambda c: c.__name__)
def test_gateway_and_converted_errors_agree(cls) -> None:
    """A gateway error and an error_body of the same status name it the same way."""
    err = cls("m")
    for proto in ("anthropic", "gemini"):
        assert err.body(proto) == error_body(proto, err.status, "m", err.type), proto
    assert (
        orjson.loads(err.body("openai"))["error"]["type"]
        == orjson.loads(error_body("openai", err.status, "m"))["error"]["type"]
    )


@pytest.mark.parametrize(
    ("status", "anthropic", "gemini"),
    [
        # where the two old tables disagreed
        (402, "billing_error", "RESOURCE_EXHAUSTED"),  # was invalid_request_error for ours
        (408, "timeout_error", "DEADLINE_EXCEEDED"),  # converted: INVALID_ARGUMENT before
        (504, "timeout_error", "DEADLINE_EXCEEDED"),  # was api_error for ours
        (405, "invalid_request_error", "INVALID_ARGUMENT"),  # was api_error / UNKNOWN for ours
        # docs/contract.md section 3's own names
        (400, "invalid_request_error", "INVALID_ARGUMENT"),
        (401, "authentication_error", "UNAUTHENTICATED"),
        (403, "permission_error", "PERMISSION_DENIED"),
        (404, "not_found_error", "NOT_FOUND"),
        (413, "request_too_large", "INVALID_ARGUMENT"),
        (429, "rate_limit_error", "RESOURCE_EXHAUSTED"),
        (431, "invalid_request_error", "INVALID_ARGUMENT"),
        (500, "api_error", "INTERNAL"),
        (502, "api_error", "UNAVAILABLE"),
        (503, "overloaded_error", "UNAVAILABLE"),
        (529, "overloaded_error", "UNAVAILABLE"),
        # no row: classed by range
        (418, "invalid_request_error", "INVALID_ARGUMENT"),
        (599, "api_error", "INTERNAL"),
    ],
)
def test_status_names_per_protocol(status: int, anthropic: str, gemini: str) -> None:
    kind = error_kind(status)
    assert (kind.anthropic, kind.gemini) == (anthropic, gemini)
    a = orjson.loads(error_body("anthropic", status, "m"))
    assert a == {"type": "error", "error": {"type": anthropic, "message": "m"}}
    g = orjson.loads(error_body("gemini", status, "m"))
    assert g == {"error": {"code": status, "message": "m", "status": gemini}}
    # an upstream error of that status converted to each protocol names it the same way
    up = orjson.loads(convert_error_body(b'{"error":{"message":"m"}}', status, "anthropic"))
    assert up["error"]["type"] == anthropic
    up = orjson.loads(convert_error_body(b'{"error":{"message":"m"}}', status, "gemini"))
    assert up["error"]["status"] == gemini


def test_gateway_error_bodies_per_protocol() -> None:
    err = errors.InsufficientQuota("quota used up")
    assert orjson.loads(err.body("anthropic")) == {
        "type": "error",
        "error": {"type": "billing_error", "message": "quota used up"},
    }
    assert orjson.loads(errors.UpstreamTimeout("slow").body("gemini")) == {
        "error": {"code": 504, "message": "slow", "status": "DEADLINE_EXCEEDED"}
    }
