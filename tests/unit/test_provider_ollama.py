"""Ollama native API: request/response conversion, the NDJSON stream, /api/tags.

Oracles: the official `ollama` Python client (its pydantic types validate the converted
requests, and its own streaming reader parses the fixture streams, so the fixtures are
what an Ollama server sends), the OpenAI and Anthropic SDKs for the converted streams.
Expected values are derived from the inputs, never from the code under test.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx
import httpx2
import ollama
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ollama._types import ChatRequest, Image, Message, Tool

from fastgate.convert import ChainStream, OpenAIToAnthropicStream
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.convert.ollama import (
    OllamaToOpenAIStream,
    finish_from_ollama,
    ollama_response_to_openai,
    openai_request_to_ollama,
    usage_from_ollama,
)
from fastgate.providers.ollama import ollama_tags_to_models

SPLITS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def assert_valid_ollama_request(body: dict[str, Any]) -> None:
    """The official client's types accept the body, message by message and tool by tool."""
    ChatRequest.model_validate(body)
    for m in body["messages"]:
        images = m.get("images")
        if images:  # the client's Image type: base64 strings pass through unchanged
            m = {**m, "images": [Image(value=b) for b in images]}
        sent = Message.model_validate(m).model_dump(exclude_none=True)
        if images:
            assert sent["images"] == images
    for t in body.get("tools", ()):
        Tool.model_validate(t)


# ==================================================================================
# requests
# ==================================================================================

IMG = "iVBORw0KGgo="


def test_full_request_conversion():
    req = {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}},
                    {"type": "text", "text": "this?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "look it up",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Sure?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 40,
        "seed": 7,
        "max_tokens": 100,
        "stop": ["\n\n"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Search",
                    "parameters": {
                        "type": "object",
                        "properties": {"q": {"type": "string"}},
                        "required": ["q"],
                    },
                },
            }
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "user": "u1",
    }
    out = openai_request_to_ollama(req)
    assert out == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "What is this?", "images": [IMG]},
            {
                "role": "assistant",
                "content": "",
                "thinking": "look it up",
                "tool_calls": [
                    {"id": "call_1", "function": {"name": "lookup", "arguments": {"q": "x"}}}
                ],
            },
            {"role": "tool", "content": "a cat", "tool_call_id": "call_1", "tool_name": "lookup"},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Sure?"},
        ],
        "stream": True,
        "options": {
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 40,
            "seed": 7,
            "num_predict": 100,
            "stop": ["\n\n"],
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
        },
        "tools": req["tools"],
        "format": "json",
        "think": "high",
    }
    assert_valid_ollama_request(out)


def test_stream_is_always_explicit_and_minimal_request():
    out = openai_request_to_ollama({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert out == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert_valid_ollama_request(out)


def test_max_completion_tokens_wins_and_json_schema_format():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    out = openai_request_to_ollama(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "o", "schema": schema},
            },
            "reasoning_effort": "none",
        }
    )
    assert out["options"] == {"num_predict": 20}
    assert out["format"] == schema
    assert out["think"] is False
    assert_valid_ollama_request(out)


@pytest.mark.parametrize(
    ("effort", "think"),
    [("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"), ("xhigh", "high")],
)
def test_reasoning_effort_levels(effort, think):
    out = openai_request_to_ollama({"model": "m", "messages": [], "reasoning_effort": effort})
    assert out["think"] == think


def test_tool_choice_none_withholds_tools():
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = openai_request_to_ollama(
        {"model": "m", "messages": [], "tools": tools, "tool_choice": "none"}
    )
    assert "tools" not in out
    out = openai_request_to_ollama({"model": "m", "messages": [], "tools": tools})
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert_valid_ollama_request(out)


def test_tool_result_without_known_call_has_no_tool_name():
    out = openai_request_to_ollama(
        {
            "model": "m",
            "messages": [
                {"role": "tool", "tool_call_id": "zzz", "content": [{"type": "text", "text": "r"}]}
            ],
        }
    )
    assert out["messages"] == [{"role": "tool", "content": "r", "tool_call_id": "zzz"}]


def test_neutral_defaults_are_accepted():
    out = openai_request_to_ollama(
        {
            "model": "m",
            "messages": [],
            "n": 1,
            "logprobs": False,
            "logit_bias": {},
            "parallel_tool_calls": True,
            "response_format": {"type": "text"},
            "metadata": {},
            "temperature": None,
        }
    )
    assert out == {"model": "m", "messages": [], "stream": False}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"n": 3}, "n > 1"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"logprobs": True}, "logprobs"),
        ({"reasoning_effort": "extreme"}, "extreme"),
        ({"response_format": {"type": "grammar"}}, "grammar"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}}, "schema"),
        ({"functions": []}, "legacy"),
        ({"tools": [{"type": "code_interpreter"}]}, "tool type"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "data: URLs",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:text/plain;base64,AA"}}
                        ],
                    }
                ]
            },
            "not an image",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "input_audio",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}, "file"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "video"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}, "image_url"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{bad"},
                            }
                        ],
                    }
                ]
            },
            "valid JSON",
        ),
        ({"messages": [{"role": "assistant", "function_call": {"name": "f"}}]}, "legacy"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "role"),
        ({"messages": {"role": "user"}}, "array"),
    ],
)
def test_unsupported_requests_raise_conversion_error(extra, match):
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(ConversionError, match=re.escape(match)):
        openai_request_to_ollama(req)


