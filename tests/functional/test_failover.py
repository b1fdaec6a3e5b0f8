"""Routing and failover end to end: several FakeOpenAI channels behind a real fastgate.

Which channel served a request is read from the fakes (each answers "Hello from
<name>" and records every request with its arrival time), not from the gateway.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.openai_fake import (
    DieMidStream,
    Fail,
    FakeOpenAI,
    Hang,
    Ok,
    closed_port,
)
from tests.harness import Gateway, channel, parse_sse, token

MODEL = "gpt-4o"
MSGS = [{"role": "user", "content": "route me somewhere nice"}]
FAST_TIMEOUTS = {"connect_timeout": 1.0, "first_byte_timeout": 0.5}


def build(
    make_gateway: Callable[..., Gateway],
    key: str,
    chans: list[dict[str, Any]],
    *,
    routing: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> Gateway:
    return make_gateway(
        channels=chans,
        tokens=[token("t1", key)],
        routing=routing,
        server={**FAST_TIMEOUTS, **(server or {})},
    )


def ch(fake: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return channel(fake.name, fake.url, [MODEL], **kw)


def post_chat(
    gw: Gateway, key: str, *, stream: bool = False, timeout: float = 20
) -> httpx2.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": MSGS}
    if stream:
        body["stream"] = True
    return httpx2.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def served_by(resp: httpx2.Response) -> str:
    """The fake's name, from its deterministic answer 'Hello from <name>'."""
    assert resp.status_code == 200, resp.text
    content = resp.json()["choices"][0]["message"]["content"]
    assert content.startswith("Hello from ")
    return content.removeprefix("Hello from ")


def sequence(*fakes: FakeOpenAI) -> list[str]:
    """Names of the fakes in the order requests reached them."""
    hits = [(r.t, f.name) for f in fakes for r in f.requests]
    return [name for _, name in sorted(hits)]


def assert_error(resp: httpx2.Response, status: int, code: str, etype: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code
    assert err["type"] == etype
    assert isinstance(err["message"], str) and err["message"]
    return err


def record(gw: Gateway, resp: httpx2.Response) -> dict[str, Any]:
    return gw.record_for(resp.headers["x-request-id"])


# --------------------------------------------------------------------------- failover causes


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_retryable_status_fails_over(make_gateway, make_fake, demo_key: str, status: int) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    a.script(Fail(status))
    resp = post_chat(gw, demo_key)
    assert served_by(resp) == "b"
    assert sequence(a, b) == ["a", "b"]
    log = record(gw, resp)
    assert log["attempts"] == 2
    assert log["channel"] == "b"
    assert log["status"] == 200


def test_connect_refused_fails_over(make_gateway, make_fake, demo_key: str) -> None:
    b = make_fake("b")
    dead = channel("dead", f"http://127.0.0.1:{closed_port()}", [MODEL], priority=10)
    gw = build(make_gateway, demo_key, [dead, ch(b, priority=0)])
    t0 = time.monotonic()
    resp = post_chat(gw, demo_key)
    assert served_by(resp) == "b"
    assert time.monotonic() - t0 < 3
    log = record(gw, resp)
    assert log["attempts"] == 2 and log["channel"] == "b"


def test_upstream_closing_without_response_fails_over(make_gateway, make_fake, demo_key) -> None:
    from tests.fakes.openai_fake import CloseImmediately

    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(CloseImmediately())
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    resp = post_chat(gw, demo_key)
    assert served_by(resp) == "b"
    assert b.request_count == 1


def test_first_byte_timeout_fails_over_and_cancels(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(Hang())
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    t0 = time.monotonic()
    resp = post_chat(gw, demo_key)
    elapsed = time.monotonic() - t0
    assert served_by(resp) == "b"
    assert 0.4 <= elapsed < 3.0, elapsed
    assert sequence(a, b) == ["a", "b"]
    # the timed-out upstream request is abandoned: its connection is closed
    deadline = time.monotonic() + 5
    while not a.last.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.last.client_disconnected
    assert record(gw, resp)["attempts"] == 2


def test_stream_request_fails_over_before_first_byte(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.script(Fail(503))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    text = "".join(
        c.choices[0].delta.content or ""
        for c in sdk(gw, demo_key).chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    )
    assert text == "Hello from b"
    assert sequence(a, b) == ["a", "b"]


# --------------------------------------------------------------------------- giving up


def test_all_fail_is_502(make_gateway, make_fake, demo_key: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(Fail(500))
    b.set_behaviour(Fail(503))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b)], routing={"max_attempts": 3})
    resp = post_chat(gw, demo_key)
    assert_error(resp, 502, "upstream_error", "server_error")
    seq = sequence(a, b)
    assert 2 <= len(seq) <= 3
    assert all(x != y for x, y in itertools.pairwise(seq)), seq
    log = record(gw, resp)
    assert log["status"] == 502
    assert log["error_code"] == "upstream_error"
    assert log["attempts"] == len(seq)


def test_all_time_out_is_504(make_gateway, make_fake, demo_key: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(Hang())
    b.set_behaviour(Hang())
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b)], routing={"max_attempts": 3})
    t0 = time.monotonic()
    resp = post_chat(gw, demo_key)
    elapsed = time.monotonic() - t0
    assert_error(resp, 504, "upstream_timeout", "server_error")
    seq = sequence(a, b)
    assert 2 <= len(seq) <= 3
    assert all(x != y for x, y in itertools.pairwise(seq)), seq
    assert elapsed < 0.5 * len(seq) + 2.0
    assert record(gw, resp)["error_code"] == "upstream_timeout"


