"""The bytes of an upstream request, for every case but OpenAI -> OpenAI passthrough
(which the exchange builds inline with `providers.openai.request_bytes`); an OpenAI
call that names no model is `passthrough.request_head`'s.

Same-protocol passthrough keeps the client's forwarded headers (less
anthropic-version, which an Anthropic channel sets itself); a converted
request carries only the channel's headers and what the conversion adds.
"""

from __future__ import annotations

from typing import Any

from fastgate.gateway import passthrough, protocols


def other_request(ex: Any, ch: Any) -> bytes:
    """Upstream request bytes for `ex`'s current attempt on channel `ch`."""
    head = ex.ctx.head
    if ex.ctx.ingress.kind == passthrough.PASSTHROUGH:
        return passthrough.request_head(ex, ch)
    if not ex.attempts.convert:
        target, body = protocols.passthrough_request(ex, ch)
        forward = head.forward
        dropped = ch.kind.dropped_client_headers  # e.g. anthropic-version: the channel's
        if dropped:
            forward = [
                b"".join(forward[i : i + 4])
                for i in range(0, len(forward), 4)
                if forward[i].lower() not in dropped
            ]
        extra: list[bytes] = []
    else:
        target, body, extra = protocols.converted_request(ex, ch)
        forward = []
    return b"".join(
        (
            b"POST ",
            ch.path_prefix,
            target,
            b" HTTP/1.1\r\n",
            ch.static_headers,
            b"content-type: application/json\r\n",
            *forward,
            *extra,
            b"content-length: %d\r\n\r\n" % len(body),
            body,
        )
    )
