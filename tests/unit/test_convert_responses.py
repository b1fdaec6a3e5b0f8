"""Non-stream response conversion, usage mapping (docs/contract.md section 5) and error bodies.

Outputs are also validated against the providers' own SDK models (anthropic, openai,
google-genai), so a shape the SDKs would reject cannot pass.
"""

from __future__ import annotations

import anthropic.types
import openai.types.chat
import orjson
import pytest
from google.genai import types as gtypes

from fastgate.convert import (
    UpstreamProtocolError,
    anthropic_response_to_openai,
    convert_error_body,
    convert_response,
    error_body,
    error_event,
    gemini_response_to_openai,
    openai_response_to_anthropic,
    openai_response_to_gemini,
    usage_from_anthropic,
    usage_from_gemini,
)
from fastgate.convert.common import decode_call_id
from fastgate.convert.errors import parse_error_body
from fastgate.vocab.usage import Usage


def anthropic_message(content, stop_reason="end_turn", usage=None):
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


def chat_completion(message, finish="stop", usage=None):
    return {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-upstream",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


# ==================================================================================
# usage (docs/contract.md section 5)
# ==================================================================================


def test_usage_from_anthropic_counts_cache_in_prompt():
    u = usage_from_anthropic(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 7,
            "output_tokens": 9,
        }
    )
    assert u == Usage(
        prompt_tokens=137, completion_tokens=9, cached_tokens=30, cache_write_tokens=7, found=True
    )
    assert usage_from_anthropic(None) == Usage()


def test_usage_from_gemini_counts_thoughts_as_output():
    u = usage_from_gemini(
        {
            "promptTokenCount": 50,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 12,
            "cachedContentTokenCount": 40,
            "toolUsePromptTokenCount": 3,
            "totalTokenCount": 85,
        }
    )
    assert u == Usage(
        prompt_tokens=53, completion_tokens=32, cached_tokens=40, cache_write_tokens=0, found=True
    )


def test_anthropic_usage_to_openai_per_spec():
    resp = anthropic_message(
        [{"type": "text", "text": "hi"}],
        usage={
            "input_tokens": 100,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 7,
            "output_tokens": 9,
        },
    )
    usage = anthropic_response_to_openai(resp, "pub")["usage"]
    assert usage["prompt_tokens"] == 100 + 30 + 7
    assert usage["prompt_tokens_details"]["cached_tokens"] == 30
    assert usage["prompt_tokens_details"]["cache_write_tokens"] == 7
    assert usage["completion_tokens"] == 9
    assert usage["total_tokens"] == 146


def test_openai_usage_to_anthropic_per_spec():
    resp = chat_completion(
        {"role": "assistant", "content": "x"},
        usage={
            "prompt_tokens": 120,
            "completion_tokens": 8,
            "total_tokens": 128,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    )
    usage = openai_response_to_anthropic(resp, "pub")["usage"]
    assert usage == {
        "input_tokens": 20,
        "output_tokens": 8,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


# ==================================================================================
# Anthropic <-> hub
# ==================================================================================


def test_anthropic_response_to_openai_text_tools_thinking():
    resp = anthropic_message(
        [
            {"type": "thinking", "thinking": "let me see", "signature": "s"},
            {"type": "text", "text": "Calling "},
            {"type": "text", "text": "tools."},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}},
        ],
        stop_reason="tool_use",
    )
    out = anthropic_response_to_openai(resp, "public-model")
    openai.types.chat.ChatCompletion.model_validate(out)
    assert out["model"] == "public-model"
    assert out["object"] == "chat.completion"
    assert out["id"] == "chatcmpl-msg_01abc"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling tools."
    assert choice["message"]["reasoning_content"] == "let me see"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
        }
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_anthropic_stop_reasons(stop, finish):
    out = anthropic_response_to_openai(
        anthropic_message([{"type": "text", "text": "x"}], stop), "m"
    )
    assert out["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_openai_finish_reasons_to_anthropic(finish, stop):
    out = openai_response_to_anthropic(
        chat_completion({"role": "assistant", "content": "x"}, finish), "m"
    )
    assert out["stop_reason"] == stop


def test_openai_response_to_anthropic_blocks():
    resp = chat_completion(
        {
            "role": "assistant",
            "content": "Answer",
            "reasoning_content": "thought",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": [1, 2]}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        "tool_calls",
    )
    out = openai_response_to_anthropic(resp, "claude-public")
    anthropic.types.Message.model_validate(out)
    assert out["id"] == "msg_xyz"
    assert out["model"] == "claude-public"
    assert out["content"] == [
        {"type": "thinking", "thinking": "thought", "signature": ""},
        {"type": "text", "text": "Answer"},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1, 2]}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert out["stop_reason"] == "tool_use"


def test_openai_refusal_to_anthropic_text():
    out = openai_response_to_anthropic(
        chat_completion(
            {"role": "assistant", "content": None, "refusal": "I can't."}, "content_filter"
        ),
        "m",
    )
    assert out["content"] == [{"type": "text", "text": "I can't."}]
    assert out["stop_reason"] == "refusal"


def test_bad_upstream_bodies_raise_protocol_errors():
    with pytest.raises(UpstreamProtocolError):
        anthropic_response_to_openai({"type": "message"}, "m")
    with pytest.raises(UpstreamProtocolError):
        openai_response_to_anthropic({"object": "list"}, "m")
    with pytest.raises(UpstreamProtocolError, match="arguments"):
        openai_response_to_anthropic(
            chat_completion(
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ),
            "m",
        )
    with pytest.raises(UpstreamProtocolError):
        gemini_response_to_openai([], "m")
    with pytest.raises(UpstreamProtocolError):
        openai_response_to_gemini({"choices": None}, "m")


def test_anthropic_response_round_trip_through_hub():
    resp = anthropic_message(
        [
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"k": "v"}},
        ],
        stop_reason="tool_use",
        usage={
            "input_tokens": 11,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 2,
            "output_tokens": 4,
        },
    )
    back = openai_response_to_anthropic(anthropic_response_to_openai(resp, "pub"), "pub")
    assert back == dict(resp, model="pub")