def test_mixed_timeout_and_error_is_502(make_gateway, make_fake, demo_key: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(Hang())
    b.set_behaviour(Fail(500))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b)], routing={"max_attempts": 2})
    resp = post_chat(gw, demo_key)
    assert_error(resp, 502, "upstream_error", "server_error")
    assert sequence(a, b) == ["a", "b"]


def test_max_attempts_bounds_tries(make_gateway, make_fake, demo_key: str) -> None:
    fakes = [make_fake(n) for n in "abc"]
    for f in fakes:
        f.set_behaviour(Fail(500))
    chans = [ch(f, priority=p) for f, p in zip(fakes, (30, 20, 10), strict=True)]
    gw = build(make_gateway, demo_key, chans, routing={"max_attempts": 2})
    resp = post_chat(gw, demo_key)
    assert_error(resp, 502, "upstream_error", "server_error")
    assert sequence(*fakes) == ["a", "b"]
    assert record(gw, resp)["attempts"] == 2


def test_never_the_same_channel_twice_in_a_row(make_gateway, make_fake, demo_key: str) -> None:
    a = make_fake("a")
    a.set_behaviour(Fail(500))
    gw = build(make_gateway, demo_key, [ch(a)], routing={"max_attempts": 3})
    resp = post_chat(gw, demo_key)
    assert_error(resp, 502, "upstream_error", "server_error")
    assert a.request_count == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_pass_through_without_failover(
    make_gateway, make_fake, demo_key: str, status: int
) -> None:
    a, b = make_fake("a"), make_fake("b")
    body = b'{"error":{"message":"upstream says no","type":"invalid_request_error","param":"x","code":"bad_thing"}}'
    a.script(Fail(status, body=body))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    resp = post_chat(gw, demo_key)
    assert resp.status_code == status
    assert resp.content == body
    assert b.request_count == 0
    log = record(gw, resp)
    assert log["status"] == status and log["attempts"] == 1


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_401_403_is_the_channels_credential_and_fails_over(
    make_gateway, make_fake, demo_key: str, status: int
) -> None:
    a, b = make_fake("a"), make_fake("b")
    leaky = (
        b'{"error":{"message":"Incorrect API key provided: sk-upstream-a. Bearer sk-upstream-a"}}'
    )
    a.set_behaviour(Fail(status, body=leaky))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    resp = post_chat(gw, demo_key)
    assert resp.status_code == 200  # served by b
    assert a.request_count == 1 and b.request_count == 1
    assert record(gw, resp)["attempts"] == 2
    # Nothing else serves: 502 upstream_error, and no key material anywhere.
    only = build(make_gateway, demo_key, [ch(a)])
    resp = post_chat(only, demo_key)
    err = assert_error(resp, 502, "upstream_error", "server_error")
    assert f"HTTP {status}" in err["message"]
    assert b"sk-upstream" not in resp.content
    assert "sk-upstream" not in only.stderr_text()


