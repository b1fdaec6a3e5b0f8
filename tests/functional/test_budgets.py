"""Budgets (`budget_usd` per `budget_period`, on a key and on a group): 402
`budget_exceeded` once the period's spend reaches the budget, shared by a fleet
(two `fastgate serve` processes on one Postgres and one Redis), durable across a
restart, and fresh again in the next period (the test moves the budgets' clock
with the test-only `FASTGATE_TEST_CLOCK_FILE`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.fakes.base import Ok
from tests.fleet import REDIS_PORT, Relay, metric, post, redis_url
from tests.harness import channel, gateway_config, make_key, token

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
PROMPT, COMPLETION = 7, 5  # what the fake reports for every request
PRICE = {"model": "gpt-4o-mini", "input": 100.0, "output": 300.0}  # USD per 1M tokens
COST = PROMPT * 100 + COMPLETION * 300  # micro-dollars per request: 2200
DAY = 86400


def budget_for(n: int) -> float:
    """A budget (USD) that lets exactly `n` requests through: n-1 full costs and a
    little of the n-th are left when the n-th is admitted; then nothing."""
    return (n * COST - 1) / 1_000_000


def fleet_text(
    fake_url: str,
    tokens: list[dict[str, Any]],
    prefix: str,
    db: str,
    redis: str = "",
    on_error: str = "open",
) -> str:
    return gateway_config(
        [channel("up", fake_url, ["gpt-4o-mini"])],
        tokens,
        prices=[PRICE],
        extra=f"""
[ratelimit]
backend = "redis"
redis_url = "{redis or redis_url()}"
key_prefix = "{prefix}"
on_redis_error = "{on_error}"

