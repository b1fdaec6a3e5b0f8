"""What an upstream's rate-limit headers say about when its channel can be used.

The transport collects the headers below (`http/upstream.py`, kind DOWN_LIMIT)
and flags a response whose "remaining" header is 0. The gateway then asks
`cooldown_seconds` how long the channel must be skipped:

- on a 429: `retry-after-ms`, else `retry-after` (seconds, or an HTTP date),
  else the reset of whatever is exhausted, else nothing (the next request may
  try the channel again);
- on any other response with a remaining budget of 0: the reset of that
  budget. OpenAI: `x-ratelimit-remaining-{requests,tokens}` with
  `x-ratelimit-reset-{requests,tokens}` as durations (`1s`, `6m0s`, `20ms`,
  `1h2m3.5s`; a bare number is seconds). Anthropic:
  `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
  with the matching `-reset` as an RFC 3339 time.
The longest wait wins; every wait is capped at MAX_COOLDOWN.
"""

from __future__ import annotations

import datetime as dt
import re

MAX_COOLDOWN = 3600.0

_DURATION = re.compile(rb"(\d+(?:\.\d*)?)(ms|us|\xc2\xb5s|ns|h|m|s)")
_UNIT = {
    b"h": 3600.0,
    b"m": 60.0,
    b"s": 1.0,
    b"ms": 0.001,
    b"us": 1e-6,
    b"ns": 1e-9,
}  # "\xc2\xb5s": 1e-6 by default


def parse_duration(value: bytes) -> float | None:
    """Go-style duration ("6m0s", "20ms", "1.5s") or bare seconds; None if neither."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT.get(m.group(2), 1e-6)
        pos = m.end()
    return total if pos == len(value) and pos else None


def parse_time(value: bytes, now: float) -> float | None:
    """Seconds from `now` (unix) until an RFC 3339 or HTTP-date time."""
    text = value.decode("latin-1").strip()
    when: dt.datetime | None = None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        # An HTTP-date (rare: upstreams send seconds): its parser pulls in the email
        # package, which a worker otherwise never loads.
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp() - now


def _reset_name(remaining: bytes) -> bytes:
    if remaining.startswith(b"x-ratelimit-remaining-"):
        return b"x-ratelimit-reset-" + remaining[len(b"x-ratelimit-remaining-") :]
    return remaining[: -len(b"remaining")] + b"reset"  # anthropic-ratelimit-*-remaining


def exhausted_wait(headers: list[tuple[bytes, bytes]], now: float) -> float:
    """Seconds until every exhausted budget named in `headers` resets (0: none is)."""
    values = dict(headers)
    wait = 0.0
    for name, value in headers:
        if not name.endswith(b"remaining") and b"-remaining-" not in name:
            continue
        if value.strip() != b"0":
            continue
        reset = values.get(_reset_name(name))
        if reset is None:
            continue
        if name.startswith(b"anthropic-"):
            seconds = parse_time(reset, now)
        else:
            seconds = parse_duration(reset)
        if seconds is not None and seconds > wait:
            wait = seconds
    return min(wait, MAX_COOLDOWN)


def cooldown_seconds(
    status: int, retry_after: bytes, headers: list[tuple[bytes, bytes]] | None, now: float
) -> float:
    """How long to skip the channel after this response (0: do not)."""
    wait = 0.0
    if status == 429:
        values = dict(headers or ())
        ms = values.get(b"retry-after-ms")
        if ms is not None:
            try:
                wait = float(ms) / 1000
            except ValueError:
                wait = 0.0
        elif retry_after:
            seconds = parse_duration(retry_after)
            if seconds is None:
                seconds = parse_time(retry_after, now)
            wait = seconds or 0.0
    if headers and wait <= 0:
        wait = exhausted_wait(headers, now)
    return min(max(wait, 0.0), MAX_COOLDOWN)
