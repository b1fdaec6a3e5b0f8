"""Observability end to end: /metrics as Prometheus defines it, JSON logs, gateway time.

A real fastgate in front of FakeOpenAI upstreams, driven by the openai SDK. The
scrape is parsed with prometheus_client's own parser; the expected numbers come
from the test's bookkeeping (requests it made, answers it got) and from the
fakes (the usage they reported, the delays they were told to take), never from
the gateway. Where the metrics are compared with the usage records (the access
log), both are fastgate's output taken by different roads (the worker's fold and
the writer process).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_fake import Fail, FakeOpenAI, Ok, Slow
from tests.harness import Gateway, channel, children_pids, gateway_config, token

MODEL = "gpt-4o"
MSGS = [{"role": "user", "content": "measure me"}]
PRICE = {"model": MODEL, "input": 1.0, "output": 2.0}  # USD per 1M tokens: 1 and 2 micro-USD each
RECORD_LABELS = {"ingress", "model", "channel"}
HISTOGRAMS = (
    "fastgate_request_duration_seconds",
    "fastgate_time_to_first_byte_seconds",
    "fastgate_gateway_overhead_seconds",
)
# family (as the parser names it) -> (type, label names)
EXPECTED = {
    "fastgate_http_responses": ("counter", {"status"}),
    "fastgate_requests": ("counter", RECORD_LABELS | {"status"}),
    **{name: ("histogram", RECORD_LABELS) for name in HISTOGRAMS},
    "fastgate_tokens": ("counter", {"model", "channel", "kind"}),
    "fastgate_cost_usd": ("counter", {"model", "channel"}),
    "fastgate_upstream_attempts": ("counter", {"channel", "outcome"}),
    "fastgate_upstream_errors": ("counter", {"channel", "kind"}),
    "fastgate_upstream_connections": ("gauge", {"origin", "state"}),
    "fastgate_breaker_state": ("gauge", {"channel", "model", "state"}),
    "fastgate_channel_cooldown_seconds": ("gauge", {"channel"}),
    "fastgate_inflight_requests": ("gauge", set()),
    "fastgate_client_connections": ("gauge", set()),
    "fastgate_usage_records_written": ("counter", set()),
    "fastgate_usage_records_dropped": ("counter", set()),
    "fastgate_usage_records_rejected": ("counter", set()),
    "fastgate_usage_queue_records": ("gauge", set()),
    "fastgate_usage_spool_records": ("gauge", set()),
    "fastgate_redis_errors": ("counter", set()),
}


# --------------------------------------------------------------------------- helpers


class Scrape:
    """One GET /metrics, parsed by prometheus_client (and kept as text)."""

    def __init__(self, gw: Gateway) -> None:
        r = httpx2.get(gw.url + "/metrics", timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        self.text = r.text
        self.families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def samples(self, name: str) -> list[Any]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def value(self, name: str, **labels: Any) -> float:
        """The sample `name` whose labels are exactly `labels` (0 if absent)."""
        want = {k: str(v) for k, v in labels.items()}
        found = [s.value for s in self.samples(name) if s.labels == want]
        assert len(found) <= 1, (name, labels)
        return found[0] if found else 0.0

    def total(self, name: str, **labels: Any) -> float:
        """Sum of the samples `name` whose labels include `labels`."""
        want = {k: str(v) for k, v in labels.items()}
        return sum(s.value for s in self.samples(name) if want.items() <= s.labels.items())


def check_conventions(scrape: Scrape) -> None:
    """Names, types and shapes as Prometheus's conventions want them."""
    text = scrape.text
    for kind in ("HELP", "TYPE"):
        names = re.findall(rf"^# {kind} (\S+)", text, re.M)
        assert len(names) == len(set(names)), f"# {kind} repeated: {names}"
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert set(types) == set(re.findall(r"^# HELP (\S+)", text, re.M))
    for name, kind in types.items():
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        assert not re.search(r"_(ms|millis|milliseconds|micros|us)(_|$)", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
    # every sample line belongs to the family declared just above it
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            if types[current] == "histogram":
                assert sample in (current + "_bucket", current + "_sum", current + "_count")
            else:
                assert sample == current, (sample, current)
    for name, (kind, labels) in EXPECTED.items():
        fam = scrape.families.get(name)
        assert fam is not None, f"{name} missing"
        assert fam.type == kind, (name, fam.type)
        for s in fam.samples:
            got = set(s.labels) - ({"le"} if s.name.endswith("_bucket") else set())
            assert got == labels, (s.name, s.labels)
    for name in HISTOGRAMS:
        series: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
        for s in scrape.samples(name + "_bucket"):
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, []).append((float(s.labels["le"]), s.value))
        for key, buckets in series.items():
            counts = [n for _, n in sorted(buckets)]
            assert counts == sorted(counts), (name, key, buckets)  # cumulative
            assert sorted(buckets)[-1][0] == float("inf")
            assert counts[-1] == scrape.value(name + "_count", **dict(key))


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def chat(client: openai.OpenAI, *, stream: bool = False, model: str = MODEL) -> str:
    """One request; returns the x-request-id the gateway answered with."""
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=MSGS, stream=True
        ) as resp:
            rid = resp.headers["x-request-id"]
            events = list(resp.iter_lines())
        assert "data: [DONE]" in events
        return rid
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSGS)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-request-id"]


