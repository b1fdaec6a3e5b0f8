"""The Anthropic, Gemini, Ollama and Bedrock fakes, checked against independent clients.

Gateway tests trust these fakes to speak each provider's wire format; here the
official `anthropic` and `google-genai` SDKs, botocore (signing, event-stream
decoding, the bedrock-runtime client) and plain httpx2/aiohttp parsing are pointed
straight at them. Expected token counts are worked out by hand from the documented
rule (3 + 4 + words per message; one completion token per word piece).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import anthropic
import botocore.auth
import botocore.session
import httpx2
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from multidict import CIMultiDict

from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.anthropic_fake import prompt_tokens_for as anthropic_prompt_tokens
from tests.fakes.base import (
    BigStream,
    CloseImmediately,
    DieMidStream,
    Fail,
    FakeUpstream,
    Hang,
    Ok,
    Slow,
    StreamError,
    ToolCall,
    content_pieces,
    json_pieces,
    pick_tool,
    tool_args_for,
)
from tests.fakes.bedrock_fake import FakeBedrock, decode_frames, encode_frame, sigv4_signature
from tests.fakes.bedrock_fake import prompt_tokens_for as bedrock_prompt_tokens
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.gemini_fake import prompt_tokens_for as gemini_prompt_tokens
from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.ollama_fake import prompt_tokens_for as ollama_prompt_tokens
from tests.fakes.openai_fake import prompt_tokens_for as openai_prompt_tokens
from tests.harness import parse_sse

SYSTEM = "be brief"  # 2 words
USER = "say hello to the test suite"  # 6 words
PROMPT = 3 + (4 + 2) + (4 + 6)  # system + user by the documented rule = 19
USER_ONLY = 3 + (4 + 6)  # 13
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit"],
}
WEATHER_ARGS = {"city": "test", "unit": "c"}  # first enum value, "test" for strings


# --------------------------------------------------------------------------- clients


def http(**kw: Any) -> httpx2.Client:
    """A plain-HTTP client; verify=False only skips loading CA certificates (0.2 s each)."""
    return httpx2.Client(verify=False, **kw)


def anthropic_client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.url, api_key="sk-ant-test", max_retries=0, http_client=http(timeout=10)
    )


def gemini_client(fake: FakeGemini, key: str = "g-key") -> genai.Client:
    opts = gtypes.HttpOptions(
        base_url=fake.url,
        retry_options=gtypes.HttpRetryOptions(attempts=1),
        client_args={"verify": False},
    )
    return genai.Client(api_key=key, http_options=opts)


_BOTO = botocore.session.get_session()  # shared: it caches the service model


def bedrock_client(fake: FakeBedrock, **overrides: str) -> Any:
    creds = {
        "aws_access_key_id": fake.access_key,
        "aws_secret_access_key": fake.secret_key,
        "region_name": fake.region,
    }
    creds.update(overrides)
    return _BOTO.create_client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=10),
        **creds,
    )


def signed_headers(
    fake: FakeBedrock, method: str, url: str, body: bytes, secret: str | None = None
) -> dict[str, str]:
    """SigV4 headers computed by botocore (the reference signer), for raw requests."""
    req = AWSRequest(
        method=method, url=url, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(
        Credentials(fake.access_key, secret or fake.secret_key), "bedrock", fake.region
    ).add_auth(req)
    return dict(req.headers.items())


def botocore_frames(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Decode an event stream with botocore's parser (independent of the fake's)."""
    buf = EventStreamBuffer()
    buf.add_data(data)
    return [(m.headers, m.payload) for m in buf]


# --------------------------------------------------------------------------- a kit per provider


@dataclass
class Kit:
    """How to talk to one fake with raw HTTP and read its answers independently."""

    kind: str
    fake: Any

    def request(self, *, stream: bool, **extra: Any) -> tuple[str, str, dict[str, str], bytes]:
        msgs = [{"role": "user", "content": USER}]
        if self.kind == "anthropic":
            body = {"model": "claude-x", "max_tokens": 64, "messages": msgs, "stream": stream}
            headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
            url = "/v1/messages"
        elif self.kind == "gemini":
            body = {"contents": [{"role": "user", "parts": [{"text": USER}]}]}
            verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
            url = f"/v1beta/models/gemini-2.0-flash:{verb}"
            headers = {"x-goog-api-key": "k"}
        elif self.kind == "ollama":
            body = {"model": "llama3.2", "messages": msgs, "stream": stream}
            url, headers = "/api/chat", {}
        else:
            body = {"messages": [{"role": "user", "content": [{"text": USER}]}]}
            op = "converse-stream" if stream else "converse"
            url = f"/model/{quote(BEDROCK_MODEL, safe='')}/{op}"
            headers = {}
        body.update(extra)
        raw = json.dumps(body).encode()
        full = self.fake.url + url
        if self.kind == "bedrock":
            headers = signed_headers(self.fake, "POST", full, raw)
        headers.setdefault("content-type", "application/json")
        return "POST", full, headers, raw

    def events(self, data: bytes) -> list[Any]:
        """The stream's events as parsed JSON objects (error events included)."""
        if self.kind in ("anthropic", "gemini"):
            return [json.loads(e["data"]) for e in parse_sse(data)]
        if self.kind == "ollama":
            return [json.loads(line) for line in data.splitlines() if line.strip()]
        return [
            {"headers": h, **json.loads(p)}
            for h, p in botocore_frames(data)  # headers + payload
        ]

    def stream_text(self, data: bytes) -> str:
        out = []
        for ev in self.events(data):
            if self.kind == "anthropic" and ev.get("type") == "content_block_delta":
                out.append(ev["delta"].get("text", ""))
            elif self.kind == "gemini" and "candidates" in ev:
                out += [p.get("text", "") for p in ev["candidates"][0]["content"]["parts"]]
            elif self.kind == "ollama" and "message" in ev:
                out.append(ev["message"]["content"])
            elif self.kind == "bedrock" and "delta" in ev:
                out.append(ev["delta"].get("text", ""))
        return "".join(out)

    def text(self, doc: dict) -> str:
        if self.kind == "anthropic":
            return doc["content"][0]["text"]
        if self.kind == "gemini":
            return doc["candidates"][0]["content"]["parts"][0]["text"]
        if self.kind == "ollama":
            return doc["message"]["content"]
        return doc["output"]["message"]["content"][0]["text"]

    def tokens(self, doc: dict) -> tuple[int, int]:
        """(all input tokens, output tokens) from a non-stream answer, no cache in play."""
        if self.kind == "anthropic":
            return doc["usage"]["input_tokens"], doc["usage"]["output_tokens"]
        if self.kind == "gemini":
            u = doc["usageMetadata"]
            return u["promptTokenCount"], u["candidatesTokenCount"]
        if self.kind == "ollama":
            return doc["prompt_eval_count"], doc["eval_count"]
        return doc["usage"]["inputTokens"], doc["usage"]["outputTokens"]

    def is_error(self, status: int, r: httpx2.Response) -> bool:
        """Does `r` carry the provider's own error shape for `status`?"""
        doc = r.json()
        if self.kind == "anthropic":
            etype = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[status]
            return doc["type"] == "error" and doc["error"]["type"] == etype
        if self.kind == "gemini":
            name = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 529: "UNKNOWN"}[status]
            return doc["error"]["code"] == status and doc["error"]["status"] == name
        if self.kind == "ollama":
            return isinstance(doc["error"], str) and doc["error"]
        etype = {429: "ThrottlingException", 500: "InternalServerException"}.get(
            status, "ServiceUnavailableException"
        )
        return bool(doc["message"]) and r.headers["x-amzn-errortype"].startswith(etype + ":")


