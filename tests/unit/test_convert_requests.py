"""Request conversion: Anthropic <-> hub (OpenAI chat) <-> Gemini.

Expected bodies are written out from the providers' documented request formats, not
produced by the code under test.
"""

from __future__ import annotations

import base64
import copy

import pytest

from fastgate.convert import (
    ConversionError,
    anthropic_request_to_openai,
    convert_request,
    gemini_request_to_openai,
    openai_request_to_anthropic,
    openai_request_to_gemini,
)
from fastgate.convert.common import decode_call_id, encode_call_id

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PDF_B64 = base64.b64encode(b"%PDF-1.4 fake").decode()
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


# ==================================================================================
# Anthropic -> hub
# ==================================================================================


def test_anthropic_basic_fields_to_openai():
    req = {
        "model": "claude-x",
        "max_tokens": 321,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "u-1"},
    }
    assert anthropic_request_to_openai(req) == {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        "max_tokens": 321,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END", "STOP"],
        "user": "u-1",
    }


def test_anthropic_stream_asks_upstream_for_usage():
    req = {
        "model": "m",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    out = anthropic_request_to_openai(req)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_anthropic_max_tokens_field_is_selectable():
    req = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    out = anthropic_request_to_openai(req, max_tokens_field="max_completion_tokens")
    assert out["max_completion_tokens"] == 5
    assert "max_tokens" not in out


def test_anthropic_system_blocks_keep_their_boundaries():
    req = {
        "model": "m",
        "max_tokens": 5,
        "system": [
            {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "two"},
        ],
        "messages": [{"role": "user", "content": "x"}],
    }
    out = anthropic_request_to_openai(req)
    assert out["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
    }


def test_anthropic_images_and_documents_to_openai_parts():
    req = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {
                        "type": "document",
                        "title": "spec.pdf",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": PDF_B64,
                        },
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
                    },
                ],
            }
        ],
    }
    out = anthropic_request_to_openai(req)
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                {
                    "type": "file",
                    "file": {
                        "filename": "spec.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF_B64}",
                    },
                },
                {"type": "text", "text": "plain"},
            ],
        }
    ]


def test_anthropic_tool_round_to_openai_messages():
    req = {
        "model": "m",
        "max_tokens": 50,
        "tools": [
            {"name": "weather", "description": "get weather", "input_schema": WEATHER_SCHEMA},
            {
                "name": "noargs",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "rain"}],
                        "is_error": False,
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    }
    out = anthropic_request_to_openai(req)
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "get weather",
                "parameters": WEATHER_SCHEMA,
            },
        },
        {"type": "function", "function": {"name": "noargs", "parameters": {"type": "object"}}},
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "rain"},
        {"role": "user", "content": "thanks"},
    ]


