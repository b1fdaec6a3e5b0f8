"""The built-in mock as a demo upstream, through a real gateway started from
config.example.toml itself.

Its tool calls and JSON outputs are checked by the official SDKs' own parsers and
stream helpers (openai `parse` with pydantic models, `pydantic_function_tool`,
`chat.completions.stream`, `responses.stream`/`parse`; anthropic `messages.stream`;
google-genai function calls) and by `jsonschema` against the tools' schemas. Every
check runs on both example mocks: `mock-1` (the mock speaking OpenAI's protocol)
and `mock-claude` (the same mock with `protocol = "anthropic"`: an OpenAI client's
request goes through the gateway's real OpenAI <-> Anthropic conversion). Expected
texts come from the mock's own unconstrained answer to the same message, never
from constants here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import jsonschema
import openai
import pytest
from google import genai
from google.genai import types as gtypes
from pydantic import BaseModel, Field

from tests.harness import Gateway

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
MODELS = ["mock-1", "mock-claude"]

# A tool schema with every construct the mock's generator knows.
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3, "maximum": 14},
        "hourly": {"type": "boolean"},
        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
        "station": {"type": "string", "pattern": "^[A-Z]{4}$"},
        "when": {"type": "string", "format": "date"},
        "fields": {
            "type": "array",
            "items": {"type": "string", "enum": ["temp", "wind", "rain"]},
            "minItems": 2,
            "uniqueItems": True,
        },
        "area": {"$ref": "#/$defs/area"},
        "source": {"const": "demo"},
        "detail": {"anyOf": [{"type": "string", "enum": ["brief", "full"]}, {"type": "null"}]},
        "label": {"oneOf": [{"$ref": "#/$defs/short"}, {"type": "integer"}]},
    },
    "required": ["location", "unit", "days", "fields", "area", "source"],
    "additionalProperties": False,
    "$defs": {
        "area": {
            "type": "object",
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
                "radius_km": {"type": "integer", "minimum": 7, "multipleOf": 5},
            },
            "required": ["lat", "lon", "radius_km"],
            "additionalProperties": False,
        },
        "short": {"type": "string", "maxLength": 4},
    },
}
TIME: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
}


def oai_tools() -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    ]


def an_tools() -> list[dict[str, Any]]:
    return [
        {"name": "get_time", "description": "The time", "input_schema": TIME},
        {"name": "get_weather", "description": "The weather", "input_schema": WEATHER},
    ]


def valid(args: Any, schema: dict[str, Any]) -> None:
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    checker.validate(args)


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Day(BaseModel):
    date: str
    high: float = Field(ge=-50, le=60)
    unit: Unit
    windy: bool


class Forecast(BaseModel):
    city: str
    days: list[Day] = Field(min_length=2)
    alert: str | None
    confidence: float = Field(ge=0, le=1)
    sky: Literal["sun", "rain"]


class GetWeather(BaseModel):
    location: str
    unit: Unit


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """fastgate on config.example.toml as shipped (its access log pointed at a file)."""
    text = EXAMPLE.read_text()
    key = tomllib.loads(text)["tokens"][0]["key"]
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("access_log")]
    with Gateway(tmp_path_factory.mktemp("demo"), "\n".join(lines)) as gw:
        gw.start()
        yield gw, key


@pytest.fixture(scope="module")
def oc(demo: tuple[Gateway, str]) -> openai.OpenAI:
    gw, key = demo
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def ac(demo: tuple[Gateway, str]) -> anthropic.Anthropic:
    gw, key = demo
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def chat_text(oc: openai.OpenAI, model: str, text: str, **kw: Any) -> Any:
    return oc.chat.completions.create(model=model, messages=user(text), **kw)


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("model", MODELS)
def test_text_is_sentences_deterministic_with_usage(oc: openai.OpenAI, model: str) -> None:
    a = chat_text(oc, model, "Tell me about the weather.")
    b = chat_text(oc, model, "Tell me about the weather.")
    other = chat_text(oc, model, "Something completely different, please.")
    text = a.choices[0].message.content
    assert text == b.choices[0].message.content  # the same request, the same words
    assert text != other.choices[0].message.content
    sentences = [s for s in text.split(". ") if s]
    assert len(sentences) >= 3 and text.endswith(".")
    assert all(s[0].isupper() for s in sentences) and "," in text
    assert a.choices[0].finish_reason == "stop"
    assert a.usage.completion_tokens == len(text.split())
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_stop_cuts_before_the_first_stop_sequence(
    oc: openai.OpenAI, ac: anthropic.Anthropic, model: str
) -> None:
    msg = "Where does the stop sequence land?"
    full = chat_text(oc, model, msg).choices[0].message.content
    words = full.split()
    stop = words[len(words) // 2]
    want = full[: full.index(stop)]
    r = chat_text(oc, model, msg, stop=[stop, "never-in-the-text"])
    assert r.choices[0].message.content == want
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(want.split()) + (want[-1:].isspace())
    with oc.chat.completions.stream(model=model, messages=user(msg), stop=stop) as s:
        streamed = s.get_final_completion()
    assert streamed.choices[0].message.content == want
    m = ac.messages.create(model=model, max_tokens=200, messages=user(msg), stop_sequences=[stop])
    assert m.content[0].text == want
    if model == "mock-claude":  # the mock's own Anthropic answer names the sequence
        assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop)
    else:  # converted from an OpenAI finish_reason "stop", which does not say which
        assert m.stop_reason == "end_turn"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("model", MODELS)
def test_max_tokens_cuts_with_finish_length(
    oc: openai.OpenAI, ac: anthropic.Anthropic, model: str, field: str
) -> None:
    msg = "Give me a long answer."
    full = chat_text(oc, model, msg).choices[0].message.content
    r = chat_text(oc, model, msg, **{field: 7})
    assert r.choices[0].message.content == " ".join(full.split()[:7])
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    m = ac.messages.create(model=model, max_tokens=5, messages=user(msg))
    assert m.content[0].text == " ".join(full.split()[:5])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 5


def test_n_choices(oc: openai.OpenAI) -> None:
    msg = "Three answers, please."
    one = chat_text(oc, "mock-1", msg).choices[0].message.content
    r = chat_text(oc, "mock-1", msg, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert texts[0] == one and len(set(texts)) == 3
    assert all(c.finish_reason == "stop" for c in r.choices)
    assert r.usage.completion_tokens == sum(len(t.split()) for t in texts)
    opts = {"include_usage": True}
    with oc.chat.completions.stream(
        model="mock-1", messages=user(msg), n=3, stream_options=opts
    ) as s:
        final = s.get_final_completion()
    assert [c.message.content for c in final.choices] == texts
    assert final.usage.completion_tokens == r.usage.completion_tokens
    # The conversion demo: Anthropic cannot give n > 1, and the gateway says so.
    with pytest.raises(openai.BadRequestError) as exc:
        chat_text(oc, "mock-claude", msg, n=3)
    assert exc.value.status_code == 400 and "n > 1" in str(exc.value)


# --------------------------------------------------------------------------- JSON output


@pytest.mark.parametrize("model", MODELS)
def test_pydantic_structured_output_parses(oc: openai.OpenAI, model: str) -> None:
    completions = getattr(oc.beta.chat, "completions", None) or oc.chat.completions
    r = completions.parse(
        model=model, messages=user("Forecast for Paris"), response_format=Forecast
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and len(parsed.days) >= 2
    assert r.choices[0].finish_reason == "stop"
    valid(json.loads(r.choices[0].message.content), Forecast.model_json_schema())


def test_json_object(oc: openai.OpenAI) -> None:
    r = chat_text(oc, "mock-1", "Answer in JSON.", response_format={"type": "json_object"})
    doc = json.loads(r.choices[0].message.content)
    assert isinstance(doc, dict) and doc
    # Anthropic has no free-form JSON mode: a clear 400, not a silent drop.
    with pytest.raises(openai.BadRequestError):
        chat_text(oc, "mock-claude", "Answer in JSON.", response_format={"type": "json_object"})


# --------------------------------------------------------------------------- tools, OpenAI SDK


def tool_call(r: Any) -> tuple[str, Any]:
    (call,) = r.choices[0].message.tool_calls
    return call.function.name, json.loads(call.function.arguments)


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_call_langchain_style(oc: openai.OpenAI, model: str) -> None:
    r = chat_text(
        oc,
        model,
        "What should I wear tomorrow?",
        tools=oai_tools(),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    name, args = tool_call(r)
    assert name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
    valid(args, WEATHER)
    assert r.choices[0].message.content is None
    # the token limit cuts a tool call too
    cut = chat_text(
        oc,
        model,
        "What should I wear tomorrow?",
        tools=oai_tools(),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=2,
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 2
    if model == "mock-1":  # the mock's own answer: one token per argument word
        whole = r.choices[0].message.tool_calls[0].function.arguments
        assert cut.choices[0].message.tool_calls[0].function.arguments == "".join(
            re.findall(r"\s*\S+", whole)[:2]
        )
        assert r.usage.completion_tokens == len(
            r.choices[0].message.tool_calls[0].function.arguments.split()
        )


@pytest.mark.parametrize("model", MODELS)
def test_tool_choice_modes(oc: openai.OpenAI, model: str) -> None:
    tools = oai_tools()
    # required: the tool the message names, else the first
    r = chat_text(
        oc, model, "Please run get_weather for Paris.", tools=tools, tool_choice="required"
    )
    assert tool_call(r)[0] == "get_weather"
    r = chat_text(oc, model, "Anything.", tools=tools, tool_choice="required")
    name, args = tool_call(r)
    assert name == "get_time"
    valid(args, TIME)
    # auto: text unless the message names a tool ("get weather" counts) or asks for one
    r = chat_text(oc, model, "Hello there.", tools=tools)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content
    r = chat_text(oc, model, "Can you get weather for Paris?", tools=tools, tool_choice="auto")
    assert tool_call(r)[0] == "get_weather" and r.choices[0].finish_reason == "tool_calls"
    r = chat_text(oc, model, "Use a tool to find out.", tools=tools)
    assert tool_call(r)[0] == "get_time"
    # none: never a call
    r = chat_text(oc, model, "Run get_weather.", tools=tools, tool_choice="none")
    assert r.choices[0].message.tool_calls is None
    # two tools named: two calls with distinct ids, one when parallel calls are off
    both = "Call get_time and get_weather."
    r = chat_text(oc, model, both, tools=tools)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time", "get_weather"]
    assert calls[0].id != calls[1].id
    r = chat_text(oc, model, both, tools=tools, parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls) == 1
    # after the tool's result, auto answers in text
    first = chat_text(oc, model, "Please call get_weather.", tools=tools)
    call = first.choices[0].message.tool_calls[0]
    history = [
        *user("Please call get_weather."),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    r = oc.chat.completions.create(model=model, messages=history, tools=tools)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert "get_weather" in r.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call_accumulated_by_sdk_helpers(oc: openai.OpenAI, model: str) -> None:
    deltas, done = [], []
    with oc.chat.completions.stream(
        model=model,
        messages=user("Dress advice?"),
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
        stream_options={"include_usage": True},
    ) as s:
        for ev in s:
            if ev.type == "tool_calls.function.arguments.delta" and ev.arguments_delta:
                deltas.append(ev.arguments_delta)
            elif ev.type == "tool_calls.function.arguments.done":
                done.append(ev)
        final = s.get_final_completion()
    assert len(deltas) > 1  # streamed a token at a time, not in one piece
    (ev,) = done
    assert ev.name == "GetWeather" and isinstance(ev.parsed_arguments, GetWeather)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.parsed_arguments == ev.parsed_arguments
    assert final.usage.completion_tokens == len(deltas)  # usage = what was sent


def test_responses_api(oc: openai.OpenAI) -> None:
    chat = chat_text(oc, "mock-1", "Hello").choices[0].message.content
    with oc.responses.stream(model="mock-1", input="Hello") as s:
        final = s.get_final_response()
    assert final.output_text == chat and final.usage.output_tokens == len(chat.split())
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}
    r = oc.responses.create(
        model="mock-1",
        input="Dress advice?",
        tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    (item,) = r.output
    assert item.type == "function_call" and item.name == "get_weather"
    valid(json.loads(item.arguments), WEATHER)
    p = oc.responses.parse(model="mock-1", input="Forecast", text_format=Forecast)
    assert isinstance(p.output_parsed, Forecast)
    cut = oc.responses.create(model="mock-1", input="Hello", max_output_tokens=5)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == " ".join(chat.split()[:5])


# --------------------------------------------------------------------------- tools, Anthropic SDK


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_tool_use(ac: anthropic.Anthropic, model: str) -> None:
    m = ac.messages.create(
        model=model,
        max_tokens=500,
        messages=user("Dress advice?"),
        tools=an_tools(),
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (block,) = m.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert m.stop_reason == "tool_use"
    valid(block.input, WEATHER)
    m = ac.messages.create(
        model=model,
        max_tokens=500,
        messages=user("Anything."),
        tools=an_tools(),
        tool_choice={"type": "any"},
    )
    assert m.content[0].name == "get_time"
    valid(m.content[0].input, TIME)
    partial = []
    with ac.messages.stream(
        model=model,
        max_tokens=500,
        messages=user("Dress advice?"),
        tools=an_tools(),
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as s:
        for ev in s:
            if ev.type == "input_json":
                partial.append(ev.partial_json)
        final = s.get_final_message()
    assert len(partial) > 1 and final.stop_reason == "tool_use"
    valid(final.content[0].input, WEATHER)
    # the tool's result goes back; auto answers in text
    history = [
        *user("Dress advice?"),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": final.content[0].id, "content": "21 C"}
            ],
        },
    ]
    m = ac.messages.create(model=model, max_tokens=500, messages=history, tools=an_tools())
    assert [b.type for b in m.content] == ["text"] and m.stop_reason == "end_turn"
    assert "get_weather" in m.content[0].text


@pytest.mark.parametrize("model", MODELS)
def test_gemini_sdk_function_call(demo: tuple[Gateway, str], model: str) -> None:
    gw, key = demo
    client = genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=gw.url))
    fd = gtypes.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER)
    cfg = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[fd])],
        tool_config=gtypes.ToolConfig(
            function_calling_config=gtypes.FunctionCallingConfig(mode="ANY")
        ),
    )
    r = client.models.generate_content(model=model, contents="Dress advice?", config=cfg)
    (call,) = r.function_calls
    assert call.name == "get_weather"
    valid(call.args, WEATHER)


# --------------------------------------------------------------------------- the conversion demo


def test_conversion_demo_channel(
    demo: tuple[Gateway, str], oc: openai.OpenAI, ac: anthropic.Anthropic
) -> None:
    """mock-claude answers in Anthropic's protocol: the OpenAI client's answer went
    through the gateway's Anthropic -> OpenAI conversion (its id is the Anthropic
    message's), the Anthropic client's is a passthrough; the words are the mock's
    either way, and the records price it with the example's mock-claude price."""
    gw, key = demo
    msg = "Show me the conversion."
    plain = chat_text(oc, "mock-1", msg)
    conv = oc.chat.completions.with_raw_response.create(
        model="mock-claude", messages=user(msg), extra_headers={"x-request-id": "demo-oai"}
    ).parse()
    assert conv.choices[0].message.content == plain.choices[0].message.content
    assert plain.id.startswith("chatcmpl-") and not plain.id.startswith("chatcmpl-msg_")
    assert conv.id.startswith("chatcmpl-msg_")  # an Anthropic message, converted
    native = ac.messages.create(
        model="mock-claude",
        max_tokens=200,
        messages=user(msg),
        extra_headers={"x-request-id": "demo-an"},
    )
    assert (
        native.id.startswith("msg_") and native.content[0].text == plain.choices[0].message.content
    )
    # the raw stream is the mock's own Anthropic event sequence (ping included)
    body = {"model": "mock-claude", "max_tokens": 50, "stream": True, "messages": user(msg)}
    raw = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": key}).text
    assert "event: ping" in raw and raw.rstrip().endswith('data: {"type":"message_stop"}')
    # count_tokens goes to the Anthropic-speaking mock, which counts as it bills
    counted = ac.messages.count_tokens(model="mock-claude", messages=user(msg))
    assert counted.input_tokens == native.usage.input_tokens

    price = next(
        p for p in tomllib.loads(EXAMPLE.read_text())["prices"] if p["model"] == "mock-claude"
    )
    for rid, ingress, usage in (
        ("demo-oai", "openai", (conv.usage.prompt_tokens, conv.usage.completion_tokens)),
        ("demo-an", "anthropic", (native.usage.input_tokens, native.usage.output_tokens)),
    ):
        rec = gw.record_for(rid)
        assert (rec["channel"], rec["provider"], rec["ingress"]) == ("mock-claude", "mock", ingress)
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == usage
        assert rec["unpriced"] is False
        want = round(usage[0] * price["input"] + usage[1] * price["output"])
        assert rec["cost_micros"] == want