[database]
url = "{db}"
""",
    )


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


def test_budget_across_two_instances_is_exact_durable_and_fresh_next_period(
    pg_db: str, redis_prefix: str, make_gateway, make_fake, tmp_path: Path
) -> None:
    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    clock = tmp_path / "clock"
    clock.write_text("0")
    env = {"FASTGATE_TEST_CLOCK_FILE": str(clock)}
    key, roomy = make_key(), make_key()
    # The instances reach Redis over a slow link (20 ms a write): a charge still on
    # its way when the answer ends would show below (the fleet's counter behind).
    relay = Relay(REDIS_PORT, delay=0.02)
    text = fleet_text(
        fake.url,
        [
            token("app", key, budget_usd=budget_for(10), budget_period="day"),
            token("roomy", roomy, budget_usd=budget_for(1000), budget_period="day"),
        ],
        redis_prefix,
        pg_db,
        redis=redis_url(relay.port),
    )
    gws = [make_gateway(text, env=env) for _ in range(2)]

    # Far from its budget a key makes no Redis round trip at admission: each
    # instance reads the fleet's total once, before its first charge of the key.
    for i in range(10):
        assert post(gws[i % 2].url, roomy, BODY)[0] == 200
    reads = sum(metric(g.url, "fastgate_budget_fresh_reads_total") for g in gws)
    assert reads == 2

    import redis

    r = redis.Redis.from_url(redis_url())

    def fleet_spend() -> int:
        """The fleet's counter of the key's budget, read from Redis."""
        return sum(int(r.get(k) or 0) for k in r.scan_iter(match=redis_prefix + "budget:key:*:app"))

    def run(n: int, check: bool = False) -> list[tuple[int, bytes]]:
        out = []
        for i in range(n):  # one after the other, alternating instances
            status, _, body = post(gws[i % 2].url, key, BODY)
            out.append((status, body))
            served = sum(1 for st, _ in out if st == 200)
            if check and status == 200 and served >= 6:
                # Near the budget (what is left within 4 costs) the answer's end
                # waits for the fleet's counter: it holds this cost already, so
                # the next request, on either instance, is admitted on it.
                assert fleet_spend() == served * COST
        return out

    results = run(14, check=True)
    assert [s for s, _ in results] == [200] * 10 + [402] * 4, results
    for _, body in results[10:]:
        assert error_code(body) == "budget_exceeded"
        assert json.loads(body)["error"]["type"] == "insufficient_quota_error"
    assert len(fake.requests) == 20

    # Durable: restart both instances with Redis's counters gone; the store remembers.
    for gw in gws:
        assert gw.stop() == 0
    stale = list(r.scan_iter(match=redis_prefix + "budget:*"))
    assert stale
    r.delete(*stale)
    gws = [make_gateway(text, env=env) for _ in range(2)]
    status, _, body = post(gws[0].url, key, BODY)
    assert (status, error_code(body)) == (402, "budget_exceeded")
    assert len(fake.requests) == 20

    # The next day (UTC) starts fresh: every process sees the moved clock.
    now = time.time()
    clock.write_text(str(DAY - now % DAY + 60))  # one minute into the next day
    time.sleep(1.2)
    results = run(13)
    assert [s for s, _ in results] == [200] * 10 + [402] * 3, results
    assert len(fake.requests) == 30
    r.close()
    for gw in gws:
        assert gw.stop() == 0
    relay.close()


def test_group_budget_is_shared_by_its_keys(make_gateway, make_fake) -> None:
    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    a, b, other = make_key(), make_key(), make_key()
    gw = make_gateway(
        channels=[channel("up", fake.url, ["gpt-4o-mini"], groups=["team", "default"])],
        tokens=[
            token("alice", a, group="team"),
            token("bob", b, group="team"),
            token("carol", other),
        ],
        groups=[{"name": "team", "budget_usd": budget_for(5), "budget_period": "month"}],
        prices=[PRICE],
    )
    statuses = [post(gw.url, (a, b)[i % 2], BODY)[0] for i in range(5)]
    assert statuses == [200] * 5
    for k in (a, b):
        status, _, body = post(gw.url, k, BODY)
        assert status == 402
        err = json.loads(body)["error"]
        assert err["code"] == "budget_exceeded"
        assert "team" in err["message"]
    # A key outside the group is not touched by the group's budget.
    assert post(gw.url, other, BODY)[0] == 200
    # Anthropic ingress: the same refusal in Anthropic's shape.
    client = anthropic.Anthropic(api_key=a, base_url=gw.url, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(
            model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.status_code == 402
    assert exc.value.body["error"]["type"] == "billing_error"
    assert metric(gw.url, "fastgate_budget_exceeded_total") >= 3


def test_key_budget_without_redis_memory_backend(make_gateway, make_fake, tmp_path: Path) -> None:
    """One instance, the SQLite store: exact on one worker; the spend survives a restart."""
    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    key = make_key()
    text = gateway_config(
        [channel("up", fake.url, ["gpt-4o-mini"])],
        [token("app", key, budget_usd=budget_for(3), budget_period="week")],
        prices=[PRICE],
        extra='[database]\nurl = "sqlite:///' + str(tmp_path / "state.db") + '"\n',
    )
    gw = make_gateway(text)
    assert [post(gw.url, key, BODY)[0] for _ in range(5)] == [200, 200, 200, 402, 402]
    assert gw.stop() == 0
    gw = make_gateway(text)
    assert post(gw.url, key, BODY)[0] == 402
    assert len(fake.requests) == 3


def test_cli_and_admin_show_and_change_budgets(make_gateway, make_fake, tmp_path: Path) -> None:
    """`fastgate token create/update/show/enable`, `group create/update/list` and the
    admin API's PATCH / GET on the store a running gateway serves from."""
    from tests.functional.test_durable_e2e import admin, admin_toml, admin_url

    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    text = gateway_config(
        [channel("up", fake.url, ["gpt-4o-mini"], groups=["default", "team"])],
        [],
        prices=[PRICE],
        extra='[database]\nurl = "sqlite:///' + str(tmp_path / "state.db") + '"\n' + admin_toml(),
    )
    gw = make_gateway(text)
    base = admin_url(gw)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])

    def cli(*args: str) -> str:
        cmd = [sys.executable, "-m", "fastgate", *args, "--config", str(gw.config_path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    created = json.loads(
        cli(
            "token",
            "create",
            "app",
            "--budget-usd",
            str(budget_for(2)),
            "--budget-period",
            "day",
            "--json",
        )
    )
    key = created["key"]

    def served(k: str = key, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while True:  # a store write reaches the gateway within its refresh interval
            status = post(gw.url, k, BODY)[0]
            if status != 401 or time.monotonic() > deadline:
                return status
            time.sleep(0.1)

    assert [served(), served(), served()] == [200, 200, 402]
    shown = ""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the spend is written behind within 0.5 s
        shown = cli("token", "show", "app")
        if f"${2 * COST / 1e6:.4f}" in shown:
            break
        time.sleep(0.2)
    assert f"budget: ${2 * COST / 1e6:.4f} / ${budget_for(2):.6f} per day" in shown, shown
    status, doc = admin("GET", base, "/admin/tokens/app")
    assert status == 200
    assert doc["budget_spent_usd"] == pytest.approx(2 * COST / 1e6)
    assert (doc["budget_usd"], doc["budget_period"]) == (budget_for(2), "day")

    # Raised through the admin API: served again; lowered through the CLI: refused.
    status, doc = admin("PATCH", base, "/admin/tokens/app", {"budget_usd": budget_for(3)})
    assert status == 200 and doc["budget_usd"] == budget_for(3)
    assert served_after_change(lambda: post(gw.url, key, BODY)[0], 200)
    out = cli("token", "update", "app", "--budget-usd", "0")
    assert "budget: $" in out
    assert served_after_change(lambda: post(gw.url, key, BODY)[0], 402)
    cli("token", "update", "app", "--budget-usd", "-1")  # no budget at all
    assert served_after_change(lambda: post(gw.url, key, BODY)[0], 200)
    cli("token", "revoke", "app")
    assert served_after_change(lambda: post(gw.url, key, BODY)[0], 403)
    cli("token", "enable", "app")
    assert served_after_change(lambda: post(gw.url, key, BODY)[0], 200)

    # A team's budget, set and shown by the group commands.
    cli("group", "create", "team", "--budget-usd", str(budget_for(1)), "--budget-period", "week")
    member = json.loads(cli("token", "create", "member", "--group", "team", "--json"))["key"]
    assert [served(member), served(member)] == [200, 402]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = cli("group", "list")
        if f"${COST / 1e6:.4f} / " in listed:
            break
        time.sleep(0.2)
    assert f"${COST / 1e6:.4f} / ${budget_for(1):.6f} per week" in listed, listed
    cli("group", "update", "team", "--budget-usd", str(budget_for(2)))
    assert served_after_change(lambda: post(gw.url, member, BODY)[0], 200)
    status, doc = admin("GET", base, "/admin/groups/team")
    assert status == 200 and doc["budget_period"] == "week"


def served_after_change(call: Any, want: int, timeout: float = 5.0) -> bool:
    """`call()` answers `want` within `timeout` (a store change reaches the gateway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if call() == want:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_budget_when_redis_goes_away(
    pg_db: str, redis_prefix: str, make_gateway, make_fake, on_error: str
) -> None:
    """Near a budget the admission needs Redis: "closed" answers 503 while Redis is
    gone; "open" decides on the worker's own copy (exact on one worker) and adds
    the costs Redis missed once it is back."""
    import redis

    from tests.fleet import Relay

    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    relay = Relay(6379)
    key = make_key()
    text = fleet_text(
        fake.url,
        [token("app", key, budget_usd=budget_for(4), budget_period="day")],
        redis_prefix,
        pg_db,
        redis=redis_url(relay.port),
        on_error=on_error,
    )
    try:
        gw = make_gateway(text)
        assert post(gw.url, key, BODY)[0] == 200
        time.sleep(0.3)  # the first cost reached Redis
        relay.cut()
        if on_error == "closed":
            status, _, body = post(gw.url, key, BODY)
            assert (status, error_code(body)) == (503, "service_unavailable")
            relay.restore()
            assert served_after_change(lambda: post(gw.url, key, BODY)[0], 200)
            return
        statuses = [post(gw.url, key, BODY)[0] for _ in range(5)]
        assert statuses == [200, 200, 200, 402, 402]
        relay.restore()
        r = redis.Redis.from_url(redis_url())
        try:
            deadline = time.monotonic() + 5
            total = 0
            while time.monotonic() < deadline:
                (name,) = list(r.scan_iter(match=redis_prefix + "budget:*")) or [None]
                total = int(r.get(name) or 0) if name else 0
                if total >= 4 * COST:
                    break
                time.sleep(0.1)
            assert total == 4 * COST
        finally:
            r.close()
    finally:
        relay.close()


def test_client_that_leaves_while_its_answer_waits_for_the_budget_count(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    """Near a budget the answer's end waits for the fleet's counter; a client that
    closes its connection meanwhile costs nothing but its own answer: the request
    is recorded once (served: the upstream answered), the gateway goes on."""
    import socket

    from tests.fleet import Relay

    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    relay = Relay(REDIS_PORT, delay=0.3)  # the counter's add takes >= 0.6 s
    key, other = make_key(), make_key()
    text = fleet_text(
        fake.url,
        [
            token("app", key, budget_usd=budget_for(3), budget_period="day"),
            token("other", other),
        ],
        redis_prefix,
        pg_db,
        redis=redis_url(relay.port),
    )
    body = json.dumps(BODY).encode()

    def request(k: str, rid: bytes) -> bytes:
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer " + k.encode() + b"\r\nx-request-id: " + rid + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )

    try:
        gw = make_gateway(text)
        # Pipelined behind an answer held for the count, the next request's answer
        # comes after it, never before.
        with socket.create_connection((gw.host, gw.port), timeout=5) as s:
            s.sendall(request(key, b"held-1"))
            deadline = time.monotonic() + 5
            while not fake.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # answered upstream, held for the count
            s.sendall(request(other, b"next-2"))  # pipelined meanwhile
            got = b""
            while got.count(b"HTTP/1.1 200") < 2:
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
        assert got.index(b"x-request-id: held-1") < got.index(b"x-request-id: next-2")
        seen = len(fake.requests)
        with socket.create_connection((gw.host, gw.port), timeout=5) as s:
            s.sendall(request(key, b"left-3"))
            deadline = time.monotonic() + 5
            while len(fake.requests) == seen and time.monotonic() < deadline:
                time.sleep(0.01)  # the upstream has it (its fresh read took ~0.6 s)
            time.sleep(0.1)  # answered by the upstream; the answer waits for the count
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(65536)  # nothing of the answer yet
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # closed with a reset, while the answer was held
        assert post(gw.url, other, BODY)[0] == 200  # the worker goes on
        recs = gw.wait_records(4)
        mine = [r for r in recs if r["key_name"] == "app"]
        assert [(r["status"], r["cost_micros"]) for r in mine] == [(200, COST)] * 2
        assert post(gw.url, key, BODY)[0] == 200  # the last of its 3, each counted once
        assert post(gw.url, key, BODY)[0] == 402
        assert "Traceback" not in gw.stderr_text()
    finally:
        relay.close()