def test_anthropic_tool_result_with_image_keeps_parts():
    req = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "shot"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "here"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG_B64,
                                },
                            },
                        ],
                    }
                ],
            },
        ],
    }
    out = anthropic_request_to_openai(req)
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert out["messages"][2] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": [
            {"type": "text", "text": "here"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_anthropic_tool_choice(choice, expected):
    req = {
        "model": "m",
        "max_tokens": 5,
        "tools": [{"name": "weather", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": choice,
        "messages": [{"role": "user", "content": "x"}],
    }
    out = anthropic_request_to_openai(req)
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("budget", "effort"),
    [(1024, "low"), (2048, "low"), (5000, "medium"), (8192, "medium"), (20000, "high")],
)
def test_anthropic_thinking_budget_to_reasoning_effort(budget, effort):
    req = {
        "model": "m",
        "max_tokens": 30000,
        "thinking": {"type": "enabled", "budget_tokens": budget},
        "messages": [{"role": "user", "content": "x"}],
    }
    assert anthropic_request_to_openai(req)["reasoning_effort"] == effort


def test_anthropic_adaptive_or_disabled_thinking_sets_no_effort():
    for thinking in ({"type": "adaptive"}, {"type": "disabled"}):
        req = {
            "model": "m",
            "max_tokens": 5,
            "thinking": thinking,
            "messages": [{"role": "user", "content": "x"}],
        }
        assert "reasoning_effort" not in anthropic_request_to_openai(req)


def test_anthropic_output_format_to_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = {
        "model": "m",
        "max_tokens": 5,
        "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
        "messages": [{"role": "user", "content": "x"}],
    }
    out = anthropic_request_to_openai(req)
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert out["reasoning_effort"] == "low"


def test_anthropic_ignored_hints_do_not_fail():
    req = {
        "model": "m",
        "max_tokens": 5,
        "service_tier": "auto",
        "cache_control": {"type": "ephemeral"},
        "messages": [{"role": "user", "content": "x"}],
    }
    assert anthropic_request_to_openai(req)["messages"] == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r.update(container="c1"), "container"),
        (lambda r: r.update(mcp_servers=[{"url": "x"}]), "mcp_servers"),
        (lambda r: r["messages"].append({"role": "assistant", "content": "{"}), "prefill"),
        (lambda r: r["messages"].append({"role": "system", "content": "x"}), "role"),
        (
            lambda r: r.update(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "web_search_20250305",
        ),
        (
            lambda r: r["messages"][0].update(
                content=[{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]
            ),
            "document source type 'url'",
        ),
        (
            lambda r: r["messages"][0].update(
                content=[{"type": "image", "source": {"type": "file", "file_id": "f1"}}]
            ),
            "image source type 'file'",
        ),
        (
            lambda r: r["messages"][0].update(content=[{"type": "search_result", "source": "x"}]),
            "search_result",
        ),
        (lambda r: r.update(thinking={"type": "enabled"}), "budget_tokens"),
        (lambda r: r.update(output_config={"format": {"type": "regex"}}), "json_schema"),
        (lambda r: r.update(messages="hi"), "messages must be an array"),
    ],
)
def test_anthropic_unsupported_features_raise(mutate, needle):
    req = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    mutate(req)
    with pytest.raises(ConversionError, match=needle):
        anthropic_request_to_openai(req)


# ==================================================================================
# hub -> Anthropic
# ==================================================================================


def test_openai_basic_to_anthropic_with_default_max_tokens():
    req = {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "sys one"},
            {"role": "developer", "content": [{"type": "text", "text": "sys two"}]},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": "END",
        "user": "alice",
        "stream": True,
        "stream_options": {"include_usage": True},
        "store": False,
        "n": 1,
    }
    assert openai_request_to_anthropic(req, default_max_tokens=777) == {
        "model": "gpt-x",
        "system": [{"type": "text", "text": "sys one"}, {"type": "text", "text": "sys two"}],
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 777,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "alice"},
        "stream": True,
    }


def test_openai_default_max_tokens_is_4096_and_explicit_wins():
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert openai_request_to_anthropic(dict(base))["max_tokens"] == 4096
    assert openai_request_to_anthropic(dict(base, max_tokens=12))["max_tokens"] == 12
    assert (
        openai_request_to_anthropic(dict(base, max_completion_tokens=34, max_tokens=12))[
            "max_tokens"
        ]
        == 34
    )


def test_openai_single_system_is_a_string():
    req = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
    }
    assert openai_request_to_anthropic(req)["system"] == "s"


def test_openai_tool_messages_become_one_user_turn_with_results_first():
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"A"}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "w", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "and?"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": WEATHER_SCHEMA}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    out = openai_request_to_anthropic(req)
    assert out["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "A"}},
                {"type": "tool_use", "id": "c2", "name": "w", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "c2",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    assert out["tools"] == [{"name": "w", "input_schema": WEATHER_SCHEMA}]
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_openai_tool_history_without_tools_declares_them_uncallable():
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search", "arguments": "{}"},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "search", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
            {"role": "user", "content": "summarize"},
        ],
        "tool_choice": "none",
    }
    out = openai_request_to_anthropic(req)
    assert out["tools"] == [{"name": "search", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "none"}


def test_openai_tool_choice_without_tools_is_not_sent():
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}
    out = openai_request_to_anthropic(req)
    assert "tool_choice" not in out and "tools" not in out