FAKES = {
    "anthropic": FakeAnthropic,
    "gemini": FakeGemini,
    "ollama": FakeOllama,
    "bedrock": FakeBedrock,
}


@pytest.fixture(params=list(FAKES))
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    fake = FAKES[request.param](request.param)
    fake.start()
    try:
        yield Kit(request.param, fake)
    finally:
        fake.stop()


def send(kit: Kit, *, stream: bool, timeout: float = 10, **extra: Any) -> httpx2.Response:
    method, url, headers, body = kit.request(stream=stream, **extra)
    with http(timeout=timeout) as h:
        return h.request(method, url, headers=headers, content=body)


# --------------------------------------------------------------------------- generic behaviours


def test_default_answer_stream_and_not(kit: Kit) -> None:
    r = send(kit, stream=False)
    assert r.status_code == 200, r.text
    assert kit.text(r.json()) == f"Hello from {kit.kind}"
    assert kit.tokens(r.json()) == (USER_ONLY, 3)
    rec = kit.fake.last
    assert rec.method == "POST" and rec.status == 200 and rec.completed
    assert json.loads(rec.body) == rec.json
    assert rec.response_body == r.content
    assert rec.usage == {
        "prompt_tokens": USER_ONLY,
        "completion_tokens": 3,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "total_tokens": USER_ONLY + 3,
    }
    assert kit.fake.last_usage == rec.usage

    r = send(kit, stream=True)
    assert r.status_code == 200
    assert kit.stream_text(r.content) == f"Hello from {kit.kind}"
    assert kit.fake.last.response_body == r.content


def test_script_is_fifo_then_default_with_provider_error_shapes(kit: Kit) -> None:
    kit.fake.script(Fail(500), Fail(429), Ok(content="custom words here", prompt_tokens=7))
    r = send(kit, stream=False)
    assert r.status_code == 500 and kit.is_error(500, r)
    r = send(kit, stream=False)
    assert r.status_code == 429 and kit.is_error(429, r)
    assert r.headers["retry-after"] == "1"
    r = send(kit, stream=False)
    assert kit.text(r.json()) == "custom words here"
    assert kit.tokens(r.json()) == (7, 3)
    r = send(kit, stream=False)
    assert kit.text(r.json()) == f"Hello from {kit.kind}"
    assert [x.status for x in kit.fake.requests] == [500, 429, 200, 200]
    assert [x.behaviour for x in kit.fake.requests] == ["Fail", "Fail", "Ok", "Ok"]
    assert kit.fake.pending_script == 0


def test_fail_custom_body_is_sent_verbatim(kit: Kit) -> None:
    kit.fake.script(Fail(400, body=b'{"odd": true}  ', headers={"x-extra": "1"}))
    r = send(kit, stream=False)
    assert r.status_code == 400
    assert r.content == b'{"odd": true}  '
    assert r.headers["x-extra"] == "1"


@pytest.mark.parametrize("rst", [False, True])
def test_close_immediately(kit: Kit, rst: bool) -> None:
    kit.fake.script(CloseImmediately(rst=rst))
    with pytest.raises(httpx2.TransportError):
        send(kit, stream=False)
    assert kit.fake.wait_connections_closed(1) >= 1
    assert kit.fake.last.client_disconnected


def test_hang_until_client_goes_away(kit: Kit) -> None:
    kit.fake.script(Hang())
    t0 = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        send(kit, stream=True, timeout=0.4)
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while not kit.fake.last.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kit.fake.last.client_disconnected


def test_hang_after_chunks_sends_them_then_stalls(kit: Kit) -> None:
    kit.fake.script(Hang(after_chunks=2))
    method, url, headers, body = kit.request(stream=True)
    got = b""
    with http(timeout=0.5) as h, h.stream(method, url, headers=headers, content=body) as r:
        assert r.status_code == 200
        with pytest.raises(httpx2.ReadTimeout):
            for chunk in r.iter_raw():
                got += chunk
    assert len(kit.events(got)) == 2


