"""The usage codec (`fastgate.vocab.usage`): one coercion rule, every protocol's shape.

The disagreements issue 7 names are settled here: floats, `total_tokens`-only
usage and `input_tokens`/`output_tokens` on OpenAI routes read the same way
whichever path (passthrough scanner, converter, mock) reads them.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgate.convert import convert_response
from fastgate.vocab.usage import (
    Usage,
    anthropic_usage_dict,
    count,
    estimate_tokens,
    gemini_thoughts_tokens,
    gemini_usage_dict,
    merge_anthropic_usage,
    openai_reasoning_tokens,
    openai_usage_dict,
    responses_usage_dict,
    usage_from_anthropic,
    usage_from_bedrock,
    usage_from_gemini,
    usage_from_ollama,
    usage_from_openai,
)

# -- the coercion rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        (0, 0),
        (-3, 0),
        (12.0, 12),  # integral float: its value
        (12.9, 12),  # fractional: truncated, never rounded up
        (0.5, 0),
        (-1.5, 0),
        (math.nan, 0),
        (math.inf, 0),
        (1e18, 0),  # absurd
        (True, 0),  # bools are not counts
        (False, 0),
        ("12", 0),  # strings are not counts
        (None, 0),
        ([1], 0),
        ({"a": 1}, 0),
    ],
)
def test_count_rule(value: object, expected: int) -> None:
    assert count(value) == expected
    assert type(count(value)) is int


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.text()))
def test_count_is_a_non_negative_int_never_above_the_value(value: object) -> None:
    n = count(value)
    assert type(n) is int and n >= 0
    if n:
        assert n <= value  # type: ignore[operator]


def test_every_codec_applies_the_same_rule_to_floats_and_junk() -> None:
    # floats were truncated on the OpenAI passthrough but read as 0 by every
    # converter's private copy; now they are truncated everywhere
    assert usage_from_openai({"prompt_tokens": 10.0, "completion_tokens": 3.7}) == Usage(
        10, 3, 0, 0, True
    )
    assert usage_from_anthropic({"input_tokens": 10.0, "output_tokens": 3.7}) == Usage(
        10, 3, 0, 0, True
    )
    assert usage_from_gemini({"promptTokenCount": 10.0, "candidatesTokenCount": 3.7}) == Usage(
        10, 3, 0, 0, True
    )
    assert usage_from_bedrock({"inputTokens": 10.0, "outputTokens": 3.7}) == Usage(
        10, 3, 0, 0, True
    )
    assert usage_from_ollama({"prompt_eval_count": 10.0, "eval_count": 3.7}) == Usage(
        10, 3, 0, 0, True
    )
    junk = {"prompt_tokens": "7", "completion_tokens": True, "input_tokens": -1}
    assert usage_from_openai(junk) == Usage(0, 0, 0, 0, True)


def test_no_usage_object_is_not_found() -> None:
    for fn in (usage_from_openai, usage_from_anthropic, usage_from_gemini, usage_from_bedrock):
        assert fn(None) == Usage()
        assert fn([1, 2]) == Usage()
    assert usage_from_ollama({"done": True}) == Usage()


# -- usage_from_openai ---------------------------------------------------------------


def from_obj(obj: dict) -> Usage:
    u = Usage()
    usage_from_openai(obj, u)
    return u


def test_chat_usage_with_details() -> None:
    obj = {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 10},
    }
    assert from_obj(obj) == Usage(1200, 80, 1024, 0, True)


def test_responses_usage_shape() -> None:
    obj = {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 42,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 542,
    }
    assert from_obj(obj) == Usage(500, 42, 256, 0, True)


def test_embeddings_usage_has_no_completion() -> None:
    assert from_obj({"prompt_tokens": 8, "total_tokens": 8}) == Usage(8, 0, 0, 0, True)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, Usage(0, 0, 0, 0, True)),
        (
            {"prompt_tokens": None, "completion_tokens": None, "prompt_tokens_details": None},
            Usage(0, 0, 0, 0, True),
        ),
        (
            {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": None}},
            Usage(10, 0, 0, 0, True),
        ),
        # a missing side is derived from total_tokens
        ({"completion_tokens": 5, "total_tokens": 12}, Usage(7, 5, 0, 0, True)),
        ({"prompt_tokens": 9, "total_tokens": 12}, Usage(9, 3, 0, 0, True)),
        # garbage types count as 0, floats are truncated
        ({"prompt_tokens": "12", "completion_tokens": True}, Usage(0, 0, 0, 0, True)),
        ({"prompt_tokens": 12.0, "completion_tokens": -3}, Usage(12, 0, 0, 0, True)),
        # DeepSeek's cache field, OpenRouter's cache-write field
        (
            {"prompt_tokens": 100, "completion_tokens": 1, "prompt_cache_hit_tokens": 64},
            Usage(100, 1, 64, 0, True),
        ),
        (
            {
                "prompt_tokens": 194,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 100},
            },
            Usage(194, 2, 0, 100, True),
        ),
    ],
)
def test_missing_null_and_odd_fields(obj: dict, expected: Usage) -> None:
    assert from_obj(obj) == expected


def test_each_call_overwrites_every_field() -> None:
    u = Usage()
    usage_from_openai(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
        u,
    )
    usage_from_openai({"prompt_tokens": 11}, u)
    assert u == Usage(11, 0, 0, 0, True)


def test_into_is_filled_and_returned() -> None:
    u = Usage()
    assert usage_from_openai({"prompt_tokens": 3}, u) is u
    assert u == Usage(3, 0, 0, 0, True)
    assert usage_from_openai("not an object", u) is u and u == Usage(3, 0, 0, 0, True)


# -- total_tokens-only usage, input/output names on OpenAI routes ------------------------


def test_total_tokens_only_counts_as_prompt() -> None:
    # an OpenAI-compatible server that reports only total_tokens: the missing side
    # is total - the other, so everything is prompt (as embeddings report it)
    assert usage_from_openai({"total_tokens": 12}) == Usage(12, 0, 0, 0, True)
    assert usage_from_openai({"total_tokens": 12.0}) == Usage(12, 0, 0, 0, True)
    assert usage_from_openai({"total_tokens": 12, "prompt_tokens": 20}) == Usage(20, 0, 0, 0, True)


def test_input_and_output_tokens_on_openai_routes() -> None:
    obj = {"input_tokens": 30, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 8}}
    assert usage_from_openai(obj) == Usage(30, 4, 8, 0, True)
    # the chat names win when both are present
    assert usage_from_openai({"prompt_tokens": 5, "input_tokens": 30}) == Usage(5, 0, 0, 0, True)


@pytest.mark.parametrize(
    ("usage", "anthropic"),
    [
        (
            {"total_tokens": 12},
            {"input_tokens": 12, "output_tokens": 0},
        ),
        (
            {"input_tokens": 30, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 8}},
            {"input_tokens": 22, "output_tokens": 4, "cache_read_input_tokens": 8},
        ),
        (
            {"prompt_tokens": 10.0, "completion_tokens": 2.5},
            {"input_tokens": 10, "output_tokens": 2},
        ),
    ],
)
def test_converter_reads_usage_as_the_passthrough_does(usage: dict, anthropic: dict) -> None:
    """An OpenAI response converted to Anthropic bills what the passthrough would."""
    resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }
    out = convert_response(resp, "openai", "anthropic", "m")
    got = out["usage"]
    for k, v in anthropic.items():
        assert got[k] == v, (k, got)
    assert usage_from_anthropic(got) == usage_from_openai(usage)


# -- Anthropic -------------------------------------------------------------------------


def test_anthropic_prompt_includes_cache_read_and_write() -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 5,
        }
    )
    assert u == Usage(130, 5, 100, 20, True)
    assert anthropic_usage_dict(u) == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }


def test_anthropic_message_start_and_delta_merge() -> None:
    merged: dict = {}
    start = {
        "input_tokens": 10,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": None,
        "output_tokens": 1,
    }
    assert merge_anthropic_usage(merged, start) == Usage(14, 1, 4, 0, True)
    # the delta's output count wins; its null input fields keep the start's
    delta = {"output_tokens": 25, "input_tokens": None, "cache_read_input_tokens": None}
    assert merge_anthropic_usage(merged, delta) == Usage(14, 25, 4, 0, True)
    # a delta that repeats the input counts (newer API versions) replaces them
    assert merge_anthropic_usage(merged, {"input_tokens": 11, "output_tokens": 26}) == Usage(
        15, 26, 4, 0, True
    )
    assert merge_anthropic_usage(merged, "junk") == Usage(15, 26, 4, 0, True)


# -- Gemini, Bedrock, Ollama ---------------------------------------------------------------


def test_gemini_usage_metadata_both_spellings() -> None:
    camel = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 3,
        "toolUsePromptTokenCount": 2,
    }
    snake = {
        "prompt_token_count": 100,
        "cached_content_token_count": 60,
        "candidates_token_count": 7,
        "thoughts_token_count": 3,
        "tool_use_prompt_token_count": 2,
    }
    assert usage_from_gemini(camel) == usage_from_gemini(snake) == Usage(102, 10, 60, 0, True)
    assert gemini_thoughts_tokens(camel) == gemini_thoughts_tokens(snake) == 3
    assert gemini_thoughts_tokens(None) == 0


def test_gemini_usage_dict_reports_reasoning_as_thoughts() -> None:
    u = Usage(100, 10, 60, 0, True)
    assert gemini_usage_dict(u, 3) == {
        "promptTokenCount": 100,
        "candidatesTokenCount": 7,
        "totalTokenCount": 110,
        "cachedContentTokenCount": 60,
        "thoughtsTokenCount": 3,
    }
    assert gemini_usage_dict(Usage(5, 2), 9)["thoughtsTokenCount"] == 2  # never above output


def test_bedrock_and_ollama() -> None:
    assert usage_from_bedrock(
        {"inputTokens": 5, "outputTokens": 3, "cacheReadInputTokens": 2, "cacheWriteInputTokens": 1}
    ) == Usage(8, 3, 2, 1, True)
    assert usage_from_ollama({"eval_count": 4}) == Usage(0, 4, 0, 0, True)


# -- writers ---------------------------------------------------------------------------------


def test_openai_usage_dict() -> None:
    assert openai_usage_dict(Usage(10, 2, 4, 0, True)) == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    d = openai_usage_dict(Usage(10, 2, 4, 3, True), reasoning_tokens=1)
    assert d["prompt_tokens_details"] == {"cached_tokens": 4, "cache_write_tokens": 3}
    assert d["completion_tokens_details"] == {"reasoning_tokens": 1}
    assert openai_reasoning_tokens(d) == 1
    assert openai_reasoning_tokens({"output_tokens_details": {"reasoning_tokens": 2.0}}) == 2
    assert openai_reasoning_tokens(None) == 0


def test_responses_usage_dict_reads_back() -> None:
    d = responses_usage_dict(Usage(9, 4, 2, 0, True))
    assert d == {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 13,
    }
    assert usage_from_openai(d) == Usage(9, 4, 2, 0, True)


usages = st.builds(
    lambda p, c, k, w: Usage(p + k + w, c, k, w, True),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@given(usages)
def test_each_protocol_round_trips(u: Usage) -> None:
    via_json = orjson.loads(orjson.dumps(openai_usage_dict(u)))
    assert usage_from_openai(via_json) == u
    assert usage_from_anthropic(anthropic_usage_dict(u)) == u
    g = Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, 0, True)
    assert usage_from_gemini(gemini_usage_dict(g)) == g


def test_estimate_tokens() -> None:
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("") == 1
    assert estimate_tokens([{"role": "user", "content": "abcdefgh"}]) == 2 + 3
    assert estimate_tokens(42) == 0


def test_usage_record_dataclass_matches_the_tuple_order() -> None:
    import dataclasses

    from fastgate.vocab.record import RECORD_FIELDS, UsageRecord, record_dict

    assert tuple(f.name for f in dataclasses.fields(UsageRecord)) == RECORD_FIELDS
    rec = tuple(range(len(RECORD_FIELDS)))
    assert list(record_dict(rec).values()) == list(rec)
    assert record_dict(list(rec)) == record_dict(rec)