def test_openai_consecutive_same_role_messages_merge():
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": "e"},
        ],
    }
    assert openai_request_to_anthropic(req)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
        },
        {"role": "user", "content": "e"},
    ]


def test_openai_images_and_files_to_anthropic_blocks():
    text_b64 = base64.b64encode(b"hello file").decode()
    req = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": f"data:application/pdf;base64,{PDF_B64}",
                        },
                    },
                    {
                        "type": "file",
                        "file": {
                            "filename": "b.txt",
                            "file_data": f"data:text/plain;base64,{text_b64}",
                        },
                    },
                    {"type": "file", "file": {"filename": "raw.pdf", "file_data": PDF_B64}},
                ],
            }
        ],
    }
    assert openai_request_to_anthropic(req)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.webp"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "hello file"},
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
            "title": "raw.pdf",
        },
    ]


def test_openai_percent_encoded_data_url_becomes_base64():
    req = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/gif,GIF89a%00"}}
                ],
            }
        ],
    }
    block = openai_request_to_anthropic(req)["messages"][0]["content"][0]
    assert block["source"]["media_type"] == "image/gif"
    assert base64.b64decode(block["source"]["data"]) == b"GIF89a\x00"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "w"}}, {"type": "tool", "name": "w"}),
    ],
)
def test_openai_tool_choice_to_anthropic(choice, expected):
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "w"}}],
        "tool_choice": choice,
    }
    out = openai_request_to_anthropic(req)
    assert out["tool_choice"] == expected
    assert out["tools"] == [{"name": "w", "input_schema": {"type": "object"}}]


def test_openai_allowed_tools_filters_the_tool_list():
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b"}},
        ],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": "b"}}],
            },
        },
    }
    out = openai_request_to_anthropic(req)
    assert [t["name"] for t in out["tools"]] == ["b"]
    assert out["tool_choice"] == {"type": "any"}


def test_openai_json_schema_to_output_config():
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }
    assert openai_request_to_anthropic(req)["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }


@pytest.mark.parametrize(("effort", "budget"), [("low", 2048), ("medium", 8192), ("high", 24576)])
def test_openai_reasoning_effort_to_thinking(effort, budget):
    req = {
        "model": "m",
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": effort,
    }
    assert openai_request_to_anthropic(req)["thinking"] == {
        "type": "enabled",
        "budget_tokens": budget,
    }


def test_openai_reasoning_budget_stays_below_max_tokens():
    req = {
        "model": "m",
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "high",
    }
    assert openai_request_to_anthropic(req)["thinking"]["budget_tokens"] == 2999
    req["max_tokens"] = 1000
    with pytest.raises(ConversionError, match="1024"):
        openai_request_to_anthropic(req)
    req["reasoning_effort"] = "none"
    assert "thinking" not in openai_request_to_anthropic(req)


def test_openai_harmless_defaults_are_accepted():
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "logprobs": False,
        "logit_bias": {},
        "modalities": ["text"],
        "response_format": {"type": "text"},
        "metadata": {"k": "v"},
        "service_tier": "auto",
        "seed": None,
    }
    out = openai_request_to_anthropic(req)
    assert out["messages"] == [{"role": "user", "content": "x"}]
    assert "output_config" not in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"n": 2}, "n > 1"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"seed": 7}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "x", "format": "wav"}}, "audio"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tool type 'custom'"),
        (
            {
                "tool_choice": {"type": "custom", "custom": {"name": "x"}},
                "tools": [{"type": "function", "function": {"name": "x"}}],
            },
            "tool_choice",
        ),
    ],
)
def test_openai_unsupported_params_raise_for_anthropic(extra, needle):
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(ConversionError, match=needle):
        openai_request_to_anthropic(req)


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        (
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
                ],
            },
            "audio",
        ),
        ({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}, "file_id"),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}
                ],
            },
            "image/bmp",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}],
            },
            "scheme",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "file", "file": {"file_data": "data:video/mp4;base64,AA"}}],
            },
            "video/mp4",
        ),
        ({"role": "function", "name": "f", "content": "x"}, "function"),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "critic", "content": "x"}, "critic"),
        (
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            "function_call",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                ],
            },
            "not valid JSON",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "JSON object",
        ),
    ],
)
def test_openai_unsupported_content_raises_for_anthropic(message, needle):
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}, message]}
    with pytest.raises(ConversionError, match=needle):
        openai_request_to_anthropic(req)