def test_die_mid_stream_after_n_events(kit: Kit) -> None:
    kit.fake.script(DieMidStream(after_chunks=3))
    method, url, headers, body = kit.request(stream=True)
    got = b""
    with http(timeout=5) as h, h.stream(method, url, headers=headers, content=body) as r:
        assert r.status_code == 200
        with pytest.raises(httpx2.TransportError):
            for chunk in r.iter_raw():
                got += chunk
    assert len(kit.events(got)) == 3
    assert got == kit.fake.last.response_body
    assert kit.fake.last.client_disconnected and not kit.fake.last.completed


def test_die_mid_body_non_stream(kit: Kit) -> None:
    kit.fake.script(DieMidStream())
    with pytest.raises(httpx2.TransportError):
        send(kit, stream=False)
    rec = kit.fake.last
    assert rec.client_disconnected and len(rec.response_body) > 0
    with pytest.raises(ValueError):
        json.loads(rec.response_body)


def test_slow_stream_spaces_events(kit: Kit) -> None:
    n = len(kit.events(send(kit, stream=True).content))
    kit.fake.script(Slow(chunk_delay=0.05))
    t0 = time.monotonic()
    r = send(kit, stream=True)
    elapsed = time.monotonic() - t0
    assert kit.stream_text(r.content) == f"Hello from {kit.kind}"
    assert elapsed >= 0.9 * (n - 1) * 0.05


def test_first_byte_delay_applies_to_non_stream(kit: Kit) -> None:
    kit.fake.script(Ok(first_byte_delay=0.3))
    t0 = time.monotonic()
    assert send(kit, stream=False).status_code == 200
    assert time.monotonic() - t0 >= 0.28


def test_stream_error_in_band_and_as_status(kit: Kit) -> None:
    kit.fake.script(StreamError(after_chunks=2, status=429, message="slow down"))
    r = send(kit, stream=True)
    assert r.status_code == 200
    events = kit.events(r.content)
    assert len(events) == 3
    last = events[-1]
    if kit.kind == "anthropic":
        assert last == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "slow down"},
        }
        assert parse_sse(r.content)[-1]["event"] == "error"
    elif kit.kind == "gemini":
        assert last["error"]["code"] == 429 and last["error"]["message"] == "slow down"
    elif kit.kind == "ollama":
        assert last == {"error": "slow down"}
    else:
        assert last["headers"][":message-type"] == "exception"
        assert last["headers"][":exception-type"] == "throttlingException"
        assert last["message"] == "slow down"
    assert kit.fake.last.notes["stream_error"] is True

    kit.fake.script(StreamError(status=429))
    r = send(kit, stream=False)
    assert r.status_code == 429 and kit.is_error(429, r)

    kit.fake.script(StreamError(after_chunks=0, status=500, message="boom"))
    events = kit.events(send(kit, stream=True).content)
    assert len(events) == 1 and "boom" in json.dumps(events[0])


def test_gemini_json_array_stream_error_stays_valid_json(fake_gemini: FakeGemini) -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    url = fake_gemini.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent?key=k"
    for after in (0, 2):
        fake_gemini.script(StreamError(after_chunks=after, status=503))
        with http() as h:
            docs = json.loads(h.post(url, json=body).content)
        assert len(docs) == after + 1 and docs[-1]["error"]["status"] == "UNAVAILABLE"


def test_big_stream_completes_for_a_reader(kit: Kit) -> None:
    big = BigStream(chunks=20, chunk_bytes=1000)
    kit.fake.script(big)
    r = send(kit, stream=True)
    assert kit.stream_text(r.content) == "x" * 20_000
    assert big.finished and not big.client_disconnected
    assert big.chunks_written == len(kit.events(r.content))
    assert big.bytes_written == len(r.content)
    assert kit.fake.last.response_body == b""  # not kept for BigStream