def test_upstream_error_bodies_reach_the_client_without_key_material(
    make_gateway, make_fake, fake_anthropic, demo_key: str
) -> None:
    a = make_fake("a")
    leaky = (
        b'{"error":{"message":"Invalid header x-api-key: sk-ant-api03-secretsecret, '
        b'also sk-upstream-a and AIzaSyA1234567890abcdefghijkl","type":"invalid_request_error"}}'
    )
    a.set_behaviour(Fail(400, body=leaky))
    fake_anthropic.set_behaviour(Fail(400, body=leaky))
    gw = build(
        make_gateway,
        demo_key,
        [
            ch(a),
            channel("claude", fake_anthropic.url, ["claude-3-5-haiku"], type="anthropic"),
        ],
    )
    resp = post_chat(gw, demo_key)  # same protocol: the upstream's body, redacted
    assert resp.status_code == 400
    assert b"sk-ant" not in resp.content and b"sk-upstream" not in resp.content
    assert b"AIza" not in resp.content
    assert resp.content.count(b"[redacted]") == 3
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert int(resp.headers["content-length"]) == len(resp.content)
    conv = httpx2.post(  # converted (OpenAI client, Anthropic channel): redacted too
        gw.url + "/v1/chat/completions",
        json={"model": "claude-3-5-haiku", "messages": MSGS},
        headers={"authorization": f"Bearer {demo_key}"},
        timeout=10,
    )
    assert conv.status_code == 400
    assert b"sk-ant" not in conv.content and b"[redacted]" in conv.content


# --------------------------------------------------------------------------- mid-stream failure


def test_die_mid_stream_ends_with_error_event_and_no_failover(
    make_gateway, make_fake, demo_key: str
) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(DieMidStream(after_chunks=2, delay=0.3))
    # A first byte may be slow on a loaded host (the fakes are threads of this
    # process): a first-byte timeout would fail over before any byte was sent,
    # which is right but not what this test is about.
    gw = build(
        make_gateway,
        demo_key,
        [ch(a, priority=10), ch(b, priority=0)],
        server={"first_byte_timeout": 10.0},
    )
    received = bytearray()
    with httpx2.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": MSGS, "stream": True},
        headers={"authorization": f"Bearer {demo_key}"},
        timeout=10,
    ) as resp:
        assert resp.status_code == 200
        try:
            for chunk in resp.iter_raw():
                received += chunk
        except httpx2.HTTPError:
            pass  # an abrupt end after the error event is acceptable
    events = [e["data"] for e in parse_sse(bytes(received)) if e.get("data") != "[DONE]"]
    docs = [json.loads(d) for d in events]
    content = "".join(
        d["choices"][0]["delta"].get("content") or "" for d in docs if d.get("choices")
    )
    assert content == "Hello", "the chunks sent before the failure reach the client"
    assert "error" in docs[-1], docs[-1]
    assert isinstance(docs[-1]["error"].get("message"), str)
    assert sum("error" in d for d in docs) == 1
    assert b.request_count == 0, [(r.path, r.body[:200]) for r in b.requests]
    assert a.request_count == 1
    assert a.request_count == 1