def test_anthropic_request_survives_a_trip_through_the_hub():
    req = {
        "model": "claude-x",
        "max_tokens": 900,
        "system": "sys",
        "temperature": 0.2,
        "top_k": 5,
        "stop_sequences": ["X"],
        "tools": [{"name": "w", "description": "d", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "w", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q"},
                    {"type": "image", "source": {"type": "url", "url": "https://i/x.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sun"},
                    {"type": "text", "text": "more"},
                ],
            },
        ],
        "stream": True,
        "metadata": {"user_id": "u"},
    }
    back = openai_request_to_anthropic(anthropic_request_to_openai(copy.deepcopy(req)))
    assert back == req


# ==================================================================================
# Gemini -> hub
# ==================================================================================


def test_gemini_request_to_openai_full():
    req = {
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "look"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
                ],
            },
            {"role": "model", "parts": [{"text": "a cat"}]},
            {
                "parts": [
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/dog.jpg"}}
                ]
            },
        ],
        "generationConfig": {
            "temperature": 0.1,
            "topP": 0.7,
            "topK": 3,
            "maxOutputTokens": 99,
            "stopSequences": ["Z"],
            "candidateCount": 2,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
            "seed": 4,
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    assert gemini_request_to_openai(req, "gem", stream=True) == {
        "model": "gem",
        "messages": [
            {"role": "system", "content": "be nice"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
            {"role": "assistant", "content": "a cat"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/dog.jpg"}}],
            },
        ],
        "temperature": 0.1,
        "top_p": 0.7,
        "top_k": 3,
        "max_tokens": 99,
        "stop": ["Z"],
        "n": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "seed": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_gemini_snake_case_fields_are_read():
    req = {
        "system_instruction": {"parts": [{"text": "s"}]},
        "contents": [
            {
                "role": "user",
                "parts": [{"inline_data": {"mime_type": "image/png", "data": PNG_B64}}],
            }
        ],
        "generation_config": {"max_output_tokens": 5, "stop_sequences": ["q"]},
    }
    out = gemini_request_to_openai(req, "g", stream=False)
    assert out["messages"][0] == {"role": "system", "content": "s"}
    assert (
        out["messages"][1]["content"][0]["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"
    )
    assert out["max_tokens"] == 5 and out["stop"] == ["q"]
    assert "stream" not in out


def test_gemini_function_calls_get_ids_and_results_match_by_name():
    req = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "weather", "args": {"city": "A"}},
                        "thoughtSignature": "c2lnMQ==",
                    },
                    {"functionCall": {"name": "time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "time", "response": {"output": "noon"}}},
                    {"functionResponse": {"name": "weather", "response": {"temp": 20}}},
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "weather",
                        "description": "w",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING", "nullable": True}},
                            "propertyOrdering": ["city"],
                        },
                    },
                    {"name": "time", "parametersJsonSchema": {"type": "object"}},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }
    out = gemini_request_to_openai(req, "g", stream=False)
    assistant = out["messages"][1]
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert len(set(ids)) == 2
    assert decode_call_id(ids[0])[1] == "c2lnMQ=="  # the signature rides in the id
    assert decode_call_id(ids[1])[1] is None
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["weather", "time"]
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == ['{"city":"A"}', "{}"]
    assert assistant["content"] is None
    assert out["messages"][2] == {"role": "tool", "tool_call_id": ids[1], "content": "noon"}
    assert out["messages"][3] == {"role": "tool", "tool_call_id": ids[0], "content": '{"temp":20}'}
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "w",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": ["string", "null"]}},
                },
            },
        },
        {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}},
    ]
    assert out["tool_choice"] == "required"