def test_protocol_key_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[channels]]\nname = "o"\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\n'
        'models = ["a"]\nprotocol = "anthropic"\n\n'
        '[[channels]]\nname = "m"\ntype = "mock"\nmodels = ["b"]\nprotocol = "gemini"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "fastgate", "check-config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "channels[0].protocol: only a mock channel takes another protocol" in text
    assert 'channels[1].protocol: must be one of "openai", "anthropic"; got "gemini"' in text
    same = tmp_path / "same.toml"  # repeating the type's own protocol is fine anywhere
    same.write_text(
        '[[channels]]\nname = "o"\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\n'
        'models = ["a"]\nprotocol = "openai"\n'
    )
    cmd = [sys.executable, "-m", "fastgate", "check-config", str(same)]
    assert subprocess.run(cmd, capture_output=True, cwd=REPO).returncode == 0


def test_refusals_are_400s_in_the_channel_protocol(
    demo: tuple[Gateway, str], oc: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        chat_text(oc, "mock-1", "Hi", n=0)
    assert "n must be" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        chat_text(
            oc,
            "mock-1",
            "Hi",
            tools=oai_tools(),
            tool_choice={"type": "function", "function": {"name": "no_such_tool"}},
        )
    assert "no_such_tool" in exc.value.message
    gw, key = demo
    body = {"model": "mock-claude", "messages": user("Hi")}  # no max_tokens
    r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": key})
    assert r.status_code == 400
    doc = r.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in doc["error"]["message"]
