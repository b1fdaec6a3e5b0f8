"""The fast path and the general exchange answer alike, byte for byte.

For each case, the same client request and the same upstream answers go once
through a normal App (where the case is fast-path eligible, the fast path takes
it, which is asserted) and once through an App whose every request goes to the
general exchange. The bytes written to the client and to the upstream, and the
usage records (less the clock and the unique id), must be identical.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fastgate.gateway.fast import FastExchange
from tests.unit.inproc import Wired

KEY = "fg-diff-0000000000000000000000000000000000000000"
CONFIG = f"""
[[channels]]
name = "a"
type = "openai"
base_url = "http://a.test:9"
api_key = "sk-a"
models = ["m1", "m2", "m3", "emb"]
model_map = {{ "m2" = "up-m2" }}
priority = 1

[[channels]]
name = "b"
type = "openai"
base_url = "http://b.test:9/v1"
api_key = "sk-b"
models = ["m3"]
priority = 0

[[channels]]
name = "az"
type = "azure"
base_url = "http://az.test:9"
api_key = "az-key"
api_version = "2024-10-21"
deployments = {{ "m5" = "dep-5" }}
models = ["m5", "m6"]
model_map = {{ "m6" = "up-m6" }}

[[prices]]
model = "m1"
input = 1.0
output = 2.0

[[prices]]
model = "m3"
input = 3.0
output = 4.0

[[tokens]]
name = "k"
key = "{KEY}"

# keys the fast path checks itself (expiry, allow-list, quota) by admission's rules
[[tokens]]
name = "quota"
key = "{KEY}q"
quota_usd = 1

[[tokens]]
name = "broke"
key = "{KEY}b"
quota_usd = 0

[[tokens]]
name = "later"
key = "{KEY}l"
expires_at = "2099-01-01T00:00:00Z"

[[tokens]]
name = "expired"
key = "{KEY}e"
expires_at = "2001-01-01T00:00:00Z"

[[tokens]]
name = "listed"
key = "{KEY}m"
models = ["m1"]