# ==================================================================================
# responses and tags
# ==================================================================================


def final_obj(**kw: Any) -> dict[str, Any]:
    obj = {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00.000000Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5_000_000,
        "load_duration": 100,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 200,
        "eval_count": 9,
        "eval_duration": 300,
    }
    obj.update(kw)
    return obj


def test_text_response():
    resp = final_obj(message={"role": "assistant", "content": "Hi there", "thinking": "greet"})
    ollama.ChatResponse.model_validate(resp)
    out = ollama_response_to_openai(resp, "pub")
    assert out["object"] == "chat.completion" and out["model"] == "pub"
    assert out["id"].startswith("chatcmpl-")
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Hi there" and msg["reasoning_content"] == "greet"
    assert "tool_calls" not in msg
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 26 and out["usage"]["completion_tokens"] == 9
    assert out["usage"]["total_tokens"] == 35


def test_tool_call_response_gets_ids_and_json_arguments():
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Toronto", "units": ["c"]}}},
        {"id": "call_up", "function": {"index": 1, "name": "noop", "arguments": {}}},
    ]
    resp = final_obj(message={"role": "assistant", "content": "", "tool_calls": calls})
    ollama.ChatResponse.model_validate(resp)
    out = ollama_response_to_openai(resp, "m")
    msg = out["choices"][0]["message"]
    assert msg["content"] is None
    first, second = msg["tool_calls"]
    assert first["id"].startswith("call_") and second["id"] == "call_up"
    assert first["type"] == "function" and first["function"]["name"] == "get_weather"
    assert json.loads(first["function"]["arguments"]) == {"city": "Toronto", "units": ["c"]}
    assert json.loads(second["function"]["arguments"]) == {}
    assert "index" not in first
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "calls", "finish"),
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("stop", True, "tool_calls"),
        ("load", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_finish_reasons(reason, calls, finish):
    assert finish_from_ollama(reason, calls) == finish


def test_usage_absent_counters_are_not_found():
    assert usage_from_ollama({"done": True}).found is False
    u = usage_from_ollama({"eval_count": 4})
    assert (u.prompt_tokens, u.completion_tokens, u.found) == (0, 4, True)


@pytest.mark.parametrize(
    "resp",
    [
        [],
        {"error": "model 'x' not found"},
        {"done": True},
        {"message": "hi"},
        {"message": {"role": "assistant", "content": 5}},
        {"message": {"role": "assistant", "content": "", "tool_calls": {"a": 1}}},
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"arguments": {}}}],
            }
        },
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": [1]}}],
            }
        },
    ],
)
def test_malformed_responses_raise(resp):
    with pytest.raises(UpstreamProtocolError):
        ollama_response_to_openai(resp, "m")


def test_tags():
    tags = {
        "models": [
            {
                "name": "llama3.2:latest",
                "model": "llama3.2:latest",
                "size": 1,
                "digest": "d",
                "details": {},
            },
            {"model": "qwen3:8b"},
        ]
    }
    ollama.ListResponse.model_validate(tags)
    assert ollama_tags_to_models(tags) == ["llama3.2:latest", "qwen3:8b"]
    assert ollama_tags_to_models({"models": []}) == []
    for bad in ({}, [], {"models": [{}]}, {"models": ["x"]}, {"models": [{"name": 3}]}):
        with pytest.raises(UpstreamProtocolError):
            ollama_tags_to_models(bad)


# ==================================================================================
# streams
# ==================================================================================


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def part(content: str = "", **msg: Any) -> bytes:
    return line(
        {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content, **msg},
            "done": False,
        }
    )


