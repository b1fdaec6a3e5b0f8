"""One instance, one picture: `fastgate serve --workers 2` seen from outside.

A real supervisor with two workers in front of FakeOpenAI upstreams, driven over
fresh connections (httpx2's module functions open one per request, so the
kernel spreads them over both workers' SO_REUSEPORT sockets; which worker
answered is read from /ready's "pid"). Expected numbers come from the test's
own bookkeeping (responses it received, the fake's request count, the process
tree in /proc), never from the gateway.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections import Counter
from typing import Any

import httpx2
import pytest

from tests.fakes.openai_fake import Fail, FakeOpenAI, Ok
from tests.harness import Gateway, channel, children_pids, gateway_config, token

MODEL = "gpt-4o"
MSGS = [{"role": "user", "content": "count me once"}]
ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
ADMIN_RE = re.compile(r"admin on http://([^:\s]+):(\d+)")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$")


def start(make_gateway: Any, key: str, fake: FakeOpenAI, **routing: Any) -> Gateway:
    admin = f'[admin]\nhost = "127.0.0.1"\nport = 0\ntoken = "{ADMIN_TOKEN}"\n'
    text = gateway_config(
        channels=[channel(fake.name, fake.url, [MODEL])],
        tokens=[token("t1", key)],
        routing=routing or None,
        extra=admin,
    )
    gw = make_gateway(text, args=["--workers", "2"])
    wait_for(lambda: len(children_pids(gw.pid)) == 2, "two workers")
    wait_for(lambda: scrape(gw)[("fastgate_workers_reporting", ())] == 2, "both workers up")
    return gw


def wait_for(cond: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (httpx2.HTTPError, KeyError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def post(gw: Gateway, key: str) -> httpx2.Response:
    return httpx2.post(
        gw.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": MSGS},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def ready_pid(gw: Gateway) -> int:
    r = httpx2.get(gw.url + "/ready", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["pid"]


def scrape(
    gw: Gateway, timeout: float = 10
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One GET /metrics: {(name, sorted label pairs): value}."""
    r = httpx2.get(gw.url + "/metrics", timeout=timeout)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, line
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def requests_total(sample: dict[Any, float], status: int) -> float:
    return sample.get(("fastgate_http_responses_total", (("status", str(status)),)), 0)


def worker_pids(sample: dict[Any, float]) -> dict[int, int]:
    """{worker index: pid} from fastgate_worker_info."""
    return {
        int(dict(labels)["worker"]): int(dict(labels)["pid"])
        for (name, labels) in sample
        if name == "fastgate_worker_info"
    }