def test_gemini_function_response_matches_by_id_when_given():
    req = {
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"id": "g1", "name": "f", "args": {}}},
                    {"functionCall": {"id": "g2", "name": "f", "args": {"a": 1}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "g2", "name": "f", "response": {"r": 2}}},
                    {"functionResponse": {"id": "g1", "name": "f", "response": {"r": 1}}},
                ],
            },
        ]
    }
    msgs = gemini_request_to_openai(req, "g", stream=False)["messages"]
    assert [c["id"] for c in msgs[1]["tool_calls"]] == ["g1", "g2"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "g2", "content": '{"r":2}'}
    assert msgs[3] == {"role": "tool", "tool_call_id": "g1", "content": '{"r":1}'}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"mode": "AUTO"}, {"tool_choice": "auto", "names": ["a", "b"]}),
        ({"mode": "NONE"}, {"tool_choice": "none", "names": ["a", "b"]}),
        (
            {"mode": "ANY", "allowedFunctionNames": ["b"]},
            {"tool_choice": {"type": "function", "function": {"name": "b"}}, "names": ["b"]},
        ),
        (
            {"mode": "ANY", "allowedFunctionNames": ["a", "b"]},
            {"tool_choice": "required", "names": ["a", "b"]},
        ),
        ({"mode": "AUTO", "allowedFunctionNames": ["a"]}, {"tool_choice": "auto", "names": ["a"]}),
    ],
)
def test_gemini_tool_config_to_tool_choice(config, expected):
    req = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}],
        "toolConfig": {"functionCallingConfig": config},
    }
    out = gemini_request_to_openai(req, "g", stream=False)
    assert out["tool_choice"] == expected["tool_choice"]
    assert [t["function"]["name"] for t in out["tools"]] == expected["names"]


def test_gemini_structured_output_and_thinking():
    schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}
    req = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": schema,
            "thinkingConfig": {"thinkingBudget": 9000},
        },
    }
    out = gemini_request_to_openai(req, "g", stream=False)
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
            },
        },
    }
    assert out["reasoning_effort"] == "high"
    req["generationConfig"] = {
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 0},
    }
    out = gemini_request_to_openai(req, "g", stream=False)
    assert out["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in out
    req["generationConfig"] = {"thinkingConfig": {"thinkingLevel": "LOW"}}
    assert gemini_request_to_openai(req, "g", stream=False)["reasoning_effort"] == "low"


def test_gemini_media_kinds_to_openai_parts():
    req = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                    {"inlineData": {"mimeType": "audio/mpeg", "data": "SUQz"}},
                    {"inlineData": {"mimeType": "application/pdf", "data": PDF_B64}},
                ],
            }
        ]
    }
    parts = gemini_request_to_openai(req, "g", stream=False)["messages"][0]["content"]
    assert parts[0] == {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    assert parts[1] == {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}
    assert parts[2] == {
        "type": "file",
        "file": {"filename": "file.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"},
    }


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r.update(cachedContent="cachedContents/1"), "cachedContent"),
        (lambda r: r.update(tools=[{"googleSearch": {}}]), "googleSearch"),
        (lambda r: r.update(tools=[{"codeExecution": {}}]), "codeExecution"),
        (
            lambda r: r.update(generationConfig={"responseModalities": ["IMAGE"]}),
            "responseModalities",
        ),
        (lambda r: r.update(generationConfig={"responseLogprobs": True}), "responseLogprobs"),
        (lambda r: r.update(generationConfig={"speechConfig": {}}), "speechConfig"),
        (lambda r: r.update(generationConfig={"responseMimeType": "text/x.enum"}), "text/x.enum"),
        (
            lambda r: r.update(toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}}),
            "VALIDATED",
        ),
        (
            lambda r: r["contents"].append(
                {"role": "model", "parts": [{"executableCode": {"code": "1"}}]}
            ),
            "executableCode",
        ),
        (
            lambda r: r["contents"].append(
                {"role": "user", "parts": [{"functionResponse": {"name": "ghost", "response": {}}}]}
            ),
            "no matching functionCall",
        ),
        (
            lambda r: r["contents"].append(
                {
                    "role": "user",
                    "parts": [{"fileData": {"fileUri": "gs://b/x.png", "mimeType": "image/png"}}],
                }
            ),
            "only readable by Gemini",
        ),
        (
            lambda r: r["contents"].append(
                {
                    "role": "user",
                    "parts": [
                        {"fileData": {"fileUri": "https://x/v.mp4", "mimeType": "video/mp4"}}
                    ],
                }
            ),
            "video/mp4",
        ),
        (lambda r: r["contents"].append({"role": "system", "parts": [{"text": "x"}]}), "role"),
        (lambda r: r.update(contents={"parts": []}), "contents must be an array"),
    ],
)
def test_gemini_unsupported_features_raise(mutate, needle):
    req = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    mutate(req)
    with pytest.raises(ConversionError, match=needle):
        gemini_request_to_openai(req, "g", stream=False)