def test_stop_ends_hanging_request_and_counts_connections(kit: Kit) -> None:
    kit.fake.set_behaviour(Hang())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            send(kit, stream=False, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    kit.fake.wait_requests(1)
    assert kit.fake.open_connections == 1
    t0 = time.monotonic()
    kit.fake.stop()
    t.join(10)
    assert time.monotonic() - t0 < 5 and not t.is_alive()
    assert errors and isinstance(errors[0], httpx2.TransportError)
    assert kit.fake.connections_opened == kit.fake.connections_closed == 1


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_sdk_non_stream_and_record(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    raw = c.messages.with_raw_response.create(
        model="claude-x",
        max_tokens=100,
        system=SYSTEM,
        messages=[{"role": "user", "content": USER}],
    )
    m = raw.parse()
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "Hello from anthropic"
    assert m.id.startswith("msg_") and m.model == "claude-x" and m.role == "assistant"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (PROMPT, 3)
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0
    rec = fake_anthropic.last
    assert rec.path == "/v1/messages"
    assert rec.headers["anthropic-version"]  # whatever the SDK sends, recorded
    assert rec.notes["auth"] in ("bearer", "x-api-key")
    assert raw.headers["request-id"] == rec.response_request_id
    assert rec.json["system"] == SYSTEM
    assert anthropic_prompt_tokens(rec.json) == PROMPT


def test_anthropic_auth_and_version_headers(fake_anthropic: FakeAnthropic) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    url = fake_anthropic.url + "/v1/messages"
    with http() as h:
        r = h.post(url, json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert r.status_code == 200 and fake_anthropic.last.notes["auth"] == "x-api-key"
        assert fake_anthropic.last.headers["x-api-key"] == "k"
        r = h.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
        assert r.status_code == 401
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["request_id"] == r.headers["request-id"]
        r = h.post(url, json=body, headers={"x-api-key": "k"})
        assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
    strict = FakeAnthropic("strict", api_key="right")
    with strict, http() as h:
        hdrs = {"anthropic-version": "2023-06-01"}
        url = strict.url + "/v1/messages"
        assert h.post(url, json=body, headers={**hdrs, "x-api-key": "wrong"}).status_code == 401
        assert h.post(url, json=body, headers={**hdrs, "x-api-key": "right"}).status_code == 200
        bearer = {**hdrs, "authorization": "Bearer right"}
        assert h.post(url, json=body, headers=bearer).status_code == 200


def test_anthropic_stream_wire_format(fake_anthropic: FakeAnthropic) -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": USER}]}],
        "stream": True,
    }
    hdrs = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    with http() as h:
        r = h.post(fake_anthropic.url + "/v1/messages", json=body, headers=hdrs)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"] == fake_anthropic.last.response_request_id
    events = parse_sse(r.content)
    names = [e["event"] for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    docs = [json.loads(e["data"]) for e in events]
    assert all(d["type"] == n for d, n in zip(docs, names, strict=True))
    start = docs[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == PROMPT and start["usage"]["output_tokens"] == 1
    assert docs[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for d in docs[3:6]) == "Hello from anthropic"
    assert docs[7]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert docs[7]["usage"] == {"output_tokens": 3}
    assert r.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_anthropic_sdk_stream(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    with c.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": USER}]
    ) as s:
        texts = list(s.text_stream)
        final = s.get_final_message()
    assert texts == content_pieces("Hello from anthropic")
    assert final.usage.input_tokens == USER_ONLY and final.usage.output_tokens == 3
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"n": 1}, "n: Extra inputs"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
    ],
)
def test_anthropic_rejects_what_the_api_rejects(
    fake_anthropic: FakeAnthropic, patch: dict, needle: str
) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    body.update(patch)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(anthropic.BadRequestError) as err:
        anthropic_client(fake_anthropic).post("/v1/messages", body=body, cast_to=object)
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert needle in err.value.body["error"]["message"]


def test_anthropic_tool_use_from_request_and_scripted(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    tools = [
        {"name": "lookup", "description": "x", "input_schema": {"type": "object"}},
        {"name": "get_weather", "description": "w", "input_schema": WEATHER_SCHEMA},
    ]
    msgs: list[dict] = [{"role": "user", "content": "what is the weather? use get_weather"}]
    m = c.messages.create(model="m", max_tokens=100, tools=tools, messages=msgs)
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["tool_use"]
    call = m.content[0]
    assert call.name == "get_weather" and call.input == WEATHER_ARGS
    assert call.id.startswith("toolu_")
    assert fake_anthropic.last.notes["tool_call"]["name"] == "get_weather"
    # 1 + one per 8-character fragment of the compact JSON arguments
    compact = json.dumps(WEATHER_ARGS, separators=(",", ":"))
    assert m.usage.output_tokens == 1 + -(-len(compact) // 8)

    # the tool result comes back: the model answers with text
    msgs += [
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    m2 = c.messages.create(model="m", max_tokens=100, tools=tools, messages=msgs)
    assert m2.stop_reason == "end_turn" and m2.content[0].text == "Hello from anthropic"

    # streamed: the SDK accumulates the input_json_delta fragments
    with c.messages.stream(model="m", max_tokens=100, tools=tools, messages=msgs[:1]) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == WEATHER_ARGS

    fake_anthropic.script(ToolCall("lookup", {"q": "fastgate"}, content="Let me check"))
    m3 = c.messages.create(model="m", max_tokens=100, messages=[{"role": "user", "content": "x"}])
    assert [b.type for b in m3.content] == ["text", "tool_use"]
    assert m3.content[0].text == "Let me check"
    assert (m3.content[1].name, m3.content[1].input) == ("lookup", {"q": "fastgate"})


def test_anthropic_max_tokens_cuts_and_cache_usage(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    msgs = [{"role": "user", "content": USER}]
    m = c.messages.create(model="m", max_tokens=2, messages=msgs)
    assert m.content[0].text == "Hello from" and m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 2

    fake_anthropic.script(Ok(cached_tokens=100, cache_write_tokens=50))
    m = c.messages.create(model="m", max_tokens=50, messages=msgs)
    assert m.usage.input_tokens == USER_ONLY
    assert m.usage.cache_read_input_tokens == 100
    assert m.usage.cache_creation_input_tokens == 50
    assert fake_anthropic.last_usage == {
        "prompt_tokens": USER_ONLY + 150,
        "completion_tokens": 3,
        "cached_tokens": 100,
        "cache_write_tokens": 50,
        "total_tokens": USER_ONLY + 153,
    }
    fake_anthropic.script(Ok(prompt_tokens=1000, cached_tokens=600, cache_write_tokens=100))
    with c.messages.stream(model="m", max_tokens=50, messages=msgs) as s:
        u = s.get_final_message().usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        300,
        600,
        100,
    )


def test_anthropic_count_tokens_and_models(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    n = c.messages.count_tokens(
        model="m", system=SYSTEM, messages=[{"role": "user", "content": USER}]
    )
    assert n.input_tokens == PROMPT
    assert fake_anthropic.last.path == "/v1/messages/count_tokens"
    assert [m.id for m in c.models.list()] == fake_anthropic.models
    with http() as h:
        r = h.get(
            fake_anthropic.url + "/v1/models?limit=2",
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        )
    doc = r.json()
    assert [d["id"] for d in doc["data"]] == fake_anthropic.models[:2]
    assert doc["has_more"] is True and doc["first_id"] == fake_anthropic.models[0]
    assert doc["data"][0]["type"] == "model" and doc["data"][0]["display_name"]


def test_anthropic_errors_through_sdk(fake_anthropic: FakeAnthropic) -> None:
    c = anthropic_client(fake_anthropic)
    msgs = [{"role": "user", "content": "hi"}]
    fake_anthropic.script(Fail(429), Fail(529), StreamError(after_chunks=4, status=529))
    with pytest.raises(anthropic.RateLimitError) as e429:
        c.messages.create(model="m", max_tokens=5, messages=msgs)
    assert e429.value.response.headers["retry-after"] == "1"
    assert e429.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.APIStatusError) as e529:
        c.messages.create(model="m", max_tokens=5, messages=msgs)
    assert e529.value.status_code == 529
    assert e529.value.body["error"]["type"] == "overloaded_error"
    got = []
    with (
        pytest.raises(anthropic.APIStatusError) as mid,
        c.messages.stream(model="m", max_tokens=50, messages=msgs) as s,
    ):
        got.extend(s.text_stream)
    assert "overloaded" in str(mid.value).lower()
    assert "".join(got) == "Hello"  # start, block start, ping, one delta, then the error


# --------------------------------------------------------------------------- Gemini


def test_gemini_sdk_non_stream_and_record(fake_gemini: FakeGemini) -> None:
    c = gemini_client(fake_gemini)
    r = c.models.generate_content(
        model="gemini-2.0-flash",
        contents=USER,
        config=gtypes.GenerateContentConfig(system_instruction=SYSTEM),
    )
    assert r.text == "Hello from gemini"
    assert r.candidates[0].finish_reason == gtypes.FinishReason.STOP
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (
        PROMPT,
        3,
        PROMPT + 3,
    )
    assert u.cached_content_token_count is None
    rec = fake_gemini.last
    assert r.response_id == rec.response_request_id and r.model_version == "gemini-2.0-flash"
    assert rec.headers["x-goog-api-key"] == "g-key"
    assert rec.path.endswith("/models/gemini-2.0-flash:generateContent")
    # the same conversation as an OpenAI chat counts the same
    chat = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]}
    assert gemini_prompt_tokens(rec.json) == openai_prompt_tokens("/v1/chat/completions", chat)


def test_gemini_sdk_stream_and_sse_wire_format(fake_gemini: FakeGemini) -> None:
    c = gemini_client(fake_gemini)
    chunks = list(c.models.generate_content_stream(model="gemini-2.0-flash", contents=USER))
    assert [ch.text for ch in chunks] == content_pieces("Hello from gemini")
    assert chunks[-1].usage_metadata.candidates_token_count == 3
    assert chunks[-1].usage_metadata.prompt_token_count == USER_ONLY
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert all(ch.candidates[0].finish_reason is None for ch in chunks[:-1])
    rec = fake_gemini.last
    assert rec.query_params["alt"] == "sse"

    with http() as h:
        r = h.post(
            fake_gemini.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json=rec.json,
            headers={"x-goog-api-key": "k"},
        )
    assert r.headers["content-type"] == "text/event-stream"
    blocks = r.content.split(b"\r\n\r\n")
    assert blocks[-1] == b"" and len(blocks) == 4
    docs = [json.loads(b.removeprefix(b"data: ")) for b in blocks[:-1]]
    counts = [d["usageMetadata"]["candidatesTokenCount"] for d in docs]
    assert counts == [1, 2, 3]  # cumulative: the last one is the total
    assert {d["responseId"] for d in docs} == {fake_gemini.last.response_request_id}


def test_gemini_stream_without_alt_is_a_json_array(fake_gemini: FakeGemini) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": USER}]}]}
    url = fake_gemini.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    with http() as h, h.stream("POST", url, json=body, params={"key": "k"}) as r:
        parts = list(r.iter_raw())
        ctype = r.headers["content-type"]
    raw = b"".join(parts)
    assert ctype.startswith("application/json")
    assert raw.startswith(b"[{") and raw.endswith(b"\n]") and b"\n,\r\n" in raw
    docs = json.loads(raw)
    assert "".join(d["candidates"][0]["content"]["parts"][0]["text"] for d in docs) == (
        "Hello from gemini"
    )
    assert fake_gemini.last.query_params == {"key": "k"}


def test_gemini_function_calls(fake_gemini: FakeGemini) -> None:
    c = gemini_client(fake_gemini)
    decl = gtypes.FunctionDeclaration(
        name="get_weather", description="w", parameters=gtypes.Schema.model_validate(WEATHER_SCHEMA)
    )
    config = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[decl])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    r = c.models.generate_content(
        model="gemini-2.0-flash", contents="call get_weather please", config=config
    )
    assert r.function_calls and r.function_calls[0].name == "get_weather"
    assert r.function_calls[0].args == WEATHER_ARGS
    assert r.candidates[0].finish_reason == gtypes.FinishReason.STOP
    chunks = list(
        c.models.generate_content_stream(
            model="gemini-2.0-flash", contents="call get_weather please", config=config
        )
    )
    calls = [fc for ch in chunks for fc in ch.function_calls or []]
    assert [(fc.name, fc.args) for fc in calls] == [("get_weather", WEATHER_ARGS)]

    fake_gemini.script(ToolCall("lookup", {"q": "x"}))
    r = c.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert [(fc.name, fc.args) for fc in r.function_calls] == [("lookup", {"q": "x"})]


def test_gemini_auth(fake_gemini: FakeGemini) -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    url = fake_gemini.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    with http() as h:
        r = h.post(url, json=body)
        assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
        assert h.post(url + "?key=abc", json=body).status_code == 200
        assert fake_gemini.last.query_params["key"] == "abc"
        bearer = {"authorization": "Bearer ya29.token"}
        assert h.post(url, json=body, headers=bearer).status_code == 200
    strict = FakeGemini("strict", api_key="right")
    with strict:
        wrong, right = gemini_client(strict, key="wrong"), gemini_client(strict, key="right")
        with pytest.raises(genai_errors.ClientError) as err:
            wrong.models.generate_content(model="gemini-2.0-flash", contents="hi")
        assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
        assert err.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        r = right.models.generate_content(model="gemini-2.0-flash", contents="hi")
        assert r.text == "Hello from strict"


def test_gemini_errors_and_validation(fake_gemini: FakeGemini) -> None:
    c = gemini_client(fake_gemini)
    fake_gemini.script(Fail(429), Fail(503))
    with pytest.raises(genai_errors.ClientError) as e429:
        c.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert e429.value.code == 429 and e429.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.ServerError) as e503:
        c.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert e503.value.code == 503 and e503.value.status == "UNAVAILABLE"
    assert fake_gemini.last.response_body.startswith(b'{\n  "error": {\n')  # Google pretty-prints

    url = fake_gemini.url + "/v1beta/models/gemini-2.0-flash:generateContent?key=k"
    bad = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]},
        {"contents": []},
    ]
    with http() as h:
        for body in bad:
            r = h.post(url, json=body)
            assert r.status_code == 400, body
            assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_max_tokens_cache_count_and_models(fake_gemini: FakeGemini) -> None:
    c = gemini_client(fake_gemini)
    r = c.models.generate_content(
        model="gemini-2.0-flash",
        contents=USER,
        config=gtypes.GenerateContentConfig(max_output_tokens=2),
    )
    assert r.text == "Hello from"
    assert r.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS

    fake_gemini.script(Ok(cached_tokens=40))
    r = c.models.generate_content(model="gemini-2.0-flash", contents=USER)
    assert r.usage_metadata.cached_content_token_count == 40
    assert r.usage_metadata.prompt_token_count == USER_ONLY + 40  # cached is a subset

    n = c.models.count_tokens(model="gemini-2.0-flash", contents=USER)
    assert n.total_tokens == USER_ONLY
    assert fake_gemini.last.path.endswith(":countTokens")

    assert [m.name for m in c.models.list()] == [f"models/{m}" for m in fake_gemini.models]
    m = c.models.get(model="gemini-2.5-pro")
    assert m.name == "models/gemini-2.5-pro" and "generateContent" in m.supported_actions
    with http() as h:
        r = h.get(fake_gemini.url + "/v1beta/models?key=k&pageSize=2")
    assert [x["name"] for x in r.json()["models"]] == [
        f"models/{m}" for m in fake_gemini.models[:2]
    ]
    assert r.json()["nextPageToken"]


