"""Key material out of upstream error bodies before they reach a client or a log.

Providers echo credentials in errors ("Incorrect API key provided: sk-...",
a Bearer token, an `x-api-key` value). `redact` replaces every provider-key
shape it knows (OpenAI/Anthropic `sk-...`, also masked as `sk-abc***wxyz`;
Google `AIza...`; AWS access key ids; a `Bearer` token; the value after an
`api-key` / `x-api-key` / `x-goog-api-key` / `authorization` name) and any
literal secret passed in (the channel's own key) with `[redacted]`.
"""

from __future__ import annotations

import re

REDACTED = b"[redacted]"

_SHAPES = re.compile(
    rb"sk-[A-Za-z0-9_\-*]{4,}"
    rb"|AIza[0-9A-Za-z_\-]{20,}"
    rb"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    rb"|(?<=Bearer )[^\s\"',}]+"
    rb"|(?<=bearer )[^\s\"',}]+",
)
_NAMED = re.compile(
    rb"((?:x-api-key|x-goog-api-key|api-key|api_key|apikey|authorization)\\?\"?\s*[:=]\s*\\?\"?)"
    rb"(?!\[redacted\])[^\s\"'\\,}]+",
    re.IGNORECASE,
)


def redact(body: bytes, secrets: tuple[bytes, ...] = ()) -> bytes:
    """`body` with every key shape and every literal secret replaced."""
    for secret in secrets:
        if len(secret) >= 6:
            body = body.replace(secret, REDACTED)
    body = _SHAPES.sub(REDACTED, body)
    return _NAMED.sub(lambda m: m.group(1) + REDACTED, body)
