"""The price model (gateway/billing.py) and the usage estimator (scan/estimate.py),
sans-IO. Expected figures are written out by hand from docs/contract.md section 5 (pico-dollars
per token = USD per 1M x 1e6; one rounding, half up, to micro-dollars)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgate.config import parse_config
from fastgate.gateway.billing import cost_micros, price_table
from fastgate.scan.estimate import estimate_usage, prompt_chars, response_chars
from fastgate.vocab.usage import Usage

M = 1_000_000


def table(*prices: dict) -> dict:
    return price_table(parse_config({"prices": list(prices)}).prices)


def usage(p: int, c: int, read: int = 0, write: int = 0, tier: str = "") -> Usage:
    return Usage(p, c, read, write, True, tier)


TIERED = {
    "input": 3.0,
    "output": 6.0,
    "tiers": [
        {"up_to": 10, "input": 1.0, "output": 2.0, "cache_read": 0.5, "cache_write": 1.5},
        {"up_to": 20, "input": 2.0, "output": 4.0},
    ],
}


def test_whole_tiers_price_every_token_at_the_prompts_tier() -> None:
    price = table({"model": "m", **TIERED})["m"]
    assert cost_micros(price, usage(10, 5, read=4, write=2)) == (4 * 1 + 2 + 1.5 * 2 + 5 * 2)
    # 11..20: the second tier; its cache prices default to its input price (none above)
    assert cost_micros(price, usage(11, 5, read=4)) == 7 * 2 + 4 * 2 + 5 * 4
    # over the last up_to: the entry's own prices
    assert cost_micros(price, usage(21, 5)) == 21 * 3 + 5 * 6


def test_segmented_tiers_price_each_slice_cached_prefix_first() -> None:
    price = table({"model": "m", **TIERED, "tier_mode": "segmented"})["m"]
    # 25 tokens: 6 read, 2 written, 17 uncached. Positions 0-5 read @0.5, 6-7 written
    # @1.5, 8-9 uncached @1 (tier 1); 10-19 uncached @2; 20-24 uncached @3; output @6.
    pico = 6 * M // 2 + 2 * 3 * M // 2 + 2 * M + 10 * 2 * M + 5 * 3 * M + 4 * 6 * M
    assert cost_micros(price, usage(25, 4, read=6, write=2)) == (pico + M // 2) // M
    # a cached prefix crossing a boundary: 12 read = 10 @0.5 + 2 @ tier 2's input (2.0)
    pico = 10 * M // 2 + 2 * 2 * M + 3 * 2 * M + 1 * 4 * M
    assert cost_micros(price, usage(15, 1, read=12)) == (pico + M // 2) // M


def test_multipliers_by_reported_service_tier_and_one_rounding() -> None:
    price = table(
        {
            "model": "m",
            "input": 0.15,
            "output": 0.6,
            "priority_multiplier": 1.7,
            "batch_multiplier": 0.5,
        }
    )["m"]
    pico = 333 * 150_000 + 77 * 600_000  # 96_150_000 pico = 96.15 micro
    for tier, mult in (("", M), ("default", M), ("priority", 1_700_000), ("flex", M // 2)):
        want = (pico * 1_500_000 * mult + 5 * 10**17) // 10**18
        assert cost_micros(price, usage(333, 77, tier=tier), 1_500_000) == want
    assert cost_micros(price, usage(333, 77, tier="batch")) == (pico * M // 2 + M**2 // 2) // M**2


def test_alias_shares_the_whole_price_and_broken_chains_have_none() -> None:
    prices = table(
        {"model": "a", **TIERED, "tier_mode": "segmented", "priority_multiplier": 2.0},
        {"model": "b", "alias_of": "a"},
    )
    assert prices["b"] == prices["a"]
    # chains (possible between file and store entries) are followed; loops are no price
    from fastgate.config.model import PriceConfig

    chain = price_table(
        [
            PriceConfig("x", input=1.0),
            PriceConfig("y", alias_of="x"),
            PriceConfig("z", alias_of="y"),
            PriceConfig("p", alias_of="q"),
            PriceConfig("q", alias_of="p"),
        ]
    )
    assert chain["z"] == chain["x"] and "p" not in chain and "q" not in chain


def test_price_config_refusals() -> None:
    with pytest.raises(Exception, match=r"tier_mode: \"segmented\" needs tiers"):
        parse_config({"prices": [{"model": "m", "input": 1, "tier_mode": "segmented"}]})
    with pytest.raises(Exception, match="cannot be combined with priority_multiplier"):
        parse_config(
            {
                "prices": [
                    {"model": "m", "input": 1},
                    {"model": "n", "alias_of": "m", "priority_multiplier": 2},
                ]
            }
        )


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_segmented_equals_whole_when_every_tier_has_one_price(p: int, c: int, read: int) -> None:
    same = {"input": 2.0, "output": 3.0, "cache_read": 1.0}
    tiers = [{"up_to": 1000, **same}, {"up_to": 5000, **same}]
    whole = table({"model": "m", **same, "tiers": tiers})["m"]
    seg = table({"model": "m", **same, "tiers": tiers, "tier_mode": "segmented"})["m"]
    u = usage(p + read, c, read=read)
    assert cost_micros(whole, u) == cost_micros(seg, u)


# --------------------------------------------------------------------------- estimator


def test_prompt_chars_count_text_fields_only() -> None:
    body = (
        b'{"model":"m","messages":[{"role":"system","content":"abcd"},'
        b'{"role":"user","content":[{"type":"text","text":"efgh"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},'
        b'{"role":"assistant","tool_calls":[{"id":"c1","type":"function",'
        b'"function":{"name":"f","arguments":"{}"}}]}],"max_tokens":10}'
    )
    assert prompt_chars(body) == 4 + 4 + 1 + 2  # contents, function name and args


def test_response_chars_stream_and_body() -> None:
    sse = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\n'
        b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"a\\":1}"}}]}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert response_chars(sse, True) == 5 + 7
    anthropic = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":'
        b'{"type":"text_delta","text":"abc"}}\n\n'
    )
    assert response_chars(anthropic, True) == 3
    responses = (
        b'data: {"type":"response.output_text.delta","delta":"abcd"}\n\n'
        b'data: {"type":"response.output_text.done","text":"abcd"}\n\n'
    )
    assert response_chars(responses, True) == 4
    body = b'{"content":[{"type":"text","text":"hi"},{"type":"tool_use","input":{"x":1}}]}'
    assert response_chars(body, False) == 2 + len('{"x":1}')
    # a body the sample cut: the strings found, the last one unterminated
    assert response_chars(b'{"choices":[{"message":{"content":"abc\\"de', False) == 6


def test_estimate_scales_a_sample_and_keeps_a_partial_input_count() -> None:
    req = b'{"messages":[{"role":"user","content":"12345678"}]}'
    sample = b'{"choices":[{"message":{"content":"' + b"x" * 40
    u = estimate_usage(b"/v1/chat/completions", req, False, [sample], 2 * len(sample), Usage())
    assert (u.prompt_tokens, u.completion_tokens, u.estimated) == (2, 20, True)
    partial = Usage(30, 1, 10, 5, True, "priority", partial=True)
    u = estimate_usage(b"/v1/messages", req, True, b"", 0, partial)
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (30, 10, 5)
    assert (u.completion_tokens, u.service_tier) == (0, "priority")
    # not a generation endpoint: nothing is made up
    none = Usage()
    assert estimate_usage(b"/v1/moderations", req, False, b"{}", 2, none) is none
