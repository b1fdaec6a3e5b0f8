"""A request body forwarded upstream as it arrives (multipart uploads), never held whole.

The client protocol makes an `Upload` when a request head announces a body it
must not collect (`multipart/*`: files, audio, image edits; those bodies can be
far larger than `max_body_bytes`) and dispatches the request at once. Each body
piece the parser hands over goes to `feed`:

- before an upstream connection is attached, the piece is held and the
  client's reading is paused (`flow.UPLOAD`): at most one read is ever held;
- once `attach` is called (the request head is on the upstream connection),
  the held pieces and every later one are written to the upstream as they come,
  framed as the client framed them (its content-length kept, or chunked again).
  The upstream's write buffer pauses the client's reading through the exchange
  (`upstream_paused`), so a slow upstream slows the client: backpressure both
  ways, no buffer that grows.

`discard` is for an exchange that ended before the body did: the rest is read
and dropped (the client protocol then closes the connection). The exchange is
not in the data path at all: the body goes from the client's transport to the
upstream's.
"""

from __future__ import annotations

from typing import Any

from fastgate.http.flow import UPLOAD, ReadGate

_LAST_CHUNK = b"0\r\n\r\n"


class Upload:
    __slots__ = ("chunked", "conn", "dispatched", "done", "ended", "gate", "pending", "received")

    def __init__(self, gate: ReadGate, chunked: bool) -> None:
        self.gate = gate
        self.chunked = chunked  # the client sent it chunked: so does the gateway
        self.conn: Any = None  # the upstream connection, once the head is sent
        self.pending: list[bytes] = []
        self.received = 0  # body bytes read from the client so far
        self.ended = False  # the client's body is complete
        self.done = False  # the exchange is over: drop what still comes
        self.dispatched = False  # handed to an exchange (not waiting behind another)

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def feed(self, data: bytes) -> None:
        """A piece of the body from the client's parser."""
        self.received += len(data)
        conn = self.conn
        if conn is not None:
            if not conn.closed:
                conn.write_body(self._frame(data))
            return
        if self.done:
            return
        self.pending.append(data)
        self.gate.pause(UPLOAD)

    def end(self) -> None:
        """The client's body is complete."""
        self.ended = True
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.end_body(_LAST_CHUNK if self.chunked else b"")

    def attach(self, conn: Any) -> None:
        """The request head was written on `conn`: the body follows it there."""
        if self.done:
            return
        self.conn = conn
        conn.body_open = True
        pending = self.pending
        if pending:
            self.pending = []
            conn.write_body(b"".join([self._frame(p) for p in pending]))
        if self.ended:
            conn.end_body(_LAST_CHUNK if self.chunked else b"")
        self.gate.resume(UPLOAD)

    def discard(self) -> None:
        """The exchange ended before the body did: forget the upstream, drop the rest."""
        self.done = True
        self.conn = None
        self.pending = []
        self.gate.resume(UPLOAD)
