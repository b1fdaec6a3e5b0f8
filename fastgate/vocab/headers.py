"""Header names the gateway manages: hop-by-hop, credentials, framing it redoes.

A proxy must not forward hop-by-hop headers (RFC 9110 section 7.6.1), must not pass
a client's gateway key to a provider nor a provider's account headers to a
client, and redoes framing itself. The request side (`fastgate.http.head`) and
the response side (`fastgate.http.upstream`) read these sets; they live here
once so that the two directions cannot drift apart.

This module imports nothing of fastgate (layer 1, the vocabulary).
"""

from __future__ import annotations

# Hop-by-hop headers: meaningful for one connection only, never forwarded.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request headers the gateway reads; their slot name on RequestHead.
REQUEST_SLOTS: dict[bytes, str] = {
    b"authorization": "authorization",
    b"x-api-key": "x_api_key",
    b"x-goog-api-key": "goog_api_key",
    b"x-request-id": "request_id",
    b"x-fastgate-tag": "tag",
    b"x-fastgate-cache": "cache",
    b"x-fastgate-channel": "channel",
    b"expect": "expect",
    b"content-length": "content_length",
    b"content-type": "content_type",
}

# Request headers never forwarded upstream (besides the slots above, which the
# gateway rebuilds or drops itself).
DROP_UPSTREAM: frozenset[bytes] = HOP_BY_HOP | {
    b"host",
    b"proxy-authorization",
    b"accept-encoding",  # upstream answers identity so usage can be read
    b"cookie",
    b"openai-organization",  # belong to the provider key, not the client's
    b"openai-project",
    b"api-key",
    b"x-fastgate-key",
}

# Response headers handled specially on their way to the client, by kind.
DOWN_DROP = 1  # hop-by-hop, or redone by the gateway
DOWN_CONTENT_LENGTH = 2
DOWN_REQUEST_ID = 3  # the upstream's request id (sent on as x-upstream-request-id)
DOWN_CONTENT_TYPE = 4  # forwarded, and tells an SSE stream
DOWN_RETRY_AFTER = 5  # forwarded, and remembered on a 429
DOWN_TRANSFER_ENCODING = 6  # dropped; the response is framed
DOWN_LIMIT = 7  # forwarded, and kept: the upstream's rate-limit budget (gateway/upstream_limits.py)

# The upstream rate-limit headers the gateway reads (when a budget is exhausted).
UPSTREAM_LIMIT_HEADERS: frozenset[bytes] = frozenset(
    {
        b"retry-after-ms",
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-reset-tokens",
        *(
            b"anthropic-ratelimit-%s-%s" % (what, part)
            for what in (b"requests", b"tokens", b"input-tokens", b"output-tokens")
            for part in (b"remaining", b"reset")
        ),
    }
)

RESPONSE_KINDS: dict[bytes, int] = {
    **dict.fromkeys(HOP_BY_HOP - {b"transfer-encoding"}, DOWN_DROP),
    b"proxy-authenticate": DOWN_DROP,
    b"server": DOWN_DROP,
    b"openai-organization": DOWN_DROP,
    b"openai-project": DOWN_DROP,
    b"transfer-encoding": DOWN_TRANSFER_ENCODING,
    b"content-length": DOWN_CONTENT_LENGTH,
    b"x-request-id": DOWN_REQUEST_ID,
    b"request-id": DOWN_REQUEST_ID,
    b"content-type": DOWN_CONTENT_TYPE,
    b"retry-after": DOWN_RETRY_AFTER,
    **dict.fromkeys(UPSTREAM_LIMIT_HEADERS, DOWN_LIMIT),
}

# -- names as they arrive --------------------------------------------------------------
# A header name reaches the parser callbacks in whatever case its sender wrote it.
# What the gateway does with a name is remembered per spelling (`REQUEST_ROLES`,
# `RESPONSE_KIND_OF`), so that a name seen before costs one dict lookup and no
# lowercasing. Each memo holds at most `NAME_MEMO` spellings: the managed names in
# lower case and in the capitalisation servers and SDKs send go in first, other
# names as they are first seen; once full, a new spelling is classified each time.
NAME_MEMO = 2048
REQUEST_FORWARD = ""  # a request header passed on upstream as it came
REQUEST_DROP = "-"  # a request header never forwarded (DROP_UPSTREAM)
DOWN_FORWARD = 0  # a response header passed on to the client as it came

REQUEST_ROLES: dict[bytes, str] = {}
RESPONSE_KIND_OF: dict[bytes, int] = {}


def request_role(name: bytes) -> str:
    """What the request side does with header `name` (any case): the RequestHead
    slot it is read into, `REQUEST_DROP` or `REQUEST_FORWARD`; remembered."""
    lname = name.lower()
    role = REQUEST_SLOTS.get(lname)
    if role is None:
        role = REQUEST_DROP if lname in DROP_UPSTREAM else REQUEST_FORWARD
    if len(REQUEST_ROLES) < NAME_MEMO:
        REQUEST_ROLES[name] = role
    return role


def response_kind(name: bytes) -> int:
    """What the response side does with header `name` (any case): its kind in
    `RESPONSE_KINDS`, or `DOWN_FORWARD`; remembered."""
    kind = RESPONSE_KINDS.get(name.lower(), DOWN_FORWARD)
    if len(RESPONSE_KIND_OF) < NAME_MEMO:
        RESPONSE_KIND_OF[name] = kind
    return kind


def _spellings(name: bytes) -> tuple[bytes, bytes]:
    return name, b"-".join(part.capitalize() for part in name.split(b"-"))


for _name in (*REQUEST_SLOTS, *DROP_UPSTREAM):
    for _spelling in _spellings(_name):
        request_role(_spelling)
for _name in RESPONSE_KINDS:
    for _spelling in _spellings(_name):
        response_kind(_spelling)
del _name, _spelling
