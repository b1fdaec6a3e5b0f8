"""The transport layer's two seams, as typing Protocols.

The transport knows nothing of LLMs: an `UpstreamProtocol` hands parsed
response events to its current `UpstreamConsumer`, and a `ClientProtocol`
tells its active `ClientExchange` about flow control and the client leaving.
An exchange answers through the `ClientSink` it was given. The gateway's
exchanges (fast and general) implement these; nothing here is checked at run
time (they are for readers and type checkers).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastgate.http.flow import ReadGate


class UpstreamConsumer(Protocol):
    """What an upstream connection calls on the exchange it is serving."""

    def up_headers(self, conn: Any, status: int) -> None:
        """A response head was parsed (`conn` holds forwardable headers, framing)."""

    def up_body(self, data: bytes) -> None:
        """Response body bytes (unframed)."""

    def up_flush(self) -> None:
        """The end of one read: write what is ready to the client."""

    def up_complete(self, conn: Any) -> None:
        """The response ended cleanly; the connection may be reused."""

    def up_error(self, conn: Any, kind: str, exc: BaseException | None) -> None:
        """The connection failed (`kind`: one of `upstream`'s failure kinds)."""

    def upstream_paused(self) -> None:
        """The upstream's write buffer is full: stop reading the client."""

    def upstream_resumed(self) -> None:
        """The upstream's write buffer drained."""


class ClientExchange(Protocol):
    """What a client connection calls on its active exchange."""

    force_close: bool  # set when a pipelined request went bad: close after this one

    def client_paused(self) -> None:
        """The client's write buffer is full: stop reading the upstream."""

    def client_resumed(self) -> None:
        """The client's write buffer drained."""

    def client_lost(self) -> None:
        """The client went away (EOF or connection lost)."""


class ClientSink(Protocol):
    """What an exchange calls on its client connection."""

    exchange: ClientExchange | None
    gate: ReadGate | None
    client_ip: str

    def write(self, data: bytes) -> None:
        """Bytes for the client (dropped once the connection is closed)."""

    def finish(self, keep_alive: bool) -> None:
        """The response is complete; serve the next request or close (nothing, once
        the connection is closed)."""