# ==================================================================================
# hub -> Gemini
# ==================================================================================


def test_openai_request_to_gemini_full():
    req = {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "see"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg?size=2"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/noext"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": f"data:application/pdf;base64,{PDF_B64}",
                        },
                    },
                ],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "bye"},
        ],
        "temperature": 0.4,
        "top_p": 0.5,
        "top_k": 7,
        "max_completion_tokens": 100,
        "stop": ["S"],
        "n": 2,
        "seed": 1,
        "presence_penalty": 0.3,
        "frequency_penalty": 0.6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert openai_request_to_gemini(req) == {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "see"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
                    {
                        "fileData": {
                            "fileUri": "https://x.test/a.jpg?size=2",
                            "mimeType": "image/jpeg",
                        }
                    },
                    {"fileData": {"fileUri": "https://x.test/noext"}},
                    {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                    {"inlineData": {"mimeType": "application/pdf", "data": PDF_B64}},
                ],
            },
            {"role": "model", "parts": [{"text": "ok"}]},
            {"role": "user", "parts": [{"text": "bye"}]},
        ],
        "generationConfig": {
            "temperature": 0.4,
            "topP": 0.5,
            "topK": 7,
            "maxOutputTokens": 100,
            "stopSequences": ["S"],
            "candidateCount": 2,
            "seed": 1,
            "presencePenalty": 0.3,
            "frequencyPenalty": 0.6,
        },
    }


def test_openai_tools_to_gemini_with_names_for_results():
    sig_id = encode_call_id("call_x", "c2lnbmF0dXJl")
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": sig_id,
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"A"}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "noon"},
            {"role": "tool", "tool_call_id": sig_id, "content": '{"temp": 3}'},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "w", "description": "wd", "parameters": WEATHER_SCHEMA},
            },
            {"type": "function", "function": {"name": "t"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
    }
    out = openai_request_to_gemini(req)
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "q"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "w", "args": {"city": "A"}},
                    "thoughtSignature": "c2lnbmF0dXJl",
                },
                {"functionCall": {"name": "t", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "t", "response": {"output": "noon"}}},
                {"functionResponse": {"name": "w", "response": {"temp": 3}}},
                {"text": "thanks"},
            ],
        },
    ]
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {"name": "w", "description": "wd", "parametersJsonSchema": WEATHER_SCHEMA},
                {"name": "t"},
            ]
        }
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}
    }


def test_openai_calls_without_signature_get_the_documented_placeholder():
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
        ],
    }
    parts = openai_request_to_gemini(req)["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in parts[1]  # only the first call of a turn carries one
    parts = openai_request_to_gemini(req, thought_signature_fallback=False)["contents"][1]["parts"]
    assert all("thoughtSignature" not in p for p in parts)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "AUTO", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_openai_tool_choice_to_gemini(choice, expected):
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": choice,
    }
    assert openai_request_to_gemini(req)["toolConfig"] == {"functionCallingConfig": expected}


def test_openai_limits_and_tool_choice_without_tools_for_gemini():
    req = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 5,
        "max_tokens": 9,
        "tool_choice": "none",
    }
    out = openai_request_to_gemini(req)
    assert out["generationConfig"] == {"maxOutputTokens": 5}
    assert "toolConfig" not in out


