"""SSE encoder: the bytes of one event, as the SSE spec and the provider SDKs read them."""

from __future__ import annotations

from fastgate.sse.encoder import DONE, encode_data, encode_event, encode_json, encode_named_json


def test_unnamed_json_event():
    assert encode_json({"a": "x y", "n": 1}) == b'data: {"a":"x y","n":1}\n\n'
    assert encode_json({"a": 1}, sep=b"\r\n\r\n") == b'data: {"a":1}\r\n\r\n'
    assert encode_data(b"[DONE]") == DONE == b"data: [DONE]\n\n"


def test_named_json_event():
    assert encode_named_json(b"message_stop", {"type": "message_stop"}) == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_general_event_splits_lines_and_keeps_fields():
    assert encode_event("line1\nline2\r\nline3\rline4", event="note", id="7") == (
        b"event: note\nid: 7\ndata: line1\ndata: line2\ndata: line3\ndata: line4\n\n"
    )
    assert encode_event(b"") == b"data: \n\n"


def test_encoded_events_decode_back():
    from fastgate.sse.decoder import SSEDecoder

    payload = "a\nb"
    raw = encode_event(payload, event="x") + encode_json({"k": "v"}) + DONE
    events = SSEDecoder().feed(raw)
    assert [(e.event, e.data) for e in events] == [
        ("x", b"a\nb"),
        (None, b'{"k":"v"}'),
        (None, b"[DONE]"),
    ]