# ==================================================================================
# Gemini <-> hub
# ==================================================================================


def gemini_response(parts, finish="STOP", usage=None, **extra):
    out = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": usage
        or {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
        "modelVersion": "gemini-upstream",
        "responseId": "resp-1",
    }
    out.update(extra)
    return out


def test_gemini_response_to_openai_with_calls_and_thoughts():
    resp = gemini_response(
        [
            {"text": "thinking...", "thought": True},
            {"text": "Let me check."},
            {
                "functionCall": {"name": "weather", "args": {"city": "Lima"}},
                "thoughtSignature": "c2ln",
            },
            {"functionCall": {"name": "time", "args": {}}},
        ],
        usage={
            "promptTokenCount": 40,
            "candidatesTokenCount": 10,
            "thoughtsTokenCount": 5,
            "cachedContentTokenCount": 30,
            "totalTokenCount": 55,
        },
    )
    out = gemini_response_to_openai(resp, "pub")
    openai.types.chat.ChatCompletion.model_validate(out)
    assert out["id"] == "chatcmpl-resp-1"
    choice = out["choices"][0]
    # docs/contract.md section 5: a Gemini function call -> tool_calls
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] == "Let me check."
    assert msg["reasoning_content"] == "thinking..."
    calls = msg["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert [c["function"]["arguments"] for c in calls] == ['{"city":"Lima"}', "{}"]
    assert len({c["id"] for c in calls}) == 2
    assert all(c["id"].startswith("call_") for c in calls)
    assert decode_call_id(calls[0]["id"])[1] == "c2ln"
    assert out["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 15,
        "total_tokens": 55,
        "prompt_tokens_details": {"cached_tokens": 30},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }


def test_gemini_call_ids_are_stable_for_a_response_and_differ_across_responses():
    r1 = gemini_response([{"functionCall": {"name": "f", "args": {}}}], responseId="A1")
    r2 = gemini_response([{"functionCall": {"name": "f", "args": {}}}], responseId="B2")
    id1 = gemini_response_to_openai(r1, "m")["choices"][0]["message"]["tool_calls"][0]["id"]
    assert id1 == gemini_response_to_openai(r1, "m")["choices"][0]["message"]["tool_calls"][0]["id"]
    assert id1 != gemini_response_to_openai(r2, "m")["choices"][0]["message"]["tool_calls"][0]["id"]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
    ],
)
def test_gemini_finish_reasons(reason, finish):
    out = gemini_response_to_openai(gemini_response([{"text": "x"}], reason), "m")
    assert out["choices"][0]["finish_reason"] == finish


def test_gemini_prompt_block_becomes_content_filter():
    resp = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
    }
    out = gemini_response_to_openai(resp, "m")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert out["usage"]["prompt_tokens"] == 3


def test_gemini_multiple_candidates_become_choices():
    resp = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "a"}]},
                "finishReason": "STOP",
                "index": 0,
            },
            {
                "content": {"role": "model", "parts": [{"text": "b"}]},
                "finishReason": "MAX_TOKENS",
                "index": 1,
            },
        ]
    }
    out = gemini_response_to_openai(resp, "m")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_openai_response_to_gemini():
    resp = chat_completion(
        {
            "role": "assistant",
            "content": "Sure",
            "reasoning_content": "hmm",
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"q":1}'},
                }
            ],
        },
        "tool_calls",
        usage={
            "prompt_tokens": 30,
            "completion_tokens": 12,
            "total_tokens": 42,
            "prompt_tokens_details": {"cached_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    )
    out = openai_response_to_gemini(resp, "gem-public")
    gtypes.GenerateContentResponse.model_validate(out)
    assert out == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "hmm", "thought": True},
                        {"text": "Sure"},
                        {"functionCall": {"name": "f", "args": {"q": 1}, "id": "call_7"}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 30,
            "candidatesTokenCount": 8,
            "totalTokenCount": 42,
            "cachedContentTokenCount": 20,
            "thoughtsTokenCount": 4,
        },
        "modelVersion": "gem-public",
        "responseId": "xyz",
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "STOP"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "SAFETY"),
        ("tool_calls", "STOP"),
    ],
)
def test_openai_finish_to_gemini(finish, reason):
    out = openai_response_to_gemini(
        chat_completion({"role": "assistant", "content": "x"}, finish), "m"
    )
    assert out["candidates"][0]["finishReason"] == reason


