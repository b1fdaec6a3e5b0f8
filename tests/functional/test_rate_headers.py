"""x-ratelimit-* headers on served responses of a key with rpm/tpm, on the fast path
(OpenAI -> OpenAI, stream and not), the general path (Anthropic ingress) and with
both backends; and a limited key's refusal after its window is full."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fakes.base import Ok
from tests.harness import channel, gateway_config, make_key, token

MSGS = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_rate_limit_headers_count_down_and_the_window_refuses(
    make_gateway, make_fake, fake_anthropic, redis_prefix: str, backend: str
) -> None:
    up = make_fake("up")
    up.behaviour = Ok(prompt_tokens=20, completion_tokens=5)
    key = make_key()
    extra = ""
    if backend == "redis":
        extra = f'[ratelimit]\nbackend = "redis"\nkey_prefix = "{redis_prefix}"\n'
    gw = make_gateway(
        gateway_config(
            [
                channel("up", up.url, ["gpt-4o-mini"]),
                channel(
                    "claude",
                    fake_anthropic.url,
                    ["claude-3-5-haiku"],
                    type="anthropic",
                ),
            ],
            [token("app", key, rpm=4, tpm=10000)],
            extra=extra,
        )
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSGS)
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "4"
    assert h["x-ratelimit-remaining-requests"] == "3"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert h["x-ratelimit-limit-tokens"] == "10000"
    assert int(h["x-ratelimit-remaining-tokens"]) == 10000  # nothing counted before it
    assert raw.parse().usage.total_tokens == 25

    raw_stream = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSGS, stream=True
    )
    h = raw_stream.headers
    chunks = list(raw_stream.parse())
    assert chunks
    assert h["x-ratelimit-remaining-requests"] == "2"

    ac = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    raw_msg = ac.messages.with_raw_response.create(
        model="claude-3-5-haiku", max_tokens=16, messages=MSGS
    )
    assert raw_msg.headers["x-ratelimit-remaining-requests"] == "1"
    assert int(raw_msg.headers["x-ratelimit-remaining-tokens"]) < 10000  # earlier tokens

    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert int(exc.value.response.headers["retry-after"]) >= 1
    assert len(up.requests) == 3
