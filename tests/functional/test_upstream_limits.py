"""Upstream rate limits learned from the provider's headers: a channel whose budget
is at 0 (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*) or that answered
429 (retry-after in seconds or as an HTTP date, retry-after-ms) is skipped until
its reset, without waiting for a 429; with the redis backend every instance
learns it; visible in the admin status and in /metrics."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from email.utils import format_datetime

import anthropic
import openai

from tests.fakes.base import Fail, Ok
from tests.fleet import get, metric, post
from tests.functional.test_durable_e2e import ADMIN_TOKEN, admin_toml, admin_url
from tests.harness import channel, gateway_config, make_key, token

MSGS = [{"role": "user", "content": "hello"}]
BODY = {"model": "gpt-4o-mini", "messages": MSGS}


def two_channels(first_url: str, second_url: str, **first: object) -> list[dict]:
    return [
        channel("first", first_url, ["gpt-4o-mini"], priority=10, **first),
        channel("second", second_url, ["gpt-4o-mini"], priority=0),
    ]


def admin_status(gw: object) -> dict:
    req = urllib.request.Request(
        admin_url(gw) + "/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_openai_remaining_zero_skips_the_channel_until_its_reset(make_gateway, make_fake) -> None:
    first, second = make_fake("first"), make_fake("second")
    first.script(
        Ok(
            headers={
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "90000",
                "x-ratelimit-reset-tokens": "20ms",
            }
        )
    )
    key = make_key()
    gw = make_gateway(
        gateway_config(two_channels(first.url, second.url), [token("app", key)], extra=admin_toml())
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)  # served by "first"
    assert len(first.requests) == 1
    status = admin_status(gw)
    assert 0 < status["cooldowns"]["first"] <= 1.5
    assert metric(gw.url, "fastgate_channel_cooldown_seconds") > 0
    assert metric(gw.url, "fastgate_upstream_cooldowns_total") == 1
    for _ in range(3):  # no 429 needed: "first" is skipped until its reset
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    assert len(first.requests) == 1
    assert len(second.requests) == 3
    time.sleep(1.6)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert len(first.requests) == 2
    assert "first" not in admin_status(gw)["cooldowns"]


def test_anthropic_remaining_zero_uses_the_rfc3339_reset(
    make_gateway, fake_anthropic, make_fake
) -> None:
    spare = make_fake("spare")
    reset = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake_anthropic.script(
        Ok(
            headers={
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": reset,
            }
        )
    )
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [
                channel(
                    "claude", fake_anthropic.url, ["claude-3-5-haiku"], type="anthropic", priority=5
                ),
                channel("spare", spare.url, ["claude-3-5-haiku"]),
            ],
            [token("app", key)],
            extra=admin_toml(),
        )
    )
    ac = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    ac.messages.create(model="claude-3-5-haiku", max_tokens=16, messages=MSGS)
    ac.messages.create(model="claude-3-5-haiku", max_tokens=16, messages=MSGS)
    assert len(fake_anthropic.requests) == 1
    assert len(spare.requests) == 1
    assert 25 < admin_status(gw)["cooldowns"]["claude"] <= 30


def test_429_retry_after_as_http_date_and_in_ms(make_gateway, make_fake) -> None:
    first, second = make_fake("first"), make_fake("second")
    date = format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40), usegmt=True)
    first.script(Fail(429, retry_after=date))
    key = make_key()
    gw = make_gateway(
        gateway_config(two_channels(first.url, second.url), [token("app", key)], extra=admin_toml())
    )
    assert post(gw.url, key, BODY)[0] == 200  # 429 from "first", served by "second"
    assert 35 < admin_status(gw)["cooldowns"]["first"] <= 40
    assert post(gw.url, key, BODY)[0] == 200
    assert len(first.requests) == 1

    third, fourth = make_fake("third"), make_fake("fourth")
    third.script(Fail(429, retry_after="30", headers={"retry-after-ms": "800"}))
    gw2 = make_gateway(
        gateway_config(two_channels(third.url, fourth.url), [token("app", key)], extra=admin_toml())
    )
    assert post(gw2.url, key, BODY)[0] == 200
    assert admin_status(gw2)["cooldowns"]["first"] <= 0.8  # retry-after-ms wins
    time.sleep(0.9)
    assert post(gw2.url, key, BODY)[0] == 200
    assert len(third.requests) == 2


def test_exhaustion_seen_by_one_instance_is_known_to_the_other(
    make_gateway, make_fake, redis_prefix: str
) -> None:
    first, second = make_fake("first"), make_fake("second")
    first.script(
        Ok(headers={"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s"})
    )
    key = make_key()
    text = gateway_config(
        two_channels(first.url, second.url),
        [token("app", key)],
        extra=f'[ratelimit]\nbackend = "redis"\nkey_prefix = "{redis_prefix}"\n',
    )
    a = make_gateway(text)
    b = make_gateway(text, args=["--workers", "2"])
    assert post(a.url, key, BODY)[0] == 200
    time.sleep(0.3)
    for _ in range(4):
        assert post(b.url, key, BODY)[0] == 200
    assert len(first.requests) == 1
    assert len(second.requests) == 4
    _, body = get(b.url, "/metrics")
    assert b'fastgate_channel_cooldown_seconds{channel="first"}' in body
