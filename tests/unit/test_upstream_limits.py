"""gateway/upstream_limits.py: durations, dates and which budget is exhausted."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import pytest

from fastgate.gateway.upstream_limits import (
    MAX_COOLDOWN,
    cooldown_seconds,
    exhausted_wait,
    parse_duration,
    parse_time,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (b"1s", 1.0),
        (b"6m0s", 360.0),
        (b"20ms", 0.02),
        (b"1h2m3.5s", 3723.5),
        (b"12", 12.0),
        (b"0.5", 0.5),
        (b"17ms", 0.017),
    ],
)
def test_durations_in_openai_and_go_form(text: bytes, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [b"", b"soon", b"5x", b"1s garbage"])
def test_what_is_not_a_duration(text: bytes) -> None:
    assert parse_duration(text) is None


def test_rfc3339_and_http_dates() -> None:
    when = dt.datetime.fromtimestamp(NOW + 42, dt.UTC)
    assert parse_time(when.strftime("%Y-%m-%dT%H:%M:%SZ").encode(), NOW) == pytest.approx(42)
    assert parse_time(when.isoformat().encode(), NOW) == pytest.approx(42)
    assert parse_time(format_datetime(when, usegmt=True).encode(), NOW) == pytest.approx(42)
    assert parse_time(b"not a date", NOW) is None


def test_openai_budget_at_zero_waits_for_its_own_reset() -> None:
    headers = [
        (b"x-ratelimit-remaining-requests", b"0"),
        (b"x-ratelimit-reset-requests", b"6m0s"),
        (b"x-ratelimit-remaining-tokens", b"1000"),
        (b"x-ratelimit-reset-tokens", b"20ms"),
    ]
    assert exhausted_wait(headers, NOW) == 360.0
    headers[0] = (b"x-ratelimit-remaining-requests", b"5")
    assert exhausted_wait(headers, NOW) == 0.0


def test_anthropic_budget_at_zero_waits_until_the_rfc3339_reset() -> None:
    reset = dt.datetime.fromtimestamp(NOW + 30, dt.UTC).isoformat().encode()
    headers = [
        (b"anthropic-ratelimit-input-tokens-remaining", b"0"),
        (b"anthropic-ratelimit-input-tokens-reset", reset),
        (b"anthropic-ratelimit-requests-remaining", b"10"),
        (b"anthropic-ratelimit-requests-reset", reset),
    ]
    assert exhausted_wait(headers, NOW) == pytest.approx(30)


def test_a_429_prefers_retry_after_ms_then_retry_after_then_the_resets() -> None:
    date = format_datetime(dt.datetime.fromtimestamp(NOW + 90, dt.UTC), usegmt=True).encode()
    assert cooldown_seconds(429, b"7", [(b"retry-after-ms", b"1500")], NOW) == 1.5
    assert cooldown_seconds(429, b"7", None, NOW) == 7.0
    assert cooldown_seconds(429, date, None, NOW) == pytest.approx(90)
    resets = [(b"x-ratelimit-remaining-tokens", b"0"), (b"x-ratelimit-reset-tokens", b"3s")]
    assert cooldown_seconds(429, b"", resets, NOW) == 3.0
    assert cooldown_seconds(429, b"", None, NOW) == 0.0
    assert cooldown_seconds(200, b"", resets, NOW) == 3.0
    assert cooldown_seconds(429, b"999999", None, NOW) == MAX_COOLDOWN
    assert cooldown_seconds(429, b"-5", None, NOW) == 0.0
