"""Call budget: how many Python-level calls one proxied request costs.

A deterministic stand-in for a CPU benchmark (which a unit test must not be):
under `sys.setprofile`, count the Python function calls ("call" events; C
functions such as transport.write or orjson.loads are not counted) made while
one request goes through a real App, ClientProtocol and UpstreamProtocol wired
to fake transports. A new helper on the fast path shows up here as a failing
budget; raise the budget only with a reason in the commit message.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import fastgate

# Only fastgate's own frames count: the fake transports below stand in for C code.
PACKAGE = os.path.dirname(fastgate.__file__)
KEY = "fg-budget-000000000000000000000000000000000000000"
FAST_BUDGET = 40  # one non-stream request on the fast path
GENERAL_BUDGET = 150  # the same request through the general exchange (token with a quota)

CONFIG = f"""
[[channels]]
name = "up"
type = "openai"
base_url = "http://upstream.test:9"
api_key = "sk-up"
models = ["m1"]

[[tokens]]
name = "fast"
key = "{KEY}"

[[tokens]]
name = "general"
key = "{KEY}x"
quota_usd = 100
"""

REQUEST_BODY = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
RESPONSE_BODY = (
    b'{"id":"c1","object":"chat.completion","model":"m1","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nx-request-id: up-1\r\n\r\n%b" % (len(RESPONSE_BODY), RESPONSE_BODY)
)


def request(key: str) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %b\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (key.encode(), len(REQUEST_BODY), REQUEST_BODY)
    )


def one_request(client, cl_tr, conn, up_tr, key: str) -> int:
    """Proxy one request; return the number of Python-level calls it made."""
    calls = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            calls += 1

    cl_tr.written.clear()
    up_tr.written.clear()
    data = request(key)
    sys.setprofile(prof)
    try:
        client.data_received(data)
        conn.data_received(RESPONSE)
    finally:
        sys.setprofile(None)
    return calls


def check_response(cl_tr, up_tr) -> None:
    assert len(up_tr.written) == 1  # the whole upstream request in one write
    sent = up_tr.written[0]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"authorization: Bearer sk-up\r\n" in sent
    assert sent.endswith(REQUEST_BODY)
    assert len(cl_tr.written) == 1  # the whole response in one write
    out = cl_tr.written[0]
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(RESPONSE_BODY)


def test_fast_path_call_budget(wired):
    _app, client, cl_tr, conn, up_tr, sink = wired
    one_request(client, cl_tr, conn, up_tr, KEY)  # warm-up: breaker and caches exist
    calls = one_request(client, cl_tr, conn, up_tr, KEY)
    check_response(cl_tr, up_tr)
    rec = sink.records[-1]
    assert (rec[12], rec[13]) == (9, 2)  # prompt, completion tokens from the tail
    print(f"fast path: {calls} Python-level calls")
    assert calls <= FAST_BUDGET, f"fast path made {calls} calls (budget {FAST_BUDGET})"


def test_general_path_call_budget(wired):
    _app, client, cl_tr, conn, up_tr, sink = wired
    one_request(client, cl_tr, conn, up_tr, KEY + "x")
    calls = one_request(client, cl_tr, conn, up_tr, KEY + "x")
    check_response(cl_tr, up_tr)
    rec = sink.records[-1]
    assert (rec[12], rec[13]) == (9, 2)
    print(f"general path: {calls} Python-level calls")
    assert calls <= GENERAL_BUDGET, f"general path made {calls} calls (budget {GENERAL_BUDGET})"
