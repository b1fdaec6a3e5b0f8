"""A client that leaves after its stream's end event had the whole answer.

Current SDKs (openai 2.x/3.x) close the connection as soon as they read
`data: [DONE]`; when the upstream's final chunk arrives in a later read, the
gateway sees the client go before the response ended. That is a complete
response (status 200, billed), not a 499; a client that leaves before the end
event is still a 499. Both paths (fast and general) are checked.
"""

from __future__ import annotations

import orjson
import pytest

from tests.unit.inproc import Wired
from tests.unit.test_fast_path_differential import CONFIG, USAGE, chat_body, request

EVENTS = [
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "o"}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c1", "choices": [], "usage": USAGE},
]
BODY = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in EVENTS)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def run(general_only: bool, done_sent: bool) -> dict:
    w = Wired(CONFIG, general_only=general_only)
    try:
        w.send(request(chat_body("m1", stream=True)))
        proto, _tr = w.upstreams.popleft()
        proto.data_received(HEAD + chunk(BODY))
        w.tick()  # the loop's turn ends: queued writes leave
        if done_sent:
            proto.data_received(chunk(b"data: [DONE]\n\n"))  # the terminator not yet
            w.tick()  # the loop's turn ends: queued writes leave
        out = w.client_tr.data()
        assert (b"data: [DONE]" in out) is done_sent
        w.client.eof_received()
        w.client.connection_lost(None)
        w.run()
        (rec,) = w.sink.dicts()
        return rec
    finally:
        w.close()


@pytest.mark.parametrize("general_only", [False, True], ids=["fast", "general"])
def test_leaving_after_done_is_a_complete_response(general_only: bool) -> None:
    rec = run(general_only, done_sent=True)
    assert rec["status"] == 200 and rec["error_code"] == ""
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    assert rec["cost_micros"] == 22


@pytest.mark.parametrize("general_only", [False, True], ids=["fast", "general"])
def test_leaving_before_done_is_499(general_only: bool) -> None:
    rec = run(general_only, done_sent=False)
    assert rec["status"] == 499 and rec["error_code"] == "client_closed"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)  # still billed