def test_openai_response_format_and_effort_to_gemini():
    schema = {"type": "object", "additionalProperties": False}
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    gc = openai_request_to_gemini(
        dict(
            base,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
    )["generationConfig"]
    assert gc == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    gc = openai_request_to_gemini(dict(base, response_format={"type": "json_object"}))[
        "generationConfig"
    ]
    assert gc == {"responseMimeType": "application/json"}
    gc = openai_request_to_gemini(dict(base, reasoning_effort="medium"))["generationConfig"]
    assert gc == {"thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}}
    gc = openai_request_to_gemini(dict(base, reasoning_effort="none"))["generationConfig"]
    assert gc == {"thinkingConfig": {"thinkingBudget": 0}}


def test_openai_tool_result_with_image_to_gemini_parts():
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "shot", "arguments": ""}}
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "a",
                "content": [
                    {"type": "text", "text": "img"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
        ],
    }
    fr = openai_request_to_gemini(req, thought_signature_fallback=False)["contents"][2]["parts"][0][
        "functionResponse"
    ]
    assert fr == {
        "name": "shot",
        "response": {"output": "img"},
        "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}],
    }


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"logit_bias": {"1": 1}}, "logit_bias"),
        ({"audio": {}}, "audio"),
        ({"response_format": {"type": "grammar"}}, "grammar"),
        ({"tool_choice": {"type": "custom"}}, "tool_choice"),
        ({"reasoning_effort": "extreme"}, "extreme"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "nope", "content": "r"},
                ]
            },
            "matches no tool call",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            },
            "file_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}
                        ],
                    }
                ]
            },
            "wav or mp3",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "file:///etc/x.png"}}
                        ],
                    }
                ]
            },
            "scheme",
        ),
    ],
)
def test_openai_unsupported_params_raise_for_gemini(extra, needle):
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(ConversionError, match=needle):
        openai_request_to_gemini(req)


def test_gemini_request_survives_a_trip_through_the_hub():
    req = {
        "systemInstruction": {"parts": [{"text": "s1"}, {"text": "s2"}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "q"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "calling"},
                    {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "AAEC"},
                ],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "f", "response": {"output": "done"}}}],
            },
        ],
        "generationConfig": {
            "temperature": 0.5,
            "topK": 2,
            "maxOutputTokens": 10,
            "stopSequences": ["x"],
        },
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "f", "description": "d", "parametersJsonSchema": {"type": "object"}}
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    }
    back = openai_request_to_gemini(gemini_request_to_openai(copy.deepcopy(req), "g", stream=True))
    assert back == req


# ==================================================================================
# composition
# ==================================================================================


def test_anthropic_ingress_to_gemini_channel_composes():
    req = {
        "model": "claude-x",
        "max_tokens": 64,
        "system": "sys",
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    out = convert_request(req, "anthropic", "gemini")
    assert out == {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "f", "args": {"a": 1}},
                        "thoughtSignature": "skip_thought_signature_validator",
                    }
                ],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "f", "response": {"output": "r"}}}],
            },
        ],
        "generationConfig": {"maxOutputTokens": 64},
        "tools": [
            {"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}
        ],
    }


def test_gemini_ingress_to_anthropic_channel_composes():
    req = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 20},
    }
    assert convert_request(
        req, "gemini", "anthropic", model="claude-x", stream=True, default_max_tokens=9
    ) == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 20,
        "stream": True,
    }
    req = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert (
        convert_request(req, "gemini", "anthropic", model="c", default_max_tokens=9)["max_tokens"]
        == 9
    )


def test_same_protocol_is_returned_untouched():
    req = {"model": "m", "messages": []}
    assert convert_request(req, "openai", "openai") is req
    with pytest.raises(ValueError, match="unknown protocol"):
        convert_request(req, "openai", "cohere")
    with pytest.raises(ConversionError, match="model"):
        convert_request({"contents": []}, "gemini", "openai")
