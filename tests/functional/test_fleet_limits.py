"""Rate limits and cooldowns held by a fleet through Redis (`[ratelimit] backend =
"redis"`): two instances with two workers each, sharing Redis and Postgres, driven
with requests on fresh connections so that every worker answers some of them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fakes.base import Fail, Ok
from tests.fleet import Relay, metric, post, redis_url
from tests.harness import channel, gateway_config, make_key, token

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def fleet_config(
    upstreams: list[dict[str, Any]],
    tokens: list[dict[str, Any]],
    prefix: str,
    db: str,
    *,
    redis: str = "",
    on_error: str = "open",
) -> str:
    return gateway_config(
        upstreams,
        tokens,
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


def start_fleet(make_gateway: Any, text: str, n: int = 2, workers: int = 2) -> list[Any]:
    return [make_gateway(text, args=["--workers", str(workers)]) for _ in range(n)]


def spread(gws: list[Any], key: str, n: int, body: dict[str, Any] = BODY) -> list[Any]:
    """`n` concurrent requests, alternating instances, each on a fresh connection."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        futs = [pool.submit(post, gws[i % len(gws)].url, key, body) for i in range(n)]
        return [f.result() for f in futs]


def test_key_rpm_is_exact_across_two_instances_of_two_workers(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    fake = make_fake("up")
    key = make_key()
    text = fleet_config(
        [channel("up", fake.url, ["gpt-4o-mini"])],
        [token("app", key, rpm=20)],
        redis_prefix,
        pg_db,
    )
    gws = start_fleet(make_gateway, text)
    results = spread(gws, key, 50)
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(ok) == 20, [r[0] for r in results]
    assert len(limited) == 30
    for _, headers, body in limited:
        assert int(headers["retry-after"]) >= 1
        assert b"rate_limit_exceeded" in body
    assert len(fake.requests) == 20
    for _, headers, _ in ok:  # OpenAI's rate-limit headers on every served response
        assert headers["x-ratelimit-limit-requests"] == "20"
        assert 0 <= int(headers["x-ratelimit-remaining-requests"]) < 20
        assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_max_concurrency_holds_across_the_fleet(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    fake = make_fake("slow")
    fake.behaviour = Ok(first_byte_delay=0.4)
    key = make_key()
    text = fleet_config(
        [channel("slow", fake.url, ["gpt-4o-mini"])],
        [token("app", key, max_concurrency=2)],
        redis_prefix,
        pg_db,
    )
    gws = start_fleet(make_gateway, text)
    results = spread(gws, key, 12)
    served = sum(1 for r in results if r[0] == 200)
    assert served >= 2
    assert all(r[0] in (200, 429) for r in results)
    assert fake.max_in_flight <= 2
    # The slots come back: once the burst is over, the key is served again.
    assert post(gws[1].url, key, BODY)[0] == 200
    assert post(gws[0].url, key, BODY)[0] == 200


def test_channel_rpm_is_shared_by_the_fleet(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    first, second = make_fake("first"), make_fake("second")
    key = make_key()
    text = fleet_config(
        [
            channel("first", first.url, ["gpt-4o-mini"], priority=10, rpm=5),
            channel("second", second.url, ["gpt-4o-mini"], priority=0),
        ],
        [token("app", key)],
        redis_prefix,
        pg_db,
    )
    gws = start_fleet(make_gateway, text)
    results = spread(gws, key, 16)
    assert all(r[0] == 200 for r in results)
    assert len(first.requests) == 5
    assert len(second.requests) == 11


def test_key_tpm_counts_the_tokens_of_every_instance(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    fake = make_fake("up")
    fake.behaviour = Ok(prompt_tokens=30, completion_tokens=10)  # 40 tokens a request
    key = make_key()
    text = fleet_config(
        [channel("up", fake.url, ["gpt-4o-mini"])],
        [token("app", key, tpm=150)],
        redis_prefix,
        pg_db,
    )
    gws = start_fleet(make_gateway, text)
    statuses = []
    for i in range(6):
        statuses.append(post(gws[i % 2].url, key, BODY)[0])
        time.sleep(0.3)  # longer than the worker's sync interval: a settled total
    # 0, 40, 80, 120 tokens before each of the first four: admitted; 160 >= 150: refused.
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_429_seen_by_one_instance_makes_the_other_skip_the_channel(
    pg_db: str, redis_prefix: str, make_gateway, make_fake
) -> None:
    limited, spare = make_fake("limited"), make_fake("spare")
    limited.script(Fail(429, retry_after="30"))
    key = make_key()
    text = fleet_config(
        [
            channel("limited", limited.url, ["gpt-4o-mini"], priority=10),
            channel("spare", spare.url, ["gpt-4o-mini"], priority=0),
        ],
        [token("app", key)],
        redis_prefix,
        pg_db,
    )
    a, b = start_fleet(make_gateway, text)
    assert post(a.url, key, BODY)[0] == 200  # 429 from "limited", then "spare"
    assert len(limited.requests) == 1
    # The news reaches B's workers by Redis pub/sub: wait until B's scrape shows
    # the cooldown (under a loaded CI a fixed 0.3 s was sometimes too short).
    deadline = time.monotonic() + 10
    while metric(b.url, "fastgate_channel_cooldown_seconds") <= 0:
        assert time.monotonic() < deadline, "B never heard of the cooldown"
        time.sleep(0.05)
    time.sleep(0.3)  # the scrape shows the longest of B's workers: let both have it
    for _ in range(6):  # every worker of B knows: "limited" is never tried
        assert post(b.url, key, BODY)[0] == 200
    assert len(limited.requests) == 1
    assert len(spare.requests) == 7


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_redis_outage_fails_open_or_closed_and_recovers(
    pg_db: str, redis_prefix: str, make_gateway, make_fake, on_error: str
) -> None:
    fake = make_fake("up")
    relay = Relay(6379)
    try:
        key = make_key()
        text = fleet_config(
            [channel("up", fake.url, ["gpt-4o-mini"])],
            [token("app", key, rpm=1000)],
            redis_prefix,
            pg_db,
            redis=redis_url(relay.port),
            on_error=on_error,
        )
        (gw,) = start_fleet(make_gateway, text, n=1, workers=1)
        assert post(gw.url, key, BODY)[0] == 200
        relay.cut()
        time.sleep(1.2)  # the lease (1 s) is spent: the next request needs Redis
        statuses = [post(gw.url, key, BODY)[0] for _ in range(3)]
        if on_error == "open":
            assert statuses == [200, 200, 200]
        else:
            assert statuses == [503, 503, 503]
        assert metric(gw.url, "fastgate_redis_errors_total") >= 1
        assert metric(gw.url, "fastgate_redis_outages_total") == 1
        assert "unreachable" in gw.stderr_text()
        relay.restore()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if post(gw.url, key, BODY)[0] == 200 and "reachable again" in gw.stderr_text():
                break
            time.sleep(0.3)
        assert "reachable again" in gw.stderr_text()
        assert post(gw.url, key, BODY)[0] == 200
    finally:
        relay.close()


def test_memory_backend_with_workers_says_limits_are_per_worker(make_gateway, make_fake) -> None:
    fake = make_fake("up")
    key = make_key()
    gw = make_gateway(
        gateway_config([channel("up", fake.url, ["gpt-4o-mini"])], [token("app", key, rpm=5)]),
        args=["--workers", "2"],
    )
    assert "rate limits are per worker" in gw.stderr_text()
    assert 'backend = "redis"' in gw.stderr_text()