# --------------------------------------------------------------------------- Ollama


def test_ollama_chat_streams_ndjson_by_default(fake_ollama: FakeOllama) -> None:
    body = {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
    }
    with http() as h:
        r = h.post(fake_ollama.url + "/api/chat", json=body)
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in r.content.splitlines()]
    assert r.content.endswith(b"\n")
    assert [x["done"] for x in lines] == [False, False, False, True]
    assert "".join(x["message"]["content"] for x in lines) == "Hello from ollama"
    final = lines[-1]
    assert final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (PROMPT, 3)
    assert final["total_duration"] == (
        final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    )
    assert all(x["model"] == "llama3.2" and x["created_at"] for x in lines)
    assert ollama_prompt_tokens(body) == PROMPT


def test_ollama_non_stream_tags_version_generate(fake_ollama: FakeOllama) -> None:
    with http(base_url=fake_ollama.url) as h:
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": USER}]}
        r = h.post("/api/chat", json={**body, "stream": False})
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        doc = r.json()
        assert doc["message"] == {"role": "assistant", "content": "Hello from ollama"}
        assert doc["done"] is True and doc["eval_count"] == 3
        assert doc["prompt_eval_count"] == USER_ONLY

        r = h.post("/api/chat", json={**body, "stream": False, "options": {"num_predict": 1}})
        assert r.json()["message"]["content"] == "Hello" and r.json()["done_reason"] == "length"

        tags = h.get("/api/tags").json()["models"]
        assert [t["name"] for t in tags] == fake_ollama.models
        assert all(len(t["digest"]) == 64 and t["details"]["format"] == "gguf" for t in tags)
        assert h.get("/api/version").json()["version"]
        assert h.get("/").text == "Ollama is running"

        r = h.post("/api/generate", json={"model": "llama3.2", "prompt": USER})
        lines = [json.loads(x) for x in r.content.splitlines()]
        assert "".join(x["response"] for x in lines) == "Hello from ollama"
        assert lines[-1]["done"] and lines[-1]["prompt_eval_count"] == 3 + 4 + 6