def test_die_mid_stream_surfaces_as_api_error_in_sdk(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(DieMidStream(after_chunks=3, delay=0.3))
    gw = build(make_gateway, demo_key, [ch(a, priority=10), ch(b, priority=0)])
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for c in sdk(gw, demo_key).chat.completions.create(model=MODEL, messages=MSGS, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert not isinstance(exc.value, openai.APIConnectionError), "expected the error event"
    assert "".join(got) == "Hello from"
    assert b.request_count == 0


# --------------------------------------------------------------------------- selection


def test_priority_order(make_gateway, make_fake, demo_key: str) -> None:
    a, b, c = make_fake("a"), make_fake("b"), make_fake("c")
    gw = build(make_gateway, demo_key, [ch(a, priority=0), ch(b, priority=10), ch(c, priority=5)])
    for _ in range(6):
        assert served_by(post_chat(gw, demo_key)) == "b"
    assert a.request_count == 0 and c.request_count == 0
    b.set_behaviour(Fail(500))
    assert served_by(post_chat(gw, demo_key)) == "c"


def test_zero_weights_round_robin(make_gateway, make_fake, demo_key: str) -> None:
    fakes = [make_fake(n) for n in "abc"]
    gw = build(make_gateway, demo_key, [ch(f, weight=0) for f in fakes])
    counts = Counter(served_by(post_chat(gw, demo_key)) for _ in range(30))
    assert set(counts) == {"a", "b", "c"}
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_weighted_distribution(make_gateway, make_fake, demo_key: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = build(make_gateway, demo_key, [ch(a, weight=1), ch(b, weight=3)])
    n = 100
    counts = Counter(served_by(post_chat(gw, demo_key)) for _ in range(n))
    share_b = counts["b"] / n
    assert 0.6 <= share_b <= 0.9, counts  # expected 0.75, sd ~0.043


# --------------------------------------------------------------------------- circuit breaker


def test_circuit_breaker_opens_probes_and_closes(make_gateway, make_fake, demo_key) -> None:
    cooldown = 2.5  # the requests of the open and half-open phases fit in it on a loaded host
    a, b = make_fake("a"), make_fake("b")
    a.set_behaviour(Fail(500))
    gw = build(
        make_gateway,
        demo_key,
        [ch(a, priority=10), ch(b, priority=0)],
        routing={"max_attempts": 2, "breaker_failures": 3, "breaker_cooldown": cooldown},
    )
    for _ in range(3):
        assert served_by(post_chat(gw, demo_key)) == "b"
    assert a.request_count == 3
    t_open = time.monotonic()
    # open: a is skipped, b serves at the first attempt
    while_open = [post_chat(gw, demo_key) for _ in range(3)]
    assert time.monotonic() - t_open < cooldown, "test too slow to observe the open breaker"
    assert [served_by(r) for r in while_open] == ["b", "b", "b"]
    assert a.request_count == 3

    time.sleep(max(0.0, cooldown + 0.3 - (time.monotonic() - t_open)))
    # half-open: exactly one probe, which fails -> open again
    assert served_by(post_chat(gw, demo_key)) == "b"
    assert a.request_count == 4
    assert served_by(post_chat(gw, demo_key)) == "b"
    assert a.request_count == 4

    # the channel recovers: after the cooldown the probe succeeds and it is used again
    a.set_behaviour(Ok())
    time.sleep(cooldown + 0.3)
    assert served_by(post_chat(gw, demo_key)) == "a"
    assert served_by(post_chat(gw, demo_key)) == "a"
    assert a.request_count == 6
    assert [record(gw, r)["attempts"] for r in while_open] == [1, 1, 1]


def test_all_breakers_open_is_503(make_gateway, make_fake, demo_key: str) -> None:
    a = make_fake("a")
    a.set_behaviour(Fail(500))
    gw = build(
        make_gateway,
        demo_key,
        [ch(a)],
        routing={"breaker_failures": 2, "breaker_cooldown": 30.0},
    )
    for _ in range(2):
        assert_error(post_chat(gw, demo_key), 502, "upstream_error", "server_error")
    assert a.request_count == 2
    resp = post_chat(gw, demo_key)
    assert_error(resp, 503, "service_unavailable", "server_error")
    assert a.request_count == 2
    log = record(gw, resp)
    assert log["status"] == 503 and log["error_code"] == "service_unavailable"