TEXT = ["The", " sky", " is", " blue ✓"]
CALLS = [
    [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    [{"id": "call_x", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}],
]
FULL = (
    part(thinking="Hmm")
    + part(thinking=", sky.")
    + b"".join(part(t) for t in TEXT)
    + b"".join(part("", tool_calls=c) for c in CALLS)
    + line(final_obj())
)


def test_fixture_is_read_by_the_ollama_client():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=FULL, headers={"content-type": "application/x-ndjson"})

    client = ollama.Client(host="http://t", transport=httpx.MockTransport(handler))
    parts = list(
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert "".join(p.message.content or "" for p in parts) == "The sky is blue ✓"
    assert parts[-1].done and parts[-1].eval_count == 9
    assert [c.function.name for p in parts for c in p.message.tool_calls or ()] == [
        "get_weather",
        "get_time",
    ]


def parse_sse(data: bytes) -> list[bytes]:
    out = []
    for block in data.split(b"\n\n"):
        if block:
            assert block.startswith(b"data: "), block
            out.append(block[6:])
    return out


def acc_openai(data: bytes) -> dict[str, Any]:
    res: dict[str, Any] = {
        "content": "",
        "reasoning": "",
        "tools": {},
        "finish": None,
        "usage": None,
        "done": False,
        "errors": [],
        "roles": 0,
    }
    for d in parse_sse(data):
        assert not res["done"], "data after [DONE]"
        if d == b"[DONE]":
            res["done"] = True
            continue
        c = json.loads(d)
        if "error" in c:
            res["errors"].append(c["error"])
            continue
        assert c["object"] == "chat.completion.chunk" and c["id"].startswith("chatcmpl-")
        if "usage" in c:
            assert c["choices"] == []
            res["usage"] = c["usage"]
        for ch in c["choices"]:
            assert res["finish"] is None, "delta after the finish chunk"
            delta = ch["delta"]
            res["roles"] += 1 if delta.get("role") else 0
            res["content"] += delta.get("content") or ""
            res["reasoning"] += delta.get("reasoning_content") or ""
            for tc in delta.get("tool_calls") or []:
                assert tc["index"] not in res["tools"], "whole calls arrive once"
                res["tools"][tc["index"]] = {
                    "id": tc["id"],
                    "name": tc["function"]["name"],
                    "args": json.loads(tc["function"]["arguments"]),
                }
            res["finish"] = ch["finish_reason"] or res["finish"]
    return res


def run(conv, data: bytes, cuts: list[int] | None = None) -> bytes:
    pieces = [data[i : i + 1] for i in range(len(data))] if cuts is None else _cut(data, cuts)
    return b"".join(conv.feed(p) for p in pieces) + conv.close()


def check_full(res: dict[str, Any]) -> None:
    assert res["roles"] == 1
    assert res["reasoning"] == "Hmm, sky."
    assert res["content"] == "".join(TEXT)
    assert [res["tools"][i]["name"] for i in sorted(res["tools"])] == ["get_weather", "get_time"]
    assert res["tools"][0]["args"] == {"city": "Paris"} and res["tools"][1]["args"] == {"tz": "CET"}
    assert res["tools"][1]["id"] == "call_x"
    assert res["tools"][0]["id"].startswith("call_") and res["tools"][0]["id"] != "call_x"
    assert res["finish"] == "tool_calls"
    assert res["done"] and not res["errors"]


def test_full_stream_with_usage():
    conv = OllamaToOpenAIStream("pub", include_usage=True)
    res = acc_openai(conv.feed(FULL) + conv.close())
    check_full(res)
    assert res["usage"]["prompt_tokens"] == 26 and res["usage"]["completion_tokens"] == 9
    assert conv.usage.found and conv.usage.cached_tokens == 0


def test_without_include_usage_usage_is_tracked():
    conv = OllamaToOpenAIStream("pub")
    res = acc_openai(conv.feed(FULL) + conv.close())
    assert res["usage"] is None and res["done"]
    assert (conv.usage.prompt_tokens, conv.usage.completion_tokens) == (26, 9)


@SPLITS
@given(data=st.data())
def test_random_splits(data):
    cuts = data.draw(st.lists(st.integers(0, len(FULL)), max_size=25))
    check_full(acc_openai(run(OllamaToOpenAIStream("m", True), FULL, cuts)))


def test_byte_by_byte():
    check_full(acc_openai(run(OllamaToOpenAIStream("m", True), FULL)))


def test_crlf_blank_lines_and_missing_final_newline():
    data = part("a").replace(b"\n", b"\r\n") + b"\n\n" + part("b") + line(final_obj())[:-1]
    conv = OllamaToOpenAIStream("m")
    out = conv.feed(data)
    assert b"[DONE]" not in out  # the last line waits for its newline or EOF
    res = acc_openai(out + conv.close())
    assert res["content"] == "ab" and res["done"] and res["finish"] == "stop"


def test_length_finish_and_lines_leave_as_they_complete():
    conv = OllamaToOpenAIStream("m")
    first = part("Hel")
    assert conv.feed(first[:-1]) == b""
    assert b'"content":"Hel"' in conv.feed(first[-1:])
    res = acc_openai(conv.feed(line(final_obj(done_reason="length"))) + conv.close())
    assert res["finish"] == "length"


def test_error_line_becomes_openai_error_and_ends():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data)

    data = part("par") + line({"error": "model runner crashed"}) + part("ignored")
    # the official client reads such a line as an error too
    client = ollama.Client(host="http://t", transport=httpx.MockTransport(handler))
    with pytest.raises(ollama.ResponseError, match="crashed"):
        list(client.chat(model="m", messages=[], stream=True))
    res = acc_openai(run(OllamaToOpenAIStream("m", True), data, []))
    assert res["content"] == "par"
    assert res["errors"] == [
        {"message": "model runner crashed", "type": "server_error", "param": None, "code": None}
    ]
    assert not res["done"]