def test_ollama_tool_calls(fake_ollama: FakeOllama) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
    ]
    body = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "use get_weather"}],
        "tools": tools,
    }
    with http(base_url=fake_ollama.url) as h:
        doc = h.post("/api/chat", json={**body, "stream": False}).json()
        assert doc["message"]["tool_calls"] == [
            {"function": {"name": "get_weather", "arguments": WEATHER_ARGS}}
        ]
        lines = [json.loads(x) for x in h.post("/api/chat", json=body).content.splitlines()]
    calls = [c for x in lines for c in x["message"].get("tool_calls", [])]
    assert calls == [{"function": {"name": "get_weather", "arguments": WEATHER_ARGS}}]
    assert lines[-1]["done"] is True


def test_ollama_errors(fake_ollama: FakeOllama) -> None:
    with http(base_url=fake_ollama.url) as h:
        r = h.post("/api/chat", json={"messages": []})
        assert r.status_code == 400 and r.json() == {"error": "model is required"}
        fake_ollama.script(Fail(503))
        r = h.post("/api/chat", json={"model": "m", "messages": []})
        assert r.status_code == 503 and "busy" in r.json()["error"]
        assert h.post("/api/nope", json={}).status_code == 404
    strict = FakeOllama("strict", strict_models=True)
    with strict, http(base_url=strict.url) as h:
        r = h.post("/api/chat", json={"model": "mistral", "messages": []})
        assert r.status_code == 404 and "not found" in r.json()["error"]
        assert h.post("/api/chat", json={"model": "llama3.2", "messages": []}).status_code == 200


