"""The request head as the parser callbacks leave it, and what the gateway keeps.

Header handling happens once, in the parser callback: the headers the gateway
itself reads are stored in slots; the rest are pre-encoded for the upstream,
minus the ones that must never travel (hop-by-hop, the client's credentials,
framing the gateway redoes).
"""

from __future__ import annotations

from typing import Any

# Which headers fill the slots below and which are never forwarded is the
# vocabulary's (`fastgate.vocab.headers`: REQUEST_SLOTS, DROP_UPSTREAM, read by
# the parser callback through its memo of spellings, `request_role`).

__all__ = ["RequestHead"]


class RequestHead:
    """One request: the parts of its head the gateway needs, then its body."""

    __slots__ = (
        "authorization",
        "body",
        "cache",
        "channel",
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
        "upload",
        "x_api_key",
    )

    def __init__(self) -> None:
        self.authorization = b""
        self.x_api_key = b""
        self.goog_api_key = b""
        self.request_id = b""
        self.tag = b""
        self.cache = b""
        self.channel = b""  # x-fastgate-channel: the channel a model-less call goes to
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
        self.upload: Any = None  # http.upload.Upload: a body streamed, not collected