def test_error_event_renders():
    (d,) = parse_sse(OllamaToOpenAIStream("m").error_event("gone"))
    assert json.loads(d)["error"]["message"] == "gone"


@pytest.mark.parametrize("data", [b"", part("a"), part("a") + part("b")[:-5]])
def test_truncated_streams_raise_at_close(data):
    conv = OllamaToOpenAIStream("m")
    conv.feed(data)
    with pytest.raises(UpstreamProtocolError):
        conv.close()


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json}\n",
        b"[1, 2]\n",
        line({"message": "hi", "done": False}),
        line({"message": {"role": "assistant", "content": 3}, "done": False}),
        line(
            {
                "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {}}]},
                "done": False,
            }
        ),
        line({"message": {"role": "assistant", "content": "x"}, "done": "yes"}),
    ],
)
def test_malformed_lines_raise(bad):
    conv = OllamaToOpenAIStream("m")
    with pytest.raises(UpstreamProtocolError):
        conv.feed(bad)
        conv.close()


def test_oversized_lines_raise_with_or_without_newline():
    long = part("x" * 3000)
    with pytest.raises(UpstreamProtocolError, match="over 1024"):
        OllamaToOpenAIStream("m", max_line_bytes=1024).feed(long)
    conv = OllamaToOpenAIStream("m", max_line_bytes=1024)
    with pytest.raises(UpstreamProtocolError, match="over 1024"):
        for i in range(0, 2000, 100):
            conv.feed(long[i : i + 100])


def test_data_after_done_is_ignored():
    conv = OllamaToOpenAIStream("m")
    res = acc_openai(
        conv.feed(part("a") + line(final_obj()) + part("late"))
        + conv.feed(part("later"))
        + conv.close()
    )
    assert res["content"] == "a" and res["done"]


def _mock_client(body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_openai_sdk_reads_converted_stream():
    import openai

    conv = OllamaToOpenAIStream("pub", include_usage=True)
    body = conv.feed(FULL) + conv.close()
    client = openai.OpenAI(api_key="k", base_url="http://t/v1", http_client=_mock_client(body))
    content, names, finish, usage = "", [], None, None
    for chunk in client.chat.completions.create(
        model="pub", messages=[{"role": "user", "content": "q"}], stream=True
    ):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            names += [tc.function.name for tc in ch.delta.tool_calls or ()]
            finish = ch.finish_reason or finish
    assert content == "".join(TEXT) and names == ["get_weather", "get_time"]
    assert finish == "tool_calls" and usage.prompt_tokens == 26 and usage.completion_tokens == 9


def test_chain_to_anthropic_client():
    import anthropic

    chain = ChainStream(OllamaToOpenAIStream("pub", True), OpenAIToAnthropicStream("pub"))  # type: ignore[arg-type]
    body = b"".join(chain.feed(FULL[i : i + 33]) for i in range(0, len(FULL), 33)) + chain.close()
    client = anthropic.Anthropic(api_key="k", base_url="http://t", http_client=_mock_client(body))
    with client.messages.stream(
        model="pub", max_tokens=9, messages=[{"role": "user", "content": "q"}]
    ) as s:
        msg = s.get_final_message()
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[1].text == "".join(TEXT)
    assert msg.content[2].input == {"city": "Paris"} and msg.content[3].id == "call_x"
    assert msg.stop_reason == "tool_use"
    assert msg.usage.input_tokens == 26 and msg.usage.output_tokens == 9


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_lines_are_output_or_protocol_errors(data):
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )
    keys = st.sampled_from(
        ["message", "done", "done_reason", "error", "eval_count", "prompt_eval_count"]
    )
    lines = [
        line(
            data.draw(
                st.dictionaries(
                    keys,
                    json_values
                    | st.fixed_dictionaries(
                        {
                            "role": st.just("assistant"),
                            "content": json_values,
                            "tool_calls": json_values,
                        }
                    ),
                    max_size=4,
                )
            )
        )
        for _ in range(data.draw(st.integers(0, 5)))
    ]
    raw = b"".join(lines)
    conv = OllamaToOpenAIStream("m", True)
    try:
        for piece in _cut(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=5))):
            conv.feed(piece)
        conv.close()
    except UpstreamProtocolError:
        pass
    conv.error_event("x")