async def test_ollama_with_aiohttp_reads_lines_as_they_come(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Slow(chunk_delay=0.05))
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": USER}]}
    stamps: list[float] = []
    texts: list[str] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(fake_ollama.url + "/api/chat", json=body) as r,
    ):
        async for line in r.content:
            stamps.append(time.monotonic())
            texts.append(json.loads(line)["message"]["content"])
    assert "".join(texts) == "Hello from ollama"
    assert len(stamps) == 4 and stamps[-1] - stamps[0] >= 0.12


# --------------------------------------------------------------------------- Bedrock


def test_bedrock_converse_with_botocore(fake_bedrock: FakeBedrock) -> None:
    c = bedrock_client(fake_bedrock)
    r = c.converse(
        modelId=BEDROCK_MODEL,
        system=[{"text": SYSTEM}],
        messages=[{"role": "user", "content": [{"text": USER}]}],
    )
    assert r["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Hello from bedrock"}],
    }
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": PROMPT, "outputTokens": 3, "totalTokens": PROMPT + 3}
    assert r["metrics"]["latencyMs"] > 0
    rec = fake_bedrock.last
    assert rec.notes["model_id"] == BEDROCK_MODEL
    sig = rec.notes["sigv4"]
    assert sig["valid"] is True and sig["error"] is None
    assert (sig["access_key"], sig["region"], sig["service"]) == (
        fake_bedrock.access_key,
        "us-east-1",
        "bedrock",
    )
    assert "host" in sig["signed_headers"] and "x-amz-date" in sig["signed_headers"]
    assert sig["amz_date"] == rec.headers["x-amz-date"]
    assert r["ResponseMetadata"]["RequestId"] == rec.response_request_id
    assert bedrock_prompt_tokens(rec.json) == PROMPT


def test_bedrock_converse_stream_with_botocore(fake_bedrock: FakeBedrock) -> None:
    c = bedrock_client(fake_bedrock)
    r = c.converse_stream(
        modelId=BEDROCK_MODEL, messages=[{"role": "user", "content": [{"text": USER}]}]
    )
    events = list(r["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:4])
    assert text == "Hello from bedrock"
    assert events[5]["messageStop"]["stopReason"] == "end_turn"
    assert events[6]["metadata"]["usage"] == {
        "inputTokens": USER_ONLY,
        "outputTokens": 3,
        "totalTokens": USER_ONLY + 3,
    }


def test_bedrock_frames_decode_with_botocore(fake_bedrock: FakeBedrock) -> None:
    kit = Kit("bedrock", fake_bedrock)
    r = send(kit, stream=True)
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    ours = decode_frames(r.content)
    theirs = botocore_frames(r.content)
    assert [(h, p) for h, p in ours] == [(dict(h), p) for h, p in theirs]
    for headers, payload in theirs:
        assert headers[":message-type"] == "event"
        assert headers[":content-type"] == "application/json"
        assert isinstance(json.loads(payload)["p"], str)  # padding, as the real service sends
    assert theirs[0][0][":event-type"] == "messageStart"


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"a":"\xc3\xa9"}' * 500])
def test_encode_frame_roundtrips_through_botocore(payload: bytes) -> None:
    headers = [(":event-type", "contentBlockDelta"), (":message-type", "event"), ("x", "é")]
    frame = encode_frame(headers, payload)
    ((h, p),) = botocore_frames(frame)
    assert h == dict(headers) and p == payload
    corrupted = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(ValueError):
        decode_frames(corrupted)


def test_sigv4_signature_matches_botocore() -> None:
    url = "http://127.0.0.1:9/model/" + quote(BEDROCK_MODEL, safe="") + "/converse?b=2&a=x%20y"
    body = b'{"messages":[]}'
    req = AWSRequest(
        method="POST", url=url, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials("AKIDEXAMPLE", "s3cr3t"), "bedrock", "eu-west-3").add_auth(req)
    auth = req.headers["Authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers: CIMultiDict[str] = CIMultiDict(
        {k: v for k, v in req.headers.items()} | {"host": "127.0.0.1:9"}
    )
    ours, canonical = sigv4_signature(
        method="POST",
        raw_path=url.split("127.0.0.1:9")[1].split("?")[0],
        raw_query="b=2&a=x%20y",
        headers=headers,
        signed_headers=signed,
        body=body,
        amz_date=req.headers["X-Amz-Date"],
        region="eu-west-3",
        service="bedrock",
        secret_key="s3cr3t",
    )
    assert auth.endswith("Signature=" + ours)
    assert "%253A" in canonical  # the encoded path is encoded once more


def test_bedrock_rejects_bad_signatures(
    fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    msgs = [{"role": "user", "content": [{"text": "hi"}]}]

    def code(client: Any) -> tuple[str, int]:
        with pytest.raises(ClientError) as err:
            client.converse(modelId=BEDROCK_MODEL, messages=msgs)
        return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"][
            "HTTPStatusCode"
        ]

    assert code(bedrock_client(fake_bedrock, aws_secret_access_key="wrong")) == (
        "InvalidSignatureException",
        403,
    )
    assert fake_bedrock.last.notes["sigv4"]["valid"] is False
    assert code(bedrock_client(fake_bedrock, aws_access_key_id="AKIAOTHER")) == (
        "UnrecognizedClientException",
        403,
    )
    assert code(bedrock_client(fake_bedrock, region_name="eu-west-1")) == (
        "InvalidSignatureException",
        403,
    )
    stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    with monkeypatch.context() as m:
        m.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: stale)
        assert code(bedrock_client(fake_bedrock)) == ("InvalidSignatureException", 403)
    assert "expired" in fake_bedrock.last.response_body.decode()

    with http() as h:
        r = h.post(fake_bedrock.url + "/model/x/converse", json={"messages": msgs})
        assert r.status_code == 403
        assert r.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException:")
        # a signed request whose body was changed afterwards
        _, url, headers, body = Kit("bedrock", fake_bedrock).request(stream=False)
        r = h.post(url, headers=headers, content=body.replace(b"say", b"SAY"))
        assert r.status_code == 403 and fake_bedrock.last.notes["sigv4"]["valid"] is False
        assert r.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
        r = h.post(url, headers=headers, content=body)
        assert r.status_code == 200 and fake_bedrock.last.notes["sigv4"]["valid"] is True

    lax = FakeBedrock("lax", verify_signature=False)
    with lax:
        r = bedrock_client(lax, aws_secret_access_key="wrong").converse(
            modelId=BEDROCK_MODEL, messages=msgs
        )
        assert r["output"]["message"]["content"][0]["text"] == "Hello from lax"
        assert lax.last.notes["sigv4"]["valid"] is False


