"""The parts of a general exchange, and the flat attribute names others read.

`ExchangeParts` holds the state (`states.Machine`) and the four parts of an
exchange: `ctx` (context.RequestContext), `attempts` (attempts.Attempts),
`writer` (writer.ResponseWriter) and `transform` (transform.Transform, from the
first accepted response head), plus `cache` (cache.Capture, for a request
the response cache takes; None otherwise). The properties below keep the attribute names
that `gateway/protocols.py` (request/response conversion), the mock provider,
`fast.dispatch` (`order`) and the client protocol (`force_close`) use on an
exchange; the exchange itself reads its parts directly.
"""

from __future__ import annotations

from typing import Any

from fastgate.gateway import protocols
from fastgate.gateway.attempts import Attempts
from fastgate.gateway.context import RequestContext
from fastgate.gateway.states import DONE, Machine
from fastgate.gateway.transform import Transform
from fastgate.gateway.writer import ResponseWriter
from fastgate.http.head import RequestHead


class ExchangeParts(Machine):
    __slots__ = ("app", "attempts", "cache", "client", "ctx", "transform", "writer")

    app: Any
    client: Any
    ctx: RequestContext
    attempts: Attempts
    writer: ResponseWriter
    transform: Transform | None
    cache: Any  # gateway.cache.Capture of a cacheable request, else None

    @property
    def head(self) -> RequestHead:
        return self.ctx.head

    @property
    def request_id(self) -> bytes:
        return self.ctx.request_id

    @property
    def token(self) -> Any:
        return self.ctx.token

    @property
    def ingress(self) -> protocols.Ingress:
        return self.ctx.ingress

    @property
    def obj(self) -> dict[str, Any] | None:
        return self.ctx.obj

    @property
    def requested(self) -> str:
        return self.ctx.requested

    @property
    def model(self) -> str:
        """The current attempt's model (a router's member), else the request's."""
        return self.attempts.model or self.ctx.model

    @property
    def stream(self) -> bool:
        return self.ctx.stream

    @property
    def inject(self) -> bool:
        return self.ctx.inject

    @property
    def client_include_usage(self) -> bool:
        return self.ctx.include_usage

    @property
    def hub(self) -> dict[str, Any] | None:
        return self.ctx.hub

    @hub.setter
    def hub(self, value: dict[str, Any] | None) -> None:
        self.ctx.hub = value

    @property
    def upstream_model(self) -> str:
        return self.attempts.upstream_model

    @property
    def conn(self) -> Any:
        return self.attempts.conn

    @conn.setter
    def conn(self, value: Any) -> None:
        self.attempts.conn = value

    @property
    def force_close(self) -> bool:
        return self.writer.force_close

    @force_close.setter
    def force_close(self, value: bool) -> None:
        self.writer.force_close = value

    @property
    def order(self) -> list[Any] | None:
        return self.attempts.order

    @order.setter
    def order(self, value: list[Any] | None) -> None:
        # fast.dispatch: the route's turn was taken, the general path uses it
        self.attempts.order = value

    @property
    def done(self) -> bool:
        return self.state is DONE