def admin_status(gw: Gateway) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not (m := ADMIN_RE.search(gw.stderr_text())):
        assert time.monotonic() < deadline, gw.stderr_text()
        time.sleep(0.05)
    r = httpx2.get(
        f"http://{m.group(1)}:{m.group(2)}/admin/status",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_one_scrape_counts_every_workers_requests(make_gateway, fake_openai, demo_key) -> None:
    gw = start(make_gateway, demo_key, fake_openai)
    pids = set(children_pids(gw.pid))
    base = scrape(gw)  # the start-up scrapes are counted too: take them as the base
    answered_by: Counter[int] = Counter()
    ok = 0
    for _ in range(30):
        answered_by[ready_pid(gw)] += 1
        ok += 1
        r = post(gw, demo_key)
        assert r.status_code == 200, r.text
        ok += 1
    assert set(answered_by) == pids, answered_by  # both workers answered
    sample = scrape(gw)
    # The scrape before counted as it was answered (a 200), after its own numbers.
    assert requests_total(sample, 200) == requests_total(base, 200) + 1 + ok
    ok_attempts = ("fastgate_upstream_attempts_total", (("channel", "fake"), ("outcome", "ok")))
    assert sample[ok_attempts] == fake_openai.request_count == 30
    assert sample[("fastgate_workers", ())] == 2
    assert sample[("fastgate_workers_reporting", ())] == 2
    assert set(worker_pids(sample).values()) == pids
    assert {labels for (name, labels) in sample if name == "fastgate_snapshot_version"} == {
        (("worker", "0"),),
        (("worker", "1"),),
    }

    status = admin_status(gw)
    assert sorted(w["index"] for w in status["workers"]) == [0, 1]
    assert {w["pid"] for w in status["workers"]} == pids
    assert status["workers_expected"] == 2
    # Every 200 the workers sent: the test's, the scrapes' (the last one included).
    served = sum(int(w["responses"].get("200", 0)) for w in status["workers"])
    assert served == requests_total(sample, 200) + 1
    for w in status["workers"]:
        assert w["snapshot_version"] >= 1 and w["ready"] is True
        assert w["breakers"][f"fake/{MODEL}"]["state"] == "closed"


def test_breaker_state_is_the_same_on_every_worker(make_gateway, make_fake, demo_key) -> None:
    fake = make_fake("flaky")
    fake.set_behaviour(Fail(500))
    cooldown = 6.0  # long enough for 30 requests on a loaded host (3.6 s seen in CI)
    gw = start(
        make_gateway,
        demo_key,
        fake,
        max_attempts=1,
        breaker_failures=2,
        breaker_cooldown=cooldown,
    )
    failed = 0
    while True:
        r = post(gw, demo_key)
        if r.status_code == 503:
            break
        assert r.status_code == 502, r.text
        failed += 1
        # Failures are counted per worker; the first worker to open tells the other.
        assert failed <= 3, "the breaker never opened"
    t_open = time.monotonic()
    assert r.json()["error"]["code"] == "service_unavailable"
    reached = fake.request_count
    assert reached == failed
    codes = Counter(post(gw, demo_key).status_code for _ in range(30))
    assert time.monotonic() - t_open < cooldown, "test too slow to observe the open breaker"
    assert codes == {503: 30}
    assert fake.request_count == reached  # no request reached the upstream
    status = admin_status(gw)
    assert len(status["workers"]) == 2
    for w in status["workers"]:
        assert w["breakers"][f"flaky/{MODEL}"]["state"] == "open", w
        assert int(w["responses"].get("503", 0)) > 0, w  # both workers answered 503s

    # The upstream recovers: one probe on one worker closes the breaker everywhere.
    fake.set_behaviour(Ok())
    time.sleep(max(0.0, cooldown + 0.2 - (time.monotonic() - t_open)))
    assert post(gw, demo_key).status_code == 200
    assert fake.request_count == reached + 1

    def all_closed() -> bool:
        states = [w["breakers"][f"flaky/{MODEL}"]["state"] for w in admin_status(gw)["workers"]]
        return states == ["closed", "closed"]

    wait_for(all_closed, "the other worker to close its breaker", timeout=2)
    assert Counter(post(gw, demo_key).status_code for _ in range(20)) == {200: 20}


def test_a_killed_workers_replacement_is_in_the_scrape(make_gateway, fake_openai, demo_key):
    gw = start(make_gateway, demo_key, fake_openai)
    for _ in range(10):
        assert post(gw, demo_key).status_code == 200
    before = scrape(gw)
    old = worker_pids(before)
    assert set(old) == {0, 1}

    # A worker that does not answer (stopped): the scrape still answers, says so,
    # and counts the stopped worker's last published numbers.
    os.kill(old[1], signal.SIGSTOP)
    try:
        stalled = None
        for _ in range(20):  # a connection the kernel gives the stopped worker waits
            try:
                stalled = scrape(gw, timeout=2)
                break
            except httpx2.TimeoutException:
                continue
        assert stalled is not None
    finally:
        os.kill(old[1], signal.SIGCONT)
    assert stalled[("fastgate_workers_reporting", ())] == 1
    assert worker_pids(stalled) == {0: old[0]}
    # Not lower than before (the 200 of the scrape before is counted after the
    # report it answered with: it is in only if the live worker answered that one).
    assert requests_total(stalled, 200) >= requests_total(before, 200)

    victim = old[0]  # worker 0: the admin API's worker
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(children_pids(gw.pid)) - {victim}) == 2, "the worker to be restarted")
    wait_for(lambda: scrape(gw)[("fastgate_workers_reporting", ())] == 2, "the new worker")
    after = scrape(gw)
    pids = worker_pids(after)
    assert pids[1] == old[1]
    assert pids[0] != victim and pids[0] in children_pids(gw.pid)
    # The slot's counters went on from what it had reported: no counter went down.
    assert requests_total(after, 200) >= requests_total(before, 200)
    # Every fresh connection is answered (the restarted worker 0 binds its own
    # SO_REUSEPORT socket again), by both workers.
    answered_by = Counter(ready_pid(gw) for _ in range(30))
    assert set(answered_by) == set(pids.values()), answered_by
    for _ in range(10):
        assert post(gw, demo_key).status_code == 200
    last = scrape(gw)
    assert requests_total(last, 200) >= requests_total(after, 200) + 30 + 10
    assert gw.stop() == 0


@pytest.mark.parametrize("workers", [1])
def test_one_process_scrape_is_unchanged(make_gateway, fake_openai, demo_key, workers) -> None:
    text = gateway_config(
        channels=[channel(fake_openai.name, fake_openai.url, [MODEL])],
        tokens=[token("t1", demo_key)],
    )
    gw = make_gateway(text, args=["--workers", str(workers)])
    for _ in range(5):
        assert post(gw, demo_key).status_code == 200
    sample = scrape(gw)
    assert requests_total(sample, 200) == 5
    assert ("fastgate_snapshot_version", ()) in sample
    assert not any(name.startswith("fastgate_worker") for name, _ in sample)
