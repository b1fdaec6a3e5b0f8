"""The request head as the parser callbacks leave it, and what the gateway keeps.

Header handling happens once, in the parser callback: the headers the gateway
itself reads are stored in slots; the rest are pre-encoded for the upstream,
minus the ones that must never travel (hop-by-hop, the client's credentials,
framing the gateway redoes).
"""

from __future__ import annotations

# Request headers the gateway reads; their slot name on RequestHead.
SPECIAL = {
    b"authorization": "authorization",
    b"x-api-key": "x_api_key",
    b"x-goog-api-key": "goog_api_key",
    b"x-request-id": "request_id",
    b"x-fastgate-tag": "tag",
    b"x-fastgate-cache": "cache",
    b"expect": "expect",
    b"content-length": "content_length",
    b"content-type": "content_type",
}

# Never forwarded upstream.
DROP_UPSTREAM = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"accept-encoding",  # upstream answers identity so usage can be read
        b"cookie",
        b"openai-organization",  # belong to the provider key, not the client's
        b"openai-project",
        b"api-key",
        b"x-fastgate-key",
    }
)


class RequestHead:
    """One request: the parts of its head the gateway needs, then its body."""

    __slots__ = (
        "authorization",
        "body",
        "cache",
        "content_length",
        "content_type",
        "expect",
        "forward",
        "goog_api_key",
        "http11",
        "keep_alive",
        "method",
        "path",
        "query",
        "request_id",
        "t0",
        "tag",
        "x_api_key",
    )

    def __init__(self) -> None:
        self.authorization = b""
        self.x_api_key = b""
        self.goog_api_key = b""
        self.request_id = b""
        self.tag = b""
        self.cache = b""
        self.expect = b""
        self.content_length = b""
        self.content_type = b""
        self.forward: list[bytes] = []
        self.method = b""
        self.path = b""
        self.query = b""
        self.body = b""
        self.keep_alive = True
        self.http11 = True
        self.t0 = 0.0