def test_gemini_response_round_trip_through_hub():
    resp = gemini_response(
        [
            {"text": "t", "thought": True},
            {"text": "hello"},
            {"functionCall": {"name": "f", "args": {"z": None}}, "thoughtSignature": "AAEC"},
        ],
        usage={
            "promptTokenCount": 9,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 5,
            "totalTokenCount": 14,
        },
    )
    back = openai_response_to_gemini(gemini_response_to_openai(resp, "pub"), "pub")
    assert back["usageMetadata"] == resp["usageMetadata"]
    assert back["responseId"] == "resp-1"
    parts = back["candidates"][0]["content"]["parts"]
    assert parts[:2] == resp["candidates"][0]["content"]["parts"][:2]
    assert parts[2]["functionCall"]["name"] == "f" and parts[2]["functionCall"]["args"] == {
        "z": None
    }
    assert parts[2]["thoughtSignature"] == "AAEC"


def test_convert_response_composes_anthropic_to_gemini():
    resp = anthropic_message(
        [{"type": "text", "text": "hey"}],
        usage={"input_tokens": 5, "cache_read_input_tokens": 5, "output_tokens": 2},
    )
    out = convert_response(resp, "anthropic", "gemini", "pub")
    assert out["candidates"][0]["content"]["parts"] == [{"text": "hey"}]
    assert out["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 2,
        "totalTokenCount": 12,
        "cachedContentTokenCount": 5,
    }
    same = {"x": 1}
    assert convert_response(same, "openai", "openai", "m") is same


# ==================================================================================
# error bodies
# ==================================================================================


def test_error_bodies_in_each_protocol():
    assert orjson.loads(
        error_body("openai", 429, "slow down", "rate_limit_error", "rate_limit_exceeded")
    ) == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert orjson.loads(error_body("anthropic", 429, "slow down", "rate_limit_error")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert orjson.loads(error_body("gemini", 429, "slow down")) == {
        "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
    }


@pytest.mark.parametrize(
    ("status", "type_", "anthropic_type", "gemini_status"),
    [
        (400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
        (401, "invalid_request_error", "authentication_error", "UNAUTHENTICATED"),
        (401, None, "authentication_error", "UNAUTHENTICATED"),
        (402, "insufficient_quota_error", "billing_error", "RESOURCE_EXHAUSTED"),
        (403, "permission_error", "permission_error", "PERMISSION_DENIED"),
        (404, "not_found_error", "not_found_error", "NOT_FOUND"),
        (502, "server_error", "api_error", "UNAVAILABLE"),
        (503, "server_error", "overloaded_error", "UNAVAILABLE"),
        (413, "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
        (500, "server_error", "api_error", "INTERNAL"),
        (503, None, "overloaded_error", "UNAVAILABLE"),
        (504, None, "timeout_error", "DEADLINE_EXCEEDED"),
    ],
)
def test_gateway_error_types_per_protocol(status, type_, anthropic_type, gemini_status):
    a = orjson.loads(error_body("anthropic", status, "m", type_))
    assert a["error"]["type"] == anthropic_type
    g = orjson.loads(error_body("gemini", status, "m", type_))
    assert g["error"] == {"code": status, "message": "m", "status": gemini_status}


def test_upstream_errors_convert_between_protocols():
    anth = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert orjson.loads(convert_error_body(anth, 529, "openai")) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    }
    assert orjson.loads(convert_error_body(anth, 529, "gemini")) == {
        "error": {"code": 529, "message": "Overloaded", "status": "UNAVAILABLE"}
    }
    oai = b'{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
    assert orjson.loads(convert_error_body(oai, 401, "anthropic")) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "bad key"},
    }
    gem = b'[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]'
    assert orjson.loads(convert_error_body(gem, 429, "anthropic")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Quota exceeded"},
    }
    assert (
        orjson.loads(convert_error_body(gem, 429, "openai"))["error"]["type"] == "rate_limit_error"
    )
    html = b"<html>502 Bad Gateway</html>"
    assert orjson.loads(convert_error_body(html, 502, "gemini")) == {
        "error": {"code": 502, "message": "<html>502 Bad Gateway</html>", "status": "UNAVAILABLE"}
    }
    assert parse_error_body(b"", 500).message == "upstream returned HTTP 500"


def test_stream_error_events_in_each_format():
    assert error_event("openai", "boom", "server_error") == (
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    )
    assert error_event("anthropic", "boom", "server_error") == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n'
    )
    assert error_event("gemini", "boom", "overloaded_error") == (
        b'data: {"error":{"code":503,"message":"boom","status":"UNAVAILABLE"}}\r\n\r\n'
    )
