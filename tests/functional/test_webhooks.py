"""Webhooks (`[webhooks]`): a real fastgate posts its events to a local receiver.

Each event fires once with its fields: a breaker that opens (channel_down) and
closes again (channel_up), a 429 / a budget at 0 (channel_down rate_limited /
exhausted, with until), an upstream 401 (channel_down credential), a model with
no price (one unpriced_model for many requests; once per fleet through Redis
with two workers), budgets at 80 % and 100 %. The body is signed with the
secret; a receiver answering 500 twice gets the event once on the third
attempt; a receiver that hangs slows no request and the queue stays bounded;
max_per_minute drops the excess; unknown event names are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.fakes.base import Fail, Ok, closed_port
from tests.fakes.webhook import HANG, WebhookReceiver
from tests.fleet import get, post, redis_url
from tests.functional.test_durable_e2e import ADMIN_TOKEN, admin_toml, admin_url
from tests.harness import REPO_ROOT, channel, gateway_config, make_key, token, toml_table

MSGS = [{"role": "user", "content": "hello"}]
MODEL = "gpt-4o-mini"


@pytest.fixture
def receiver():
    r = WebhookReceiver().start()
    try:
        yield r
    finally:
        r.stop()


def hooks_toml(url: str, **kw: Any) -> str:
    return toml_table("webhooks", {"url": url, **kw})


def series(gw: Any, name: str) -> dict[str, float]:
    """Every series of metric `name` in one scrape: {'{labels}' or '': value}."""
    _, body = get(gw.url, "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            key, value = line.rsplit(" ", 1)
            out[key[len(name) :]] = float(value)
    return out


def chat(gw: Any, key: str, model: str = MODEL) -> int:
    return post(gw.url, key, {"model": model, "messages": MSGS})[0]


def settle(seconds: float = 0.8) -> None:
    """Give a wrongly repeated event the time to arrive before counting."""
    time.sleep(seconds)


def test_breaker_open_is_channel_down_and_its_close_channel_up(
    make_gateway, make_fake, receiver
) -> None:
    flaky, spare = make_fake("flaky"), make_fake("spare")
    flaky.script(Fail(500), Fail(500))
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [
                channel("flaky", flaky.url, [MODEL], priority=10),
                channel("spare", spare.url, [MODEL]),
            ],
            [token("app", key)],
            routing={"breaker_failures": 2, "breaker_cooldown": 1},
            extra=hooks_toml(
                receiver.url, events=["channel_down", "channel_up"], instance="edge-1"
            ),
        )
    )
    t0 = time.time()
    assert chat(gw, key) == 200  # flaky fails (1), spare serves
    assert receiver.events("channel_down") == []
    assert chat(gw, key) == 200  # flaky fails (2): its breaker opens
    (down,) = receiver.wait_for("channel_down")
    assert down["channel"] == "flaky" and down["model"] == MODEL
    assert down["reason"] == "failures" and down["error"] == "HTTP 500"
    assert down["failures"] == 2
    assert t0 < down["ts"] <= time.time()
    assert down["ts"] + 0.9 < down["until"] <= down["ts"] + 1.1  # breaker_cooldown
    assert down["instance"] == "edge-1" and down["host"] == socket.gethostname()
    assert down["pid"] == gw.pid
    assert chat(gw, key) == 200  # breaker open: spare only, no new event
    assert len(flaky.requests) == 2
    time.sleep(1.1)  # the cooldown passes; the next request is flaky's probe
    assert chat(gw, key) == 200
    assert len(flaky.requests) == 3
    (up,) = receiver.wait_for("channel_up")
    assert (up["channel"], up["model"], up["reason"]) == ("flaky", MODEL, "recovered")
    for _ in range(3):
        assert chat(gw, key) == 200
    settle()
    assert len(receiver.events("channel_down")) == 1
    assert len(receiver.events("channel_up")) == 1
    assert series(gw, "fastgate_webhooks_sent_total") == {
        '{event="channel_down"}': 1,
        '{event="channel_up"}': 1,
    }


def test_rate_limited_and_exhausted_channels_are_down_until_their_reset(
    make_gateway, make_fake, receiver
) -> None:
    limited, drained, spare = make_fake("limited"), make_fake("drained"), make_fake("spare")
    limited.script(Fail(429, retry_after="30"), Fail(429, retry_after="30"))
    drained.behaviour = Ok(
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}
    )
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [
                channel("limited", limited.url, [MODEL], priority=10),
                channel("drained", drained.url, [MODEL], priority=5),
                channel("spare", spare.url, [MODEL]),
            ],
            [token("app", key)],
            extra=hooks_toml(receiver.url, events=["channel_down"]),
        )
    )
    assert chat(gw, key) == 200  # 429 from limited; drained serves, and says it is at 0
    for _ in range(4):  # both skipped now: spare serves
        assert chat(gw, key) == 200
    assert (len(limited.requests), len(drained.requests)) == (1, 1)
    downs = receiver.wait_for("channel_down", 2)
    settle()
    downs = receiver.events("channel_down")
    assert len(downs) == 2
    by = {d["channel"]: d for d in downs}
    rl, ex = by["limited"], by["drained"]
    assert (rl["reason"], rl["status"], rl["seconds"]) == ("rate_limited", 429, 30)
    assert rl["ts"] + 29 < rl["until"] <= rl["ts"] + 30.1
    assert (ex["reason"], ex["status"], ex["seconds"]) == ("exhausted", 200, 20)
    assert ex["ts"] + 19 < ex["until"] <= ex["ts"] + 20.1
    assert receiver.events("channel_up") == []  # not asked for


def test_an_upstream_401_or_403_is_the_channels_credential(
    make_gateway, make_fake, receiver
) -> None:
    locked, forbidden, spare = make_fake("locked"), make_fake("forbidden"), make_fake("spare")
    locked.behaviour, forbidden.behaviour = Fail(401), Fail(403)
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [
                channel("locked", locked.url, [MODEL], priority=10),
                channel("forbidden", forbidden.url, [MODEL], priority=5),
                channel("spare", spare.url, [MODEL]),
            ],
            [token("app", key)],
            routing={"breaker_failures": 2},
            extra=hooks_toml(receiver.url, events=["channel_down", "channel_up"]),
        )
    )
    for _ in range(4):  # the client never sees a channel's 401/403: spare serves
        assert chat(gw, key) == 200
    # Counted against each channel: both breakers opened after two.
    assert (len(locked.requests), len(forbidden.requests)) == (2, 2)
    downs = receiver.wait_for("channel_down", 2)
    assert sorted((d["channel"], d["reason"], d["error"]) for d in downs) == [
        ("forbidden", "credential", "HTTP 403"),
        ("locked", "credential", "HTTP 401"),
    ]
    settle()
    assert len(receiver.events()) == 2


def test_unpriced_model_once_for_many_requests_and_signed(
    make_gateway, make_fake, receiver
) -> None:
    fake = make_fake("up")
    key = make_key()
    secret = "whsec-" + make_key()
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, ["gpt-4o", MODEL])],
            [token("app", key)],
            prices=[{"model": "gpt-4o", "input": 2.5, "output": 10.0}],
            extra=hooks_toml(receiver.url, secret_env="FG_TEST_HOOK_SECRET"),
        ),
        env={"FG_TEST_HOOK_SECRET": secret},
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    for i in range(10):
        client.chat.completions.create(model=MODEL, messages=MSGS, stream=i % 2 == 0)
        client.chat.completions.create(model="gpt-4o", messages=MSGS)  # priced: nothing
    (ev,) = receiver.wait_for("unpriced_model")
    assert (ev["model"], ev["channel"], ev["upstream_model"]) == (MODEL, "up", MODEL)
    settle()
    assert len(receiver.events()) == 1
    (d,) = receiver.deliveries
    want = hmac.new(secret.encode(), d.body, hashlib.sha256).hexdigest()
    assert d.headers["x-fastgate-signature"] == "sha256=" + want
    assert d.headers["x-fastgate-event"] == "unpriced_model"
    assert d.headers["x-fastgate-delivery"] == ev["id"]
    assert d.headers["content-type"] == "application/json"


def _workers_served(gw: Any) -> list[int]:
    req = urllib.request.Request(
        admin_url(gw) + "/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        status = json.loads(resp.read())
    return [int(w["responses"].get("200", 0)) for w in status["workers"]]


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_two_workers_post_fleet_news_once_with_redis_else_once_per_worker(
    make_gateway, make_fake, receiver, redis_prefix, backend
) -> None:
    """unpriced_model, budget thresholds and a cooldown's channel_down seen by both
    workers: once with the redis backend (SET NX), once per worker without."""
    up, limited = make_fake("up"), make_fake("limited")
    up.behaviour = Ok(prompt_tokens=1000, completion_tokens=1)  # 0.3 USD at the price below
    limited.behaviour = Fail(429, retry_after="30", delay=0.3)
    key, solo = make_key(), make_key()
    limits = toml_table(
        "ratelimit", {"backend": backend, "redis_url": redis_url(), "key_prefix": redis_prefix}
    )
    gw = make_gateway(
        gateway_config(
            [
                channel("limited", limited.url, [MODEL], priority=10),
                channel("up", up.url, [MODEL, "free"]),
            ],
            [token("app", key), token("solo", solo, budget_usd=1.0, budget_period="day")],
            prices=[{"model": MODEL, "input": 300.0, "output": 0.0}],
            routing={"breaker_failures": 20},  # the 429s alone, not a breaker
            extra=limits + admin_toml() + hooks_toml(receiver.url),
        ),
        args=["--workers", "2"],
    )
    # Eight at once on fresh connections (spread over both workers): each meets
    # limited's 429 before anyone knows of the cooldown.
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: chat(gw, key), range(8))) == [200] * 8
    assert len(limited.requests) >= 2
    for _ in range(40):  # an unpriced model, on both workers
        assert chat(gw, key, "free") == 200
    for _ in range(4):  # 1.2 of 1.0 USD: 80 % and 100 %
        assert chat(gw, solo) == 200
    served = _workers_served(gw)
    assert len(served) == 2 and all(n > 0 for n in served), served
    per_worker = 1 if backend == "redis" else 2
    receiver.wait_for("budget", 2 * per_worker)
    receiver.wait_for("unpriced_model", per_worker)
    settle(1.2)  # a second worker's copy of the spend: store sync + threshold check
    downs = receiver.events("channel_down")
    unpriced = receiver.events("unpriced_model")
    budget = receiver.events("budget")
    assert [e["reason"] for e in downs] == ["rate_limited"] * len(downs)
    if backend == "redis":
        assert len(downs) == 1
        assert len(unpriced) == 1
        assert sorted(e["threshold"] for e in budget) == [80, 100]
    else:
        assert 1 <= len(downs) <= 2 and len({e["pid"] for e in downs}) == len(downs)
        assert len(unpriced) == 2 and len({e["pid"] for e in unpriced}) == 2
        assert sorted((e["threshold"], e["pid"]) for e in budget) == sorted(
            (t, e["pid"]) for e in unpriced for t in (80, 100)
        )


def test_budget_80_and_100_percent_once_each(make_gateway, make_fake, receiver) -> None:
    fake = make_fake("up")
    prompt, input_price = 1000, 300.0  # USD per 1M tokens: 0.3 USD a request
    cost = prompt * input_price / 1_000_000
    fake.behaviour = Ok(prompt_tokens=prompt, completion_tokens=1)
    solo, member = make_key(), make_key()
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, [MODEL], groups=["default", "team"])],
            [
                token("solo", solo, budget_usd=1.0, budget_period="day"),
                token("member", member, group="team"),
            ],
            groups=[{"name": "team", "budget_usd": 1.0, "budget_period": "week"}],
            prices=[{"model": MODEL, "input": input_price, "output": 0.0}],
            extra=hooks_toml(receiver.url, events=["budget"]),
        )
    )
    for _ in range(3):  # 0.9 of 1.0 USD
        assert chat(gw, solo) == 200
        assert chat(gw, member) == 200
    first = receiver.wait_for("budget", 2)
    assert sorted((e["subject"], e["name"], e["threshold"]) for e in first) == [
        ("group", "team", 80),
        ("key", "solo", 80),
    ]
    assert chat(gw, solo) == 200  # 1.2: over
    assert chat(gw, member) == 200
    assert chat(gw, solo) == 402  # budget_exceeded
    assert chat(gw, member) == 402
    events = receiver.wait_for("budget", 4)
    settle()
    events = receiver.events("budget")
    assert len(events) == 4
    by = {(e["subject"], e["threshold"]): e for e in events}
    solo80, solo100, team100 = by[("key", 80)], by[("key", 100)], by[("group", 100)]
    assert solo80["spent_usd"] == pytest.approx(3 * cost)
    assert solo100["spent_usd"] == pytest.approx(4 * cost)
    assert solo100["budget_usd"] == 1.0 and solo100["period"] == "day"
    assert solo100["period_end"] - solo100["period_start"] == 86400
    assert team100["name"] == "team" and team100["period"] == "week"
    assert team100["period_end"] - team100["period_start"] == 7 * 86400


def test_a_failing_receiver_gets_the_event_once_after_retries(
    make_gateway, make_fake, receiver
) -> None:
    fake = make_fake("up")
    key = make_key()
    receiver.script(500, 500)  # then 200
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, ["a", "b", "c", "d"])],
            [token("app", key)],
            extra=hooks_toml(receiver.url, max_attempts=3),
        )
    )
    assert chat(gw, key, "a") == 200
    (ev,) = receiver.wait_for("unpriced_model", timeout=10)
    tries = receiver.deliveries
    assert [d.answered for d in tries] == [500, 500, 200]
    assert {d.headers["x-fastgate-delivery"] for d in tries} == {ev["id"]}
    assert tries[1].at - tries[0].at >= 0.45 and tries[2].at - tries[1].at >= 0.95  # backoff
    # Given up after max_attempts: counted as failed; a 4xx or a redirect is not retried.
    receiver.script(503, 503, 503, 400, 302)
    for model in "bcd":
        assert chat(gw, key, model) == 200
    deadline = time.monotonic() + 10
    while len(receiver.deliveries) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    settle(0.3)
    assert [d.answered for d in receiver.deliveries] == [500, 500, 200, 503, 503, 503, 400, 302]
    assert series(gw, "fastgate_webhooks_sent_total") == {'{event="unpriced_model"}': 1}
    assert series(gw, "fastgate_webhooks_failed_total") == {'{event="unpriced_model"}': 3}


def _latencies(gw: Any, key: str, models: list[str]) -> list[float]:
    out = []
    for m in models:
        t = time.perf_counter()
        assert chat(gw, key, m) == 200
        out.append(time.perf_counter() - t)
    return out


def test_a_hanging_receiver_slows_no_request_and_the_queue_stays_bounded(
    make_gateway, make_fake, receiver
) -> None:
    receiver.status = HANG
    fake = make_fake("up")
    key = make_key()
    queue, n_events = 4, 12
    unpriced = [f"m{i}" for i in range(n_events)]  # one event each
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, [MODEL, *unpriced])],
            [token("app", key)],
            prices=[{"model": MODEL, "input": 1.0, "output": 1.0}],
            extra=hooks_toml(receiver.url, timeout=60, max_attempts=1, queue_size=queue),
        )
    )
    _latencies(gw, key, [MODEL] * 10)  # warm-up
    before = _latencies(gw, key, [MODEL] * 30)
    firsts = _latencies(gw, key, unpriced)  # each queues an event; the first one hangs
    deadline = time.monotonic() + 5
    while not receiver.deliveries and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(receiver.deliveries) == 1  # the sender is stuck on the first event
    after = _latencies(gw, key, [MODEL] * 30)
    base = statistics.median(before)
    print(
        f"median latency: before {base * 1000:.2f} ms, event-raising "
        f"{statistics.median(firsts) * 1000:.2f} ms, with the sender stuck "
        f"{statistics.median(after) * 1000:.2f} ms"
    )
    assert statistics.median(firsts) < base + 0.1
    assert statistics.median(after) < base + 0.1
    # One event in flight, `queue` waiting, the rest dropped and counted.
    dropped = series(gw, "fastgate_webhooks_dropped_total")
    assert dropped == {'{event="unpriced_model",reason="queue"}': n_events - 1 - queue}
    assert sum(series(gw, "fastgate_webhooks_sent_total").values()) == 0  # shown as 0
    # SIGTERM: the queue gets 2 s more, then what is left is dropped (and said).
    t = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - t < 5
    assert f"webhooks: {1 + queue} event(s) not posted at shutdown" in gw.stderr_text()


def test_max_per_minute_drops_the_excess(make_gateway, make_fake, receiver) -> None:
    fake = make_fake("up")
    key = make_key()
    models = ["a", "b", "c", "d", "e"]
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, models)],
            [token("app", key)],
            extra=hooks_toml(receiver.url, max_per_minute=2),
        )
    )
    for m in models:
        assert chat(gw, key, m) == 200
    receiver.wait_for("unpriced_model", 2)
    settle()
    assert [e["model"] for e in receiver.events()] == ["a", "b"]
    assert series(gw, "fastgate_webhooks_dropped_total") == {
        '{event="unpriced_model",reason="rate"}': 3
    }


def test_a_missing_secret_is_never_an_unsigned_post(make_gateway, make_fake, receiver) -> None:
    fake = make_fake("up")
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, [MODEL])],
            [token("app", key)],
            extra=hooks_toml(receiver.url, secret_env="FG_TEST_UNSET_SECRET"),
        ),
        env={"FG_TEST_UNSET_SECRET": ""},
    )
    assert 'webhooks.secret_env: environment variable "FG_TEST_UNSET_SECRET"' in gw.stderr_text()
    assert chat(gw, key) == 200
    deadline = time.monotonic() + 5
    while not series(gw, "fastgate_webhooks_failed_total") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert series(gw, "fastgate_webhooks_failed_total") == {'{event="unpriced_model"}': 1}
    assert receiver.deliveries == []


def test_unknown_event_names_are_refused(tmp_path, make_gateway) -> None:
    text = gateway_config(
        [channel("up", "http://127.0.0.1:9", [MODEL])],
        extra=hooks_toml(
            "http://127.0.0.1:9/hook", events=["channel_down", "channel_dwn", "quota"]
        ),
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = subprocess.run(
        [sys.executable, "-m", "fastgate", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
    )
    assert res.returncode == 2
    assert (
        'webhooks.events[1]: unknown event "channel_dwn" (did you mean "channel_down"?); '
        'the events are "channel_down", "channel_up", "unpriced_model", "budget"'
    ) in res.stderr
    assert 'webhooks.events[2]: unknown event "quota"' in res.stderr
    gw = make_gateway(text, start=False)
    with pytest.raises(RuntimeError, match="channel_dwn"):
        gw.start()


def test_sighup_adds_changes_and_removes_webhooks(make_gateway, make_fake, receiver) -> None:
    other = WebhookReceiver().start()
    try:
        fake = make_fake("up")
        key = make_key()
        gw = make_gateway(
            gateway_config([channel("up", fake.url, list("abcd"))], [token("k", key)])
        )
        plain = gw.toml_text

        def snapshot() -> int:
            return json.loads(get(gw.url, "/ready")[1])["snapshot"]

        def reload(text: str) -> None:
            done = snapshot()
            gw.config_path.write_text(text)
            gw.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while snapshot() == done:
                assert time.monotonic() < deadline, gw.stderr_text()
                time.sleep(0.02)

        reload(plain + hooks_toml(receiver.url))  # added
        assert chat(gw, key, "a") == 200
        assert [e["model"] for e in receiver.wait_for("unpriced_model")] == ["a"]
        reload(plain + hooks_toml(other.url, queue_size=10, instance="moved"))  # changed
        assert chat(gw, key, "a") == 200  # announced already: not again
        assert chat(gw, key, "b") == 200
        (ev,) = other.wait_for("unpriced_model")
        assert (ev["model"], ev["instance"]) == ("b", "moved")
        reload(plain)  # removed
        assert chat(gw, key, "c") == 200
        settle()
        assert [e["model"] for e in receiver.events()] == ["a"]
        assert [e["model"] for e in other.events()] == ["b"]
    finally:
        other.stop()


def test_an_unreachable_redis_posts_rather_than_never(make_gateway, make_fake, receiver) -> None:
    fake = make_fake("up")
    key = make_key()
    limits = toml_table("ratelimit", {"backend": "redis", "redis_url": redis_url(closed_port())})
    gw = make_gateway(
        gateway_config(
            [channel("up", fake.url, [MODEL])],
            [token("app", key)],
            extra=limits + hooks_toml(receiver.url),
        )
    )
    for _ in range(3):
        assert chat(gw, key) == 200
    (ev,) = receiver.wait_for("unpriced_model")
    assert ev["model"] == MODEL
    settle(0.5)
    assert len(receiver.events()) == 1  # the worker's own memory still dedupes