[[tokens]]
name = "budgeted"
key = "{KEY}d"
budget_usd = 1
budget_period = "day"
"""

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def chat_body(model: str, **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def json_response(body: dict[str, Any], status: int = 200, chunked: bool = False) -> bytes:
    raw = orjson.dumps(body)
    reason = {200: b"OK", 400: b"Bad Request", 500: b"Internal Server Error"}[status]
    head = b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\nx-request-id: up-7\r\n" % (
        status,
        reason,
    )
    if chunked:
        half = len(raw) // 2
        return head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (
            half,
            raw[:half],
            len(raw) - half,
            raw[half:],
        )
    return head + b"content-length: %d\r\n\r\n%b" % (len(raw), raw)


def completion(model: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }


def sse_response(with_usage_chunk: bool) -> bytes:
    events = [
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "o"}}], "usage": None},
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if with_usage_chunk:
        events.append({"id": "c1", "choices": [], "usage": USAGE})
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    )


def request(
    body: bytes,
    path: bytes = b"/v1/chat/completions",
    http: bytes = b"1.1",
    rid: bytes = b"r-1",
    key: str = KEY,
) -> bytes:
    return (
        b"POST %b HTTP/%b\r\nHost: gw\r\nAuthorization: Bearer %b\r\nx-request-id: %b\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (path, http, key.encode(), rid, len(body), body)
    )


# name -> (client request bytes, upstream answers in order, fast path expected)
CASES: dict[str, tuple[bytes, list[bytes], bool]] = {
    "nonstream": (request(chat_body("m1")), [json_response(completion("m1"))], True),
    "nonstream-chunked": (
        request(chat_body("m1")),
        [json_response(completion("m1"), chunked=True)],
        True,
    ),
    "stream-injected-usage": (
        request(chat_body("m1", stream=True)),
        [sse_response(with_usage_chunk=True)],
        True,
    ),
    "stream-client-usage": (
        request(chat_body("m1", stream=True, stream_options={"include_usage": True})),
        [sse_response(with_usage_chunk=True)],
        True,
    ),
    "model-map-rename": (request(chat_body("m2")), [json_response(completion("up-m2"))], True),
    "upstream-400": (
        request(chat_body("m1")),
        [json_response({"error": {"message": "bad", "type": "invalid_request_error"}}, 400)],
        True,
    ),
    "http10-client": (
        request(chat_body("m1"), http=b"1.0"),
        [json_response(completion("m1"))],
        True,
    ),
    "failover-500": (
        request(chat_body("m3")),
        [json_response({"error": {"message": "down"}}, 500), json_response(completion("m3"))],
        True,
    ),
    "embeddings": (
        request(orjson.dumps({"model": "emb", "input": "hi"}), path=b"/v1/embeddings"),
        [
            json_response(
                {
                    "object": "list",
                    "data": [],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                }
            )
        ],
        True,
    ),
    # over the 16 KB the fast path keeps of a body's tail: usage first, then a
    # long answer (some servers order it so); whole and chunked
    "big-body-usage-first": (
        request(chat_body("m1")),
        [json_response({"usage": USAGE, **completion("m1"), "pad": "x" * 40000})],
        True,
    ),
    "big-body-usage-first-chunked": (
        request(chat_body("m1")),
        [json_response({"usage": USAGE, **completion("m1"), "pad": "x" * 40000}, chunked=True)],
        True,
    ),
    "big-body-usage-last": (
        request(chat_body("m1")),
        [json_response({"pad": "x" * 40000, **completion("m1")})],
        True,
    ),
    "quota-key": (request(chat_body("m1"), key=KEY + "q"), [json_response(completion("m1"))], True),
    "quota-key-stream": (
        request(chat_body("m1", stream=True), key=KEY + "q"),
        [sse_response(with_usage_chunk=True)],
        True,
    ),
    "quota-exhausted": (request(chat_body("m1"), key=KEY + "b"), [], False),
    "expiring-key": (
        request(chat_body("m1"), key=KEY + "l"),
        [json_response(completion("m1"))],
        True,
    ),
    "expired-key": (request(chat_body("m1"), key=KEY + "e"), [], False),
    "allow-listed-model": (
        request(chat_body("m1"), key=KEY + "m"),
        [json_response(completion("m1"))],
        True,
    ),
    "model-outside-allow-list": (request(chat_body("m3"), key=KEY + "m"), [], False),
    "budget-key": (
        request(chat_body("m1"), key=KEY + "d"),
        [json_response(completion("m1"))],
        True,
    ),
    "budget-key-stream": (
        request(chat_body("m1", stream=True), key=KEY + "d"),
        [sse_response(with_usage_chunk=True)],
        True,
    ),
    "azure-deployment": (request(chat_body("m5")), [json_response(completion("m5"))], True),
    "azure-deployment-stream": (
        request(chat_body("m5", stream=True)),
        [sse_response(with_usage_chunk=True)],
        True,
    ),
    "azure-model-map": (request(chat_body("m6")), [json_response(completion("up-m6"))], True),
    "malformed-json": (request(b'{"model": "m1",'), [], False),
    "unknown-model": (request(chat_body("nope")), [], False),
}

VOLATILE = ("ts", "latency_ms", "ttfb_ms", "gateway_ms", "uid")


def run_case(case: str, general_only: bool) -> tuple[bytes, list[bytes], list[dict[str, Any]]]:
    req, answers, fast = CASES[case]
    w = Wired(CONFIG, general_only=general_only)
    try:
        w.send(req)
        if fast and not general_only:
            assert isinstance(w.client.exchange, FastExchange), "fast path not taken"
        sent: list[bytes] = []
        for answer in answers:
            proto, tr = w.upstreams.popleft()
            sent.append(tr.data())
            proto.data_received(answer)
            w.tick()  # the loop's turn ends: queued writes leave
            w.run()
        assert not w.upstreams
        records = [{k: v for k, v in r.items() if k not in VOLATILE} for r in w.sink.dicts()]
        return w.client_tr.data(), sent, records
    finally:
        w.close()


@pytest.mark.parametrize("case", list(CASES))
def test_fast_and_general_paths_agree(case: str) -> None:
    fast_out, fast_sent, fast_records = run_case(case, general_only=False)
    gen_out, gen_sent, gen_records = run_case(case, general_only=True)
    assert fast_out == gen_out
    assert fast_sent == gen_sent
    assert fast_records == gen_records
    assert len(fast_records) == 1
    # and the answer is a real one, not two identical failures
    assert fast_out.startswith(b"HTTP/1.")
    assert b"x-request-id: r-1\r\n" in fast_out


def test_fast_path_strips_injected_usage_chunk_and_bills() -> None:
    out, sent, records = run_case("stream-injected-usage", general_only=False)
    assert b'"include_usage":true' in sent[0]
    assert b'"choices":[]' not in out  # the usage-only chunk the gateway asked for
    assert b"data: [DONE]" in out
    (rec,) = records
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    # m1: 12 x $1/M + 5 x $2/M = 22 micro-dollars
    assert rec["cost_micros"] == 22


def test_failover_record_counts_both_attempts() -> None:
    out, sent, records = run_case("failover-500", general_only=False)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: a.test:9\r\n")
    assert sent[1].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: b.test:9\r\n")
    (rec,) = records
    assert rec["channel"] == "b" and rec["attempts"] == 2


def test_keys_the_fast_path_checks_are_charged_and_refused_as_by_admission() -> None:
    """A key with a quota is charged on the fast path (its record's cost, and what
    the next request's admission sees); the refusals are admission's own."""
    _out, _sent, (rec,) = run_case("quota-key", general_only=False)
    assert (rec["key_name"], rec["cost_micros"]) == ("quota", 22)
    for case, status, code in (
        ("quota-exhausted", b"402", b"insufficient_quota"),
        ("expired-key", b"401", b"token_expired"),
        ("model-outside-allow-list", b"403", b"permission_denied"),
    ):
        out, sent, (rec,) = run_case(case, general_only=False)
        assert out.startswith(b"HTTP/1.1 " + status), (case, out[:200])
        assert code in out, (case, out)
        assert sent == [] and rec["status"] == int(status)


def serve_then_refuse(key: str, use_up: Any) -> tuple[Wired, bytes]:
    """One request of `key` served and charged on the fast path; `use_up(w)` then
    spends what the key may spend; the answer to a second request (asserted to
    reach no upstream) and the App, open (the caller closes it)."""
    w = Wired(CONFIG)
    w.send(request(chat_body("m1"), key=key))
    assert isinstance(w.client.exchange, FastExchange)
    proto, _tr = w.upstreams.popleft()
    proto.data_received(json_response(completion("m1")))
    w.tick()
    w.run()
    use_up(w)
    w.client_tr.written.clear()
    w.send(request(chat_body("m1"), key=key, rid=b"r-2"))
    w.tick()
    w.run()
    assert not w.upstreams
    return w, w.client_tr.data()


def test_a_quota_left_under_the_last_cost_is_refused_on_the_fast_path() -> None:
    """admission's rule: served while what is left covers the key's last request on
    the model. $1 of quota; the first request's cost, pretended to be $0.7, leaves
    $0.3: the second is refused without an upstream call."""

    def use_up(w: Wired) -> None:
        assert w.app.quota_used["quota"] == 22
        w.app.quota_used["quota"] = 700_000
        w.app.last_cost[("quota", "m1")] = 700_000

    w, out = serve_then_refuse(KEY + "q", use_up)
    w.close()
    assert out.startswith(b"HTTP/1.1 402") and b"insufficient_quota" in out


def test_azure_is_served_on_the_fast_path_at_its_deployment_path() -> None:
    """An Azure channel's requests go to the deployment path with the channel's
    api-version and `api-key` (the target remembered by the channel after the
    first request), on the fast path."""
    for case, target in (
        ("azure-deployment", b"/openai/deployments/dep-5/chat/completions?api-version=2024-10-21"),
        ("azure-model-map", b"/openai/deployments/up-m6/chat/completions?api-version=2024-10-21"),
    ):
        out, sent, (rec,) = run_case(case, general_only=False)
        assert sent[0].startswith(b"POST " + target + b" HTTP/1.1\r\nhost: az.test:9\r\n")
        assert b"api-key: az-key\r\n" in sent[0] and b"authorization" not in sent[0].lower()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and rec["channel"] == "az"
    w = Wired(CONFIG)
    served: list[Any] = []  # the upstream connection, opened once and kept alive

    def serve(rid: bytes) -> None:
        w.send(request(chat_body("m5"), rid=rid))
        assert isinstance(w.client.exchange, FastExchange)
        if not served:
            served.append(w.upstreams.popleft())
        w.tick()
        served[0][0].data_received(json_response(completion("m5")))
        w.tick()
        w.run()

    try:
        serve(b"r-1")
        serve(b"r-2")  # reads the remembered target
        assert not w.upstreams
        tr = served[0][1]
        az = w.app.snapshot.channels["az"]
        key = ("m5", "m5", b"/v1/chat/completions")
        assert az.targets == {
            key: b"/openai/deployments/dep-5/chat/completions?api-version=2024-10-21"
        }
        assert tr.data().count(b"POST /openai/deployments/dep-5/chat/completions?") == 2
        # what the fast path sends is the remembered target itself, not recomputed
        az.targets[key] = b"/openai/deployments/remembered/chat/completions?api-version=x"
        serve(b"r-3")
        assert tr.data().count(b"POST /openai/deployments/remembered/chat/completions?") == 1
    finally:
        w.close()


def test_a_spent_budget_is_refused_once_on_the_fast_path() -> None:
    """A key with a budget is served and charged on the fast path; once its budget
    is spent, the next request is admission's 402 budget_exceeded, counted once
    (the fast path's own look, `Budgets.clear`, counts nothing), no upstream call."""
    from fastgate.gateway.budgets import REFUSED

    def use_up(w: Wired) -> None:
        ((k, spent),) = w.app.budgets.spent.items()
        assert k[:3] == ("key", "budgeted", "day") and spent == 22
        w.app.budgets.spent[k] = 1_000_000  # the whole $1

    w, out = serve_then_refuse(KEY + "d", use_up)
    w.close()
    assert out.startswith(b"HTTP/1.1 402") and b"budget_exceeded" in out
    assert w.app.metrics.counters[REFUSED] == {(): 1}


@pytest.mark.parametrize(
    "case", ["big-body-usage-first", "big-body-usage-first-chunked", "big-body-usage-last"]
)
def test_big_bodies_are_billed_wherever_their_usage_is(case: str) -> None:
    _out, _sent, (rec,) = run_case(case, general_only=False)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    assert rec["cost_micros"] == 22
