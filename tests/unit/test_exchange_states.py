"""The general exchange's state machine: the table of legal moves, and what an
illegal move does to a live request (a logged 500, never an exception into the
transport)."""

from __future__ import annotations

import itertools

import pytest

from fastgate.gateway import states
from fastgate.gateway.handler import Exchange
from fastgate.gateway.states import LEGAL, IllegalTransition, Machine, State
from tests.unit.inproc import Wired

LEGAL_MOVES = [(a, b) for a in State for b in sorted(LEGAL[a], key=lambda s: s.value)]
ILLEGAL_MOVES = [(a, b) for a, b in itertools.product(State, State) if b not in LEGAL[a]]


def machine_in(state: State) -> Machine:
    m = Machine()
    m.state = state
    return m


def test_table_covers_every_state() -> None:
    assert set(LEGAL) == set(State)
    for targets in LEGAL.values():
        assert targets <= set(State)


def test_the_documented_moves() -> None:
    assert {(a.name, b.name) for a, b in LEGAL_MOVES} == {
        ("ROUTING", "CONNECTING"),
        ("ROUTING", "DONE"),
        ("CONNECTING", "SENT"),
        ("CONNECTING", "FAILED_OVER"),
        ("CONNECTING", "DONE"),
        ("SENT", "RECEIVING"),
        ("SENT", "FAILED_OVER"),
        ("SENT", "CONNECTING"),
        ("SENT", "DONE"),
        ("RECEIVING", "STREAMING"),
        ("RECEIVING", "FAILED_OVER"),
        ("RECEIVING", "DONE"),
        ("STREAMING", "DONE"),
        ("FAILED_OVER", "CONNECTING"),
        ("FAILED_OVER", "DONE"),
    }


def test_starts_routing() -> None:
    assert Machine().state is State.ROUTING


@pytest.mark.parametrize(("old", "new"), LEGAL_MOVES, ids=lambda s: s.name)
def test_legal_move(old: State, new: State) -> None:
    m = machine_in(old)
    m._to(new)
    assert m.state is new


@pytest.mark.parametrize(("old", "new"), ILLEGAL_MOVES, ids=lambda s: s.name)
def test_illegal_move_raises_and_keeps_the_state(old: State, new: State) -> None:
    m = machine_in(old)
    with pytest.raises(IllegalTransition) as info:
        m._to(new)
    assert m.state is old
    assert (info.value.old, info.value.new) == (old, new)
    assert old.name in str(info.value) and new.name in str(info.value)


def test_done_is_terminal_and_reachable_from_every_other_state() -> None:
    # An exchange's crash handler relies on it: any live state can end.
    assert LEGAL[State.DONE] == frozenset()
    for s in State:
        if s is not State.DONE:
            assert State.DONE in LEGAL[s]


def test_no_byte_reached_the_client_before_streaming() -> None:
    # Failover is possible only from states where nothing was sent.
    assert State.FAILED_OVER not in LEGAL[State.STREAMING]
    assert {s for s in State if State.FAILED_OVER in LEGAL[s]} == {
        State.CONNECTING,
        State.SENT,
        State.RECEIVING,
    }


def test_module_names_are_the_enum_members() -> None:
    for s in State:
        assert getattr(states, s.name) is s


# -- an illegal move in a live request -------------------------------------------------

KEY = "fg-states-00000000000000000000000000000000000000"
CONFIG = f"""
[[channels]]
name = "up"
type = "openai"
base_url = "http://upstream.test:9"
api_key = "sk-up"
models = ["m1"]

[[tokens]]
name = "k"
key = "{KEY}"
"""
BODY = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %b\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
    % (KEY.encode(), len(BODY), BODY)
)
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def test_illegal_move_in_a_callback_answers_500(caplog: pytest.LogCaptureFixture) -> None:
    w = Wired(CONFIG, general_only=True)
    try:
        w.send(REQUEST)
        ex = w.client.exchange
        assert type(ex) is Exchange and ex.state is State.SENT
        ex.state = State.FAILED_OVER  # a bug: the head arrives in a state that forbids it
        proto, up_tr = w.upstreams[0]
        proto.data_received(RESPONSE)  # must not raise into the transport
        w.tick()  # the loop's turn ends: queued writes leave
        assert ex.state is State.DONE
        out = w.client_tr.data()
        assert out.startswith(b"HTTP/1.1 500 ")
        assert b"connection: close" in out
        assert up_tr.closed  # the upstream request is abandoned
        assert w.sink.dicts()[-1]["status"] == 500
        assert "illegal exchange transition FAILED_OVER -> RECEIVING" in caplog.text
    finally:
        w.close()


def test_general_request_walks_the_states() -> None:
    w = Wired(CONFIG, general_only=True)
    seen: list[State] = []
    real = Machine._to

    def spy(self: Machine, new: State) -> None:
        real(self, new)
        seen.append(new)

    try:
        Machine._to = spy  # type: ignore[method-assign]
        w.send(REQUEST)
        proto, _ = w.upstreams[0]
        proto.data_received(RESPONSE)
        w.tick()  # the loop's turn ends: queued writes leave
    finally:
        Machine._to = real  # type: ignore[method-assign]
        w.close()
    assert seen == [State.CONNECTING, State.SENT, State.RECEIVING, State.DONE]
    assert w.client_tr.data().startswith(b"HTTP/1.1 200 OK\r\n")