def ch(fake: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return channel(fake.name, fake.url, [MODEL], **kw)


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --------------------------------------------------------------------------- tests


def test_metrics_count_what_was_served(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = make_gateway(
        channels=[ch(a, priority=10), ch(b, priority=0)],
        tokens=[token("t1", demo_key)],
        prices=[PRICE],
    )
    client = sdk(gw, demo_key)
    usages: dict[str, list[dict[str, int]]] = {"a": [], "b": []}
    for stream in (False, False, True):
        chat(client, stream=stream)
        usages["a"].append(a.last_usage)
    a.script(Ok(cached_tokens=3))
    chat(client)
    usages["a"].append(a.last_usage)
    a.script(Fail(500))  # a fails, b serves: one failover
    chat(client)
    usages["b"].append(b.last_usage)
    with pytest.raises(openai.NotFoundError):  # the gateway's own 404: no upstream
        chat(client, model="no-such-model")
    a.script(Fail(400))  # an upstream 4xx is answered as it is: no failover
    with pytest.raises(openai.BadRequestError):
        chat(client)
    assert (a.request_count, b.request_count) == (6, 1)

    m = Scrape(gw)
    check_conventions(m)
    ok = {"ingress": "openai", "model": MODEL}
    assert m.value("fastgate_requests_total", **ok, channel="a", status=200) == 4
    assert m.value("fastgate_requests_total", **ok, channel="b", status=200) == 1
    assert m.value("fastgate_requests_total", **ok, channel="a", status=400) == 1
    # a made-up model is not a label: it counts under model=""
    assert (
        m.value("fastgate_requests_total", ingress="openai", model="", channel="", status=404) == 1
    )
    assert m.total("fastgate_requests_total") == 7
    assert m.value("fastgate_upstream_attempts_total", channel="a", outcome="ok") == 5
    assert m.value("fastgate_upstream_attempts_total", channel="a", outcome="http_500") == 1
    assert m.value("fastgate_upstream_attempts_total", channel="b", outcome="ok") == 1
    assert m.value("fastgate_upstream_errors_total", channel="a", kind="http_500") == 1
    assert m.total("fastgate_upstream_errors_total") == 1
    assert m.value("fastgate_http_responses_total", status=200) >= 5

    # Histograms: one observation per request; ttfb only where a response head came.
    for name in HISTOGRAMS:
        assert m.total(name + "_count") == (6 if "first_byte" in name else 7), name
    assert m.value("fastgate_request_duration_seconds_count", **ok, channel="a") == 5
    assert m.value("fastgate_time_to_first_byte_seconds_count", **ok, channel="b") == 1

    # Tokens and cost from what the fakes reported; cost by the price (whole micro-USD).
    for name, used in usages.items():
        for kind in ("prompt", "completion", "cached"):
            want = sum(u[f"{kind}_tokens"] for u in used)
            assert m.value("fastgate_tokens_total", model=MODEL, channel=name, kind=kind) == want
        micros = sum(u["prompt_tokens"] * 1 + u["completion_tokens"] * 2 for u in used)
        got = m.value("fastgate_cost_usd_total", model=MODEL, channel=name)
        assert got == pytest.approx(micros / 1e6, abs=1e-9), name
    assert sum(u["cached_tokens"] for u in usages["a"]) == 3

    # Gauges: the pool and the breakers of this worker.
    assert m.value("fastgate_upstream_connections", origin=a.url, state="idle") >= 1
    assert m.value("fastgate_breaker_state", channel="a", model=MODEL, state="closed") == 1
    assert m.value("fastgate_breaker_state", channel="a", model=MODEL, state="open") == 0

    # Against the usage records: the same latencies and gateway times, summed.
    recs = gw.wait_records(7)
    for name, field in (
        ("fastgate_request_duration_seconds_sum", "latency_ms"),
        ("fastgate_gateway_overhead_seconds_sum", "gateway_ms"),
    ):
        assert m.total(name) == pytest.approx(sum(r[field] for r in recs) / 1000, abs=1e-6)

    # The writer's side: every record written, nothing waiting, nothing dropped.
    def written() -> Scrape:
        s = Scrape(gw)
        assert s.value("fastgate_usage_records_written_total") == 7
        assert s.value("fastgate_usage_queue_records") == 0
        return s

    s = eventually(written)
    assert s.value("fastgate_usage_records_dropped_total") == 0
    assert s.value("fastgate_usage_spool_records") == 0


def test_gateway_ms_excludes_the_upstreams_time(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = make_gateway(
        channels=[ch(a, priority=10), ch(b, priority=0)], tokens=[token("t1", demo_key)]
    )
    client = sdk(gw, demo_key)
    a.script(Ok(first_byte_delay=0.2))
    slow = chat(client)
    a.script(Slow(chunk_delay=0.05, first_byte_delay=0.2))
    streamed = chat(client, stream=True)
    a.script(Fail(500, delay=0.2))  # a takes 0.2 s to fail, b 0.2 s to answer
    b.script(Ok(first_byte_delay=0.2))
    failed_over = chat(client)
    a.script(Ok())
    quick = chat(client)
    for rid, at_least in ((slow, 200), (streamed, 200), (failed_over, 400)):
        rec = gw.record_for(rid)
        assert rec["latency_ms"] >= at_least, rec
        assert 0 <= rec["gateway_ms"] < 50, rec  # the gateway's own part: no upstream waits
        assert rec["latency_ms"] - rec["gateway_ms"] >= at_least, rec
    rec = gw.record_for(quick)
    assert 0 <= rec["gateway_ms"] <= rec["latency_ms"], rec
    m = Scrape(gw)
    assert m.total("fastgate_gateway_overhead_seconds_count") == 4
    # Every observation of the overhead is in a bucket below 50 ms.
    assert m.value(
        "fastgate_gateway_overhead_seconds_bucket",
        ingress="openai",
        model=MODEL,
        channel="a",
        le="0.05",
    ) == m.value(
        "fastgate_gateway_overhead_seconds_count", ingress="openai", model=MODEL, channel="a"
    )


def test_one_scrape_sums_both_workers(make_gateway, fake_openai, demo_key) -> None:
    gw = make_gateway(
        channels=[ch(fake_openai)],
        tokens=[token("t1", demo_key)],
        prices=[PRICE],
        args=["--workers", "2"],
    )
    pids = set(eventually(lambda: _two(children_pids(gw.pid))))
    eventually(lambda: _check(Scrape(gw).value("fastgate_workers_reporting") == 2))
    answered_by: set[int] = set()
    prompt = completion = 0
    n = 0
    for _ in range(20):  # fresh connections: the kernel spreads them over both workers
        r = httpx2.post(
            gw.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MSGS},
            headers={"authorization": f"Bearer {demo_key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        n += 1
        prompt += fake_openai.last_usage["prompt_tokens"]
        completion += fake_openai.last_usage["completion_tokens"]
        answered_by.add(httpx2.get(gw.url + "/ready", timeout=10).json()["pid"])
    assert answered_by == pids  # both workers served
    m = Scrape(gw)
    check_conventions(m)
    labels = {"ingress": "openai", "model": MODEL, "channel": fake_openai.name}
    assert m.value("fastgate_requests_total", **labels, status=200) == n
    for name in HISTOGRAMS:
        assert m.value(name + "_count", **labels) == n, name
        assert m.value(name + "_bucket", **labels, le="+Inf") == n, name
    kinds = {"model": MODEL, "channel": fake_openai.name}
    assert m.value("fastgate_tokens_total", **kinds, kind="prompt") == prompt
    assert m.value("fastgate_tokens_total", **kinds, kind="completion") == completion
    assert m.value("fastgate_cost_usd_total", **kinds) == pytest.approx(
        (prompt + 2 * completion) / 1e6, abs=1e-9
    )
    # The breaker gauge counts workers: both have it closed.
    assert m.value("fastgate_breaker_state", **kinds, state="closed") == 2


@pytest.mark.parametrize("how", ["flag", "config"])
def test_json_logs_carry_the_request_id(make_gateway, make_fake, demo_key, how) -> None:
    a, b = make_fake("a"), make_fake("b")
    text = gateway_config(
        channels=[ch(a, priority=10), ch(b, priority=0)],
        tokens=[token("t1", demo_key)],
        routing={"breaker_failures": 1},
        logging={"format": "json"} if how == "config" else None,
    )
    gw = make_gateway(text, args=["--log-format", "json"] if how == "flag" else [])
    client = sdk(gw, demo_key)
    a.script(Fail(503))  # a fails once: its breaker opens, b serves
    rid = chat(client)
    assert b.request_count == 1

    def logged() -> list[dict[str, Any]]:
        lines = [ln for ln in gw.stderr_text().splitlines() if ln.strip()]
        objs = [json.loads(ln) for ln in lines]  # every line is one JSON object
        mine = [o for o in objs if o.get("request_id") == rid]
        assert len(mine) >= 3, objs
        return objs

    objs = eventually(logged)
    for o in objs:
        assert {"ts", "level", "logger", "message"} <= set(o), o
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["ts"]), o
    assert any("listening on http://" in o["message"] for o in objs)
    mine = [o for o in objs if o.get("request_id") == rid]
    failed = [o for o in mine if "failed" in o["message"]]
    assert failed and failed[0]["channel"] == "a" and failed[0]["kind"] == "HTTP 503"
    assert failed[0]["level"] == "WARNING"
    assert any("circuit breaker" in o["message"] and o["channel"] == "a" for o in mine)
    assert any("failing over" in o["message"] and o["channel"] == "b" for o in mine)


def _two(pids: list[int]) -> list[int]:
    assert len(pids) == 2, pids
    return pids


def _check(ok: bool) -> bool:
    assert ok
    return ok
