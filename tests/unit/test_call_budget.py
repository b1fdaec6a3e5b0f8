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

import pytest

import fastgate
from fastgate.gateway.fast import FastExchange
from fastgate.gateway.handler import Exchange
from tests.unit.inproc import Wired

# Only fastgate's own frames count: the fake transports below stand in for C code.
PACKAGE = os.path.dirname(fastgate.__file__)
KEY = "fg-budget-000000000000000000000000000000000000000"
FAST_BUDGET = 40  # one non-stream request on the fast path
# The same with a key that has an expiry, an allow-list and a quota, which the fast
# path checks by admission's rules: `auth.expired`, `auth.model_allowed`,
# `admission.quota_refuses` and the `App.quota_left` it asks.
CHECKED_BUDGET = FAST_BUDGET + 4
GENERAL_BUDGET = 80  # the same request through the general exchange

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
name = "checked"
key = "{KEY}c"
quota_usd = 100
expires_at = "2099-01-01T00:00:00Z"
models = ["m1"]

[[tokens]]
name = "general"
key = "{KEY}x"
max_concurrency = 1000  # a concurrency cap always takes the general exchange
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


@pytest.fixture
def wired():
    w = Wired(CONFIG)
    yield w
    w.close()


def one_request(w: Wired, key: str, kind: type) -> int:
    """Proxy one request on a kept-alive upstream connection; count fastgate's calls."""
    calls = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            calls += 1

    w.client_tr.written.clear()
    data = request(key)
    pooled = w.app.pool.origins.get(("http", "upstream.test", 9))
    if pooled is None or not pooled.idle:  # first request: the pool opens a connection
        w.send(data)
        proto, up_tr = w.upstreams[0]
        proto.data_received(RESPONSE)
        w.tick()
        return -1
    proto, up_tr = w.upstreams[0]
    up_tr.written.clear()
    seen: list[Any] = []
    sys.setprofile(prof)
    try:
        w.client.data_received(data)
        seen.append(w.client.exchange)
        w.tick()  # the loop's turn ends: the queued request is written
        proto.data_received(RESPONSE)
        w.tick()
    finally:
        sys.setprofile(None)
    assert type(seen[0]) is kind
    assert len(up_tr.written) == 1  # the whole upstream request in one write
    sent = up_tr.written[0]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"authorization: Bearer sk-up\r\n" in sent
    assert sent.endswith(REQUEST_BODY)
    assert len(w.client_tr.written) == 1  # the whole response in one write
    out = w.client_tr.written[0]
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(RESPONSE_BODY)
    rec = w.sink.dicts()[-1]
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (9, 2)
    return calls


def test_fast_path_call_budget(wired: Wired) -> None:
    one_request(wired, KEY, FastExchange)  # warm-up: connection, breaker
    calls = one_request(wired, KEY, FastExchange)
    print(f"fast path: {calls} Python-level calls")
    assert 0 < calls <= FAST_BUDGET, f"fast path made {calls} calls (budget {FAST_BUDGET})"


def test_fast_path_call_budget_for_a_key_with_expiry_allow_list_and_quota(
    wired: Wired,
) -> None:
    one_request(wired, KEY + "c", FastExchange)
    calls = one_request(wired, KEY + "c", FastExchange)
    print(f"fast path, checked key: {calls} Python-level calls")
    assert 0 < calls <= CHECKED_BUDGET, f"made {calls} calls (budget {CHECKED_BUDGET})"
    assert wired.sink.dicts()[-1]["key_name"] == "checked"


def test_general_path_call_budget() -> None:
    w = Wired(CONFIG, general_only=True)  # the plain key, through the general exchange
    try:
        one_request(w, KEY, Exchange)
        calls = one_request(w, KEY, Exchange)
    finally:
        w.close()
    print(f"general path: {calls} Python-level calls")
    assert 0 < calls <= GENERAL_BUDGET, f"general path made {calls} calls (budget {GENERAL_BUDGET})"


def test_key_digests_are_remembered_for_valid_keys_only(
    wired: Wired, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths take a served key's SHA-256 from `auth.DIGESTS` after its first
    request (the budgets above count the remembered case); a wrong key never
    enters, and the memo is bounded."""
    import hashlib

    from fastgate.gateway import auth

    auth.DIGESTS.clear()
    one_request(wired, KEY, FastExchange)
    one_request(wired, KEY + "x", Exchange)
    expected = {k.encode(): hashlib.sha256(k.encode()).hexdigest() for k in (KEY, KEY + "x")}
    memo = auth.DIGESTS
    assert memo == expected
    wired.client_tr.written.clear()
    wired.send(request("fg-wrong-" + "0" * 40))
    assert wired.client_tr.written[0].startswith(b"HTTP/1.1 401")
    assert len(auth.DIGESTS) == 2
    monkeypatch.setattr(auth, "DIGESTS_MAX", 1)
    auth.DIGESTS.clear()
    one_request(wired, KEY, FastExchange)
    one_request(wired, KEY + "x", Exchange)
    assert list(auth.DIGESTS) == [(KEY + "x").encode()]  # full: emptied, then the new one
    auth.DIGESTS.clear()
