"""What a request asked for, settled once before the first attempt.

`RequestContext` holds the client's request and the decisions taken from it
(key, ingress protocol, parsed body, requested and resolved model, stream, the
include_usage edit). Nothing in it changes between attempts; what does
(channel, connection, upstream model) lives in `attempts.Attempts`.
"""

from __future__ import annotations

from typing import Any

from fastgate.gateway import protocols
from fastgate.http.head import RequestHead

OPENAI_INGRESS = protocols.Ingress(protocols.OPENAI, "")


class RequestContext:
    __slots__ = (
        "head",
        "hub",
        "include_usage",
        "ingress",
        "inject",
        "limited",
        "measure",
        "model",
        "obj",
        "pending",
        "rate_headers",
        "request_id",
        "requested",
        "router",
        "stream",
        "token",
    )

    def __init__(
        self,
        head: RequestHead,
        request_id: bytes,
        token: Any = None,
        obj: dict[str, Any] | None = None,
        requested: str = "",
        model: str = "",
        stream: bool = False,
        inject: bool = False,
        include_usage: bool = False,
        ingress: protocols.Ingress = OPENAI_INGRESS,
    ) -> None:
        self.head = head
        self.request_id = request_id
        self.token = token
        self.obj = obj  # the parsed JSON body
        self.requested = requested  # the model name the client sent
        self.model = model  # the gateway's model name (aliases resolved)
        self.stream = stream
        # The gateway asks an OpenAI upstream for include_usage on the client's
        # behalf (and strips the usage chunk); `include_usage`: the client asked.
        self.inject = inject
        self.include_usage = include_usage
        self.ingress = ingress
        self.hub: dict[str, Any] | None = None  # the request in OpenAI shape, when converting
        # The rate limits' ticket once admitted (None: not limited): `done` releases it.
        self.limited: Any = None
        # An admission step still to await (a Redis round trip of the shared limits).
        self.pending: Any = None
        self.rate_headers = b""  # x-ratelimit-* lines for the response
        self.router = ""  # the [[routers]] name when `model` is a router's
        self.measure = False  # the route's strategy is latency: time the response heads
