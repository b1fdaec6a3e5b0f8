"""The states of a general exchange and the one table of legal moves between them.

Modelled on h11's `_state.py`: a request's life is a handful of named states
and every change goes through `Machine._to`, which checks the move against
`LEGAL`. What used to be spread over ten flags (done, sent, ...) is one value
that can be logged and asserted. An illegal move raises `IllegalTransition`;
the exchange's callbacks catch it (like any bug), log it and answer 500 or cut
the connection: in a data plane a bug ends one request, never the loop.

    ROUTING ----> CONNECTING ----> SENT ----> RECEIVING ----> STREAMING
                    ^   ^            |  |        |                |
                    |   +------------+  |        |                |
                    |  (stale retry)    v        v                |
                    +-------------- FAILED_OVER <+                |
    (every state but DONE) ------------------------------------> DONE

ROUTING: auth and route, no upstream yet. CONNECTING: waiting for a pooled or
new connection. SENT: the request is written, no response head yet.
RECEIVING: a response head was accepted, no byte has reached the client.
STREAMING: bytes reached the client, no failover any more. FAILED_OVER: an
attempt failed before any byte reached the client; the next one is chosen.
DONE: the request is answered and accounted for (terminal).
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    ROUTING = "routing"
    CONNECTING = "connecting"
    SENT = "sent"
    RECEIVING = "receiving"
    STREAMING = "streaming"
    FAILED_OVER = "failed_over"
    DONE = "done"

    # Enum hashes a member by its name in Python (a frame a hash); members are
    # singletons compared by identity, so the object's own C-level hash serves
    # (`Machine._to` looks two of them up per transition).
    __hash__ = object.__hash__


# Module-level names: identity checks on hot paths without an enum attribute lookup.
ROUTING = State.ROUTING
CONNECTING = State.CONNECTING
SENT = State.SENT
RECEIVING = State.RECEIVING
STREAMING = State.STREAMING
FAILED_OVER = State.FAILED_OVER
DONE = State.DONE

LEGAL: dict[State, frozenset[State]] = {
    # A candidate was picked; or answered locally (error, ops endpoint, count_tokens).
    ROUTING: frozenset({CONNECTING, DONE}),
    # The request was written; the connection failed; the client left.
    CONNECTING: frozenset({SENT, FAILED_OVER, DONE}),
    # A head was accepted; 429/5xx or an error before it; a stale kept-alive
    # connection retried once on a fresh one; the client left.
    SENT: frozenset({RECEIVING, FAILED_OVER, CONNECTING, DONE}),
    # First bytes flushed; the upstream failed before any byte reached the client;
    # the response ended within one read (or was written whole after conversion).
    RECEIVING: frozenset({STREAMING, FAILED_OVER, DONE}),
    STREAMING: frozenset({DONE}),
    # The next candidate; or no candidate left (give up).
    FAILED_OVER: frozenset({CONNECTING, DONE}),
    DONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the exchange."""

    def __init__(self, old: State, new: State) -> None:
        super().__init__(f"illegal exchange transition {old.name} -> {new.name}")
        self.old = old
        self.new = new


class Machine:
    """The state and the one function that changes it."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = ROUTING

    def _to(self, new: State) -> None:
        """Move to `new`, or raise `IllegalTransition` (the state is left as it was)."""
        if new not in LEGAL[self.state]:
            raise IllegalTransition(self.state, new)
        self.state = new