def test_bedrock_errors_and_validation(fake_bedrock: FakeBedrock) -> None:
    c = bedrock_client(fake_bedrock)
    msgs = [{"role": "user", "content": [{"text": "hi"}]}]
    fake_bedrock.script(Fail(429), StreamError(after_chunks=2, status=429))
    with pytest.raises(ClientError) as err:
        c.converse(modelId=BEDROCK_MODEL, messages=msgs)
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["Error"]["Message"]
    r = c.converse_stream(modelId=BEDROCK_MODEL, messages=msgs)
    with pytest.raises(EventStreamError) as mid:
        list(r["stream"])
    assert mid.value.response["Error"]["Code"] == "throttlingException"

    kit = Kit("bedrock", fake_bedrock)
    for extra, needle in [
        ({"model": "x"}, "extraneous key [model]"),
        ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "messages.1.member.role"),
        ({"messages": [{"role": "user", "content": "x"}]}, "content"),
    ]:
        r = send(kit, stream=False, **extra)
        assert r.status_code == 400
        assert r.headers["x-amzn-errortype"].startswith("ValidationException:")
        assert needle in r.json()["message"]


def test_bedrock_tool_use_cache_and_max_tokens(fake_bedrock: FakeBedrock) -> None:
    c = bedrock_client(fake_bedrock)
    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "w",
                    "inputSchema": {"json": WEATHER_SCHEMA},
                }
            }
        ]
    }
    msgs = [{"role": "user", "content": [{"text": "please use get_weather"}]}]
    r = c.converse(modelId=BEDROCK_MODEL, messages=msgs, toolConfig=tool_config)
    assert r["stopReason"] == "tool_use"
    (block,) = r["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "get_weather" and block["toolUse"]["input"] == WEATHER_ARGS
    stream = list(
        c.converse_stream(modelId=BEDROCK_MODEL, messages=msgs, toolConfig=tool_config)["stream"]
    )
    starts = [
        e["contentBlockStart"]["start"]["toolUse"] for e in stream if "contentBlockStart" in e
    ]
    assert [s["name"] for s in starts] == ["get_weather"]
    fragments = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in stream
        if "contentBlockDelta" in e
    ]
    assert json.loads("".join(fragments)) == WEATHER_ARGS

    fake_bedrock.script(Ok(cached_tokens=10, cache_write_tokens=5))
    r = c.converse(modelId=BEDROCK_MODEL, messages=[{"role": "user", "content": [{"text": USER}]}])
    assert r["usage"] == {
        "inputTokens": USER_ONLY,
        "outputTokens": 3,
        "totalTokens": USER_ONLY + 15 + 3,
        "cacheReadInputTokens": 10,
        "cacheWriteInputTokens": 5,
    }
    r = c.converse(modelId=BEDROCK_MODEL, messages=msgs, inferenceConfig={"maxTokens": 1})
    assert r["stopReason"] == "max_tokens"
    assert r["output"]["message"]["content"] == [{"text": "Hello"}]


# --------------------------------------------------------------------------- shared helpers


def test_deterministic_helpers() -> None:
    assert tool_args_for(WEATHER_SCHEMA) == WEATHER_ARGS
    assert tool_args_for({"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}) == {"n": 1}
    assert tool_args_for(None) == {}
    assert pick_tool([("a", None), ("get_weather", 1)], "use get_weather") == ("get_weather", 1)
    assert pick_tool([("a", None)], "nothing here") is None
    for text in ['{"city":"test","unit":"c"}', "", "x" * 17]:
        pieces = json_pieces(text)
        assert "".join(pieces) == text and all(len(p) <= 8 for p in pieces)
    # every provider counts the same conversation the same way
    assert (
        anthropic_prompt_tokens({"system": SYSTEM, "messages": [{"role": "user", "content": USER}]})
        == bedrock_prompt_tokens(
            {
                "system": [{"text": SYSTEM}],
                "messages": [{"role": "user", "content": [{"text": USER}]}],
            }
        )
        == ollama_prompt_tokens(
            {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]}
        )
        == PROMPT
    )


def test_ok_prompt_tokens_below_cache_is_refused(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(Ok(prompt_tokens=5, cached_tokens=10))
    with pytest.raises(anthropic.InternalServerError):
        anthropic_client(fake_anthropic).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def test_fakes_share_the_base() -> None:
    for cls in FAKES.values():
        assert issubclass(cls, FakeUpstream)
