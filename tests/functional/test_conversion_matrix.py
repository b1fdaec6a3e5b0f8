"""Any ingress to any channel type, end to end through a real fastgate process.

One gateway serves one channel per type (openai, openrouter, azure, anthropic,
gemini, ollama, bedrock, mock), each under its own model name, against the provider
fakes on real sockets. Clients are the official openai, anthropic and google-genai
SDKs (plus raw httpx2 where the exact bytes matter). Every expectation is derived
from what the client sent, from the fakes' documented deterministic rules (text
"Hello from <name>", `chat_prompt_tokens`, one completion token per word piece) and
from what the fakes recorded — never from the gateway's own output.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from aiohttp import web
from aiohttp.web_request import BaseRequest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.anthropic_fake import prompt_tokens_for as anthropic_prompt_tokens
from tests.fakes.base import (
    Behaviour,
    DieMidStream,
    Fail,
    FakeUpstream,
    Ok,
    Recorded,
    Slow,
    StreamError,
    chat_prompt_tokens,
    content_pieces,
    dumps,
    json_pieces,
    pick_tool,
    text_of,
    tool_args_for,
)
from tests.fakes.bedrock_fake import FakeBedrock
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.gemini_fake import prompt_tokens_for as gemini_prompt_tokens
from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.openai_fake import CREATED, FakeOpenAI
from tests.fakes.openai_fake import prompt_tokens_for as openai_prompt_tokens
from tests.harness import Gateway, gateway_config, make_key, parse_sse, token

KEY = make_key()
AZURE_KEY = "azure-upstream-key"
ANTHROPIC_KEY = "sk-ant-upstream"
GEMINI_KEY = "gemini-upstream-key"
AZURE_VERSION = "2024-10-21"
AZURE_DEPLOYMENT = "dep-azure-1"
BEDROCK_MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
MOCK_DELAY_MS = 12  # the slow mock channel's per-token delay
DEFAULT_MAX_TOKENS = 321  # the anthropic channel's default_max_tokens (not the 4096 default)

SYSTEM = "You are a terse assistant."
USER = "Say hello to the gateway please"
PROMPT = chat_prompt_tokens([SYSTEM, USER])  # the fakes' rule, identical for every provider

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
WEATHER_ARGS = tool_args_for(WEATHER_SCHEMA)  # what every fake answers: {"city": "test"}
TOOL_PROMPT = "Please use get_weather for Paris"
TOOL_RESULT = "Sunny and 21 degrees"

# a 1x1 transparent PNG
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
IMAGE_URL = "http://images.example.com/cat.png"

INGRESSES = ["openai", "anthropic", "gemini"]
TYPES = ["openai", "openrouter", "azure", "anthropic", "gemini", "ollama", "bedrock", "mock"]
FAKE_TYPES = [t for t in TYPES if t != "mock"]
OPENAI_TYPES = {"openai", "openrouter", "azure"}
PROTOCOL = {t: ("openai" if t in OPENAI_TYPES or t == "mock" else t) for t in TYPES}
# Fakes that cut the answer at the request's max tokens (the OpenAI fake ignores it).
TRUNCATING = {"anthropic", "gemini", "ollama", "bedrock"}

FINISH = {
    "openai": {"stop": "stop", "length": "length", "tool": "tool_calls"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"},
}


def model_of(ctype: str) -> str:
    return f"m-{ctype}"


def channel_of(ctype: str) -> str:
    return f"ch-{ctype}"


def rid() -> str:
    return "conv-" + uuid.uuid4().hex


def http(**kw: Any) -> httpx2.Client:
    """verify=False only skips loading CA certificates (slow); everything is plain HTTP."""
    return httpx2.Client(verify=False, timeout=kw.pop("timeout", 20), **kw)


# --------------------------------------------------------------------------- private upstreams


class OpenAIPlus(FakeOpenAI):
    """FakeOpenAI that also answers tool calls (chat), and optionally serves Azure's
    deployment paths with `api-key` auth. The rest is FakeOpenAI's own behaviour."""

    def __init__(self, name: str, *, azure_key: str | None = None) -> None:
        super().__init__(name)
        self.azure_key = azure_key

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        if self.azure_key is not None:
            m = re.fullmatch(r"/openai/deployments/([^/]+)(/chat/completions)", request.path)
            if m is None:
                return self._fail_response(rec, Fail(404, body={"error": {"code": "404"}}))
            rec.notes["deployment"] = m.group(1)
            rec.notes["api_version"] = request.query.get("api-version")
            if rec.headers.get("api-key") != self.azure_key:
                return self._fail_response(rec, Fail(401, body={"error": {"code": "401"}}))
            # serve it as the OpenAI path (aiohttp caches `path` in the request's _cache)
            request._cache["path"] = "/v1" + m.group(2)
        body = rec.json
        if request.path == "/v1/chat/completions" and isinstance(body, dict):
            tools = [
                (t["function"].get("name", ""), t["function"].get("parameters"))
                for t in body.get("tools") or []
                if isinstance(t, dict) and isinstance(t.get("function"), dict)
            ]
            last_user = ""
            for m in reversed(body.get("messages") or []):
                if isinstance(m, dict) and m.get("role") == "user":
                    last_user = text_of(m.get("content"))
                    break
            picked = pick_tool(tools, last_user)
            if picked is not None and type(behaviour) is Ok and behaviour.content is None:
                return await self._tool_call(request, rec, behaviour, body, picked)
        return await super()._route(request, rec, behaviour)

    async def _tool_call(
        self,
        request: BaseRequest,
        rec: Recorded,
        ok: Ok,
        body: dict,
        picked: tuple[str, Any],
    ) -> web.StreamResponse:
        name, schema = picked
        args = tool_args_for(schema)
        call_id = "call_" + uuid.uuid4().hex[:20]
        pieces = json_pieces(dumps(args))
        prompt = openai_prompt_tokens("/v1/chat/completions", body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 1 + len(pieces),
            "total_tokens": prompt + 1 + len(pieces),
        }
        rec.usage = {**usage, "cached_tokens": 0}
        rec.notes["tool_call"] = {"name": name, "input": args, "id": call_id}
        model = body.get("model", "")
        base = {"id": "chatcmpl-tool", "created": CREATED, "model": model}
        if not body.get("stream"):
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": dumps(args)},
            }
            doc = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": usage,
            }
            return self._json(rec, doc)

        def chunk(delta: dict, finish: str | None) -> bytes:
            obj = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + dumps(obj).encode() + b"\n\n"

        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ],
        }
        events = [chunk(first, None)]
        events += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, None)
            for p in pieces
        ]
        events.append(chunk({}, "tool_calls"))
        if (body.get("stream_options") or {}).get("include_usage"):
            obj = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            events.append(b"data: " + dumps(obj).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, rec, ok, ok, events)


class GarbageUpstream(FakeUpstream):
    """Answers 200 with a well-labelled but malformed body for every protocol, then
    keeps the connection open: the gateway must end the client's response itself."""

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        path = request.path
        body = rec.json if isinstance(rec.json, dict) else {}
        if path == "/api/chat":
            stream = body.get("stream", True) is not False
            ctype = "application/x-ndjson" if stream else "application/json"
            payload = [b'{"model":"x","message":{"role":"assistant","content":"Hi"},"done":fal\n']
            payload.append(b"}}}{{{ not json at all\n")
        elif path.startswith("/model/"):
            stream = path.endswith("/converse-stream")
            ctype = "application/vnd.amazon.eventstream" if stream else "application/json"
            payload = [b"\x00\x00\x00\x30\x00\x00\x00\x10garbage-prelude-crc" + b"\xff" * 40]
        elif ":streamGenerateContent" in path or ":generateContent" in path:
            stream = ":streamGenerateContent" in path
            ctype = "text/event-stream" if stream else "application/json; charset=UTF-8"
            payload = [b'data: {"candidates": [{"content": {"parts": [{"text": \r\n\r\n']
        elif path == "/v1/messages":
            stream = bool(body.get("stream"))
            ctype = "text/event-stream" if stream else "application/json"
            payload = [
                b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
                b'"type":"message","role":"assistant","model":"x","content":[],'
                b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n',
                b"event: content_block_delta\ndata: {this is not json\n\n",
            ]
        else:
            stream = bool(body.get("stream"))
            ctype = "text/event-stream" if stream else "application/json"
            payload = [
                b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"x",'
                b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
                b'"finish_reason":null}]}\n\n',
                b"data: {this is not json\n\n",
            ]
        if not stream:
            rec.status = 200
            return web.Response(
                status=200, body=b'{"broken": [1, 2', headers={"content-type": ctype}
            )
        resp = web.StreamResponse(status=200, headers={"content-type": ctype})
        rec.status = 200
        await resp.prepare(request)
        for p in payload:
            await resp.write(p)
            rec.response_body += p
        await self._wait_client_gone(request)
        return resp

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> Any:
        return {"error": message or "garbage"}


# --------------------------------------------------------------------------- the environment


@dataclass
class Env:
    gw: Gateway
    fakes: dict[str, FakeUpstream]
    garbage: GarbageUpstream
    oa: openai.OpenAI
    an: anthropic.Anthropic
    ge: genai.Client
    ge_v1: genai.Client
    raw: httpx2.Client
    cap: list[httpx2.Request] = field(default_factory=list)
    mock_text: str = ""

    def fake(self, ctype: str) -> Any:
        return self.fakes[ctype]

    def clear(self) -> None:
        for f in self.fakes.values():
            f.clear()
        self.garbage.clear()
        self.cap.clear()


def _channels(fakes: dict[str, Any], garbage: GarbageUpstream) -> list[dict[str, Any]]:
    bed = fakes["bedrock"]
    chans: list[dict[str, Any]] = [
        {
            "name": "ch-openai",
            "type": "openai",
            "base_url": fakes["openai"].url,
            "api_key": "sk-openai-up",
            "models": ["m-openai"],
        },
        {
            "name": "ch-openrouter",
            "type": "openrouter",
            "base_url": fakes["openrouter"].url,
            "api_key": "sk-or-up",
            "models": ["m-openrouter"],
        },
        {
            "name": "ch-azure",
            "type": "azure",
            "base_url": fakes["azure"].url,
            "api_key": AZURE_KEY,
            "api_version": AZURE_VERSION,
            "models": ["m-azure"],
            "deployments": {"m-azure": AZURE_DEPLOYMENT},
        },
        {
            "name": "ch-anthropic",
            "type": "anthropic",
            "base_url": fakes["anthropic"].url,
            "api_key": ANTHROPIC_KEY,
            "models": ["m-anthropic"],
            "default_max_tokens": DEFAULT_MAX_TOKENS,
        },
        {
            "name": "ch-gemini",
            "type": "gemini",
            "base_url": fakes["gemini"].url,
            "api_key": GEMINI_KEY,
            "models": ["m-gemini"],
        },
        {
            "name": "ch-ollama",
            "type": "ollama",
            "base_url": fakes["ollama"].url,
            "models": ["m-ollama"],
        },
        {
            "name": "ch-bedrock",
            "type": "bedrock",
            "base_url": bed.url,
            "region": bed.region,
            "access_key_id": bed.access_key,
            "secret_access_key": bed.secret_key,
            "models": ["m-bedrock"],
            "model_map": {"m-bedrock": BEDROCK_MODEL_ID},
        },
        {"name": "ch-mock", "type": "mock", "models": ["m-mock"]},
        {
            "name": "ch-mock-slow",
            "type": "mock",
            "models": ["m-mock-slow"],
            "delay_ms": MOCK_DELAY_MS,
        },
    ]
    for ctype in FAKE_TYPES:
        if ctype in ("openrouter", "azure"):
            continue
        extra: dict[str, Any] = {"api_key": "sk-garbage"}
        if ctype == "bedrock":
            extra = {
                "region": "us-east-1",
                "access_key_id": "AKIAGARBAGE0000000001",
                "secret_access_key": "garbage-secret",
            }
        chans.append(
            {
                "name": f"bad-{ctype}",
                "type": ctype,
                "base_url": garbage.url,
                "models": [f"bad-{ctype}"],
                **extra,
            }
        )
    return chans


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    fakes: dict[str, Any] = {
        "openai": OpenAIPlus("openai"),
        "openrouter": OpenAIPlus("openrouter"),
        "azure": OpenAIPlus("azure", azure_key=AZURE_KEY),
        "anthropic": FakeAnthropic("anthropic", api_key=ANTHROPIC_KEY),
        "gemini": FakeGemini("gemini", api_key=GEMINI_KEY),
        "ollama": FakeOllama("ollama"),
        "bedrock": FakeBedrock("bedrock"),
    }
    garbage = GarbageUpstream("garbage")
    started: list[FakeUpstream] = []
    gw: Gateway | None = None
    clients: list[Any] = []
    try:
        for f in [*fakes.values(), garbage]:
            f.start()
            started.append(f)
        text = gateway_config(
            _channels(fakes, garbage),
            [token("t1", KEY)],
            routing={"max_attempts": 1},
        )
        gw = Gateway(Path(tmp_path_factory.mktemp("convgw")), text)
        gw.start()
        cap: list[httpx2.Request] = []

        def hook(request: httpx2.Request) -> None:
            request.read()
            cap.append(request)

        hooks = {"request": [hook]}
        oa = openai.OpenAI(
            base_url=gw.url + "/v1", api_key=KEY, max_retries=0, http_client=http(event_hooks=hooks)
        )
        an = anthropic.Anthropic(
            base_url=gw.url, api_key=KEY, max_retries=0, http_client=http(event_hooks=hooks)
        )

        def gclient(version: str | None) -> genai.Client:
            opts = gtypes.HttpOptions(
                base_url=gw.url,
                api_version=version,
                retry_options=gtypes.HttpRetryOptions(attempts=1),
                httpx_client=http(event_hooks=hooks),
            )
            return genai.Client(api_key=KEY, http_options=opts)

        raw = http()
        clients += [oa, an, raw]
        e = Env(gw, fakes, garbage, oa, an, gclient("v1beta"), gclient(None), raw, cap)
        # The mock's answer, read over the OpenAI passthrough (no conversion involved).
        r = raw.post(
            gw.url + "/v1/chat/completions",
            json={"model": "m-mock", "messages": [{"role": "user", "content": USER}]},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 200, r.text
        e.mock_text = r.json()["choices"][0]["message"]["content"]
        assert e.mock_text
        yield e
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                c.close()
        if gw is not None:
            gw.close()
        for f in started:
            f.stop()


@pytest.fixture
def e(env: Env) -> Env:
    """The module's environment, with recorded requests cleared and scripts reset."""
    env.clear()
    for f in env.fakes.values():
        f.set_behaviour(Ok())
    return env


# --------------------------------------------------------------------------- client helpers


@dataclass
class Reply:
    text: str = ""
    finish: str | None = None
    prompt: int | None = None
    completion: int | None = None
    cached: int | None = None
    cache_write: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "args"}
    raw: Any = None


def _enum_name(v: Any) -> str | None:
    if v is None:
        return None
    return getattr(v, "name", None) or str(v)


def openai_chat(
    e: Env, model: str, messages: list[dict], stream: bool, req_id: str, **kw: Any
) -> Reply:
    h = {"x-request-id": req_id}
    out = Reply()
    if not stream:
        r = e.oa.chat.completions.create(model=model, messages=messages, extra_headers=h, **kw)
        ch = r.choices[0]
        out.text = ch.message.content or ""
        out.finish = ch.finish_reason
        for tc in ch.message.tool_calls or []:
            out.calls.append(
                {"id": tc.id, "name": tc.function.name, "args": json.loads(tc.function.arguments)}
            )
        usage = r.usage
        out.raw = r
    else:
        s = e.oa.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=h,
            **kw,
        )
        usage = None
        calls: dict[int, dict[str, Any]] = {}
        for chunk in s:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    out.text += c.delta.content
                for tc in c.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": None, "name": "", "args": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function and tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function and tc.function.arguments:
                        slot["args"] += tc.function.arguments
                if c.finish_reason:
                    out.finish = c.finish_reason
        out.calls = [{**c, "args": json.loads(c["args"] or "{}")} for _, c in sorted(calls.items())]
    if usage is not None:
        out.prompt, out.completion = usage.prompt_tokens, usage.completion_tokens
        details = usage.prompt_tokens_details
        out.cached = (details.cached_tokens if details else None) or 0
    return out


def anthropic_chat(
    e: Env,
    model: str,
    messages: list[dict],
    stream: bool,
    req_id: str,
    *,
    system: str | None = SYSTEM,
    max_tokens: int = 100,
    **kw: Any,
) -> Reply:
    h = {"x-request-id": req_id}
    if system is not None:
        kw["system"] = system
    out = Reply()
    usage: dict[str, Any] = {}
    if not stream:
        m = e.an.messages.create(
            model=model, max_tokens=max_tokens, messages=messages, extra_headers=h, **kw
        )
        for b in m.content:
            if b.type == "text":
                out.text += b.text
            elif b.type == "tool_use":
                out.calls.append({"id": b.id, "name": b.name, "args": b.input})
        out.finish = m.stop_reason
        usage = m.usage.model_dump()
        out.raw = m
    else:
        s = e.an.messages.create(
            model=model,
            max_tokens=max_tokens,
            messages=messages,
            stream=True,
            extra_headers=h,
            **kw,
        )
        blocks: dict[int, dict[str, Any]] = {}
        for ev in s:
            if ev.type == "message_start":
                usage.update({k: v for k, v in ev.message.usage.model_dump().items() if v})
            elif ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                blocks[ev.index] = {
                    "id": ev.content_block.id,
                    "name": ev.content_block.name,
                    "args": "",
                }
            elif ev.type == "content_block_delta":
                if ev.delta.type == "text_delta":
                    out.text += ev.delta.text
                elif ev.delta.type == "input_json_delta":
                    blocks[ev.index]["args"] += ev.delta.partial_json
            elif ev.type == "message_delta":
                out.finish = ev.delta.stop_reason
                usage.update({k: v for k, v in ev.usage.model_dump().items() if v is not None})
        out.calls = [
            {**b, "args": json.loads(b["args"] or "{}")} for _, b in sorted(blocks.items())
        ]
    inp = usage.get("input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    out.prompt = inp + read + write
    out.completion = usage.get("output_tokens")
    out.cached, out.cache_write = read, write
    return out


def gemini_chat(
    e: Env,
    model: str,
    contents: Any,
    stream: bool,
    req_id: str,
    *,
    system: str | None = SYSTEM,
    client: genai.Client | None = None,
    **cfg: Any,
) -> Reply:
    c = client or e.ge
    config = gtypes.GenerateContentConfig(
        system_instruction=system,
        http_options=gtypes.HttpOptions(headers={"x-request-id": req_id}),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        **cfg,
    )
    out = Reply()
    chunks = (
        list(c.models.generate_content_stream(model=model, contents=contents, config=config))
        if stream
        else [c.models.generate_content(model=model, contents=contents, config=config)]
    )
    um = None
    for ch in chunks:
        for cand in ch.candidates or []:
            for p in (cand.content.parts if cand.content else None) or []:
                if p.text:
                    out.text += p.text
                if p.function_call:
                    out.calls.append(
                        {
                            "id": p.function_call.id,
                            "name": p.function_call.name,
                            "args": p.function_call.args,
                            "part": p,
                        }
                    )
            if cand.finish_reason is not None:
                out.finish = _enum_name(cand.finish_reason)
        if ch.usage_metadata is not None:
            um = ch.usage_metadata
    out.raw = chunks
    if um is not None:
        out.prompt = um.prompt_token_count
        out.completion = um.candidates_token_count
        out.cached = um.cached_content_token_count or 0
    return out


def text_turn(e: Env, ingress: str, model: str, stream: bool, req_id: str, **kw: Any) -> Reply:
    """System prompt + one user message through the ingress's SDK."""
    if ingress == "openai":
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        return openai_chat(e, model, msgs, stream, req_id, **kw)
    if ingress == "anthropic":
        return anthropic_chat(e, model, [{"role": "user", "content": USER}], stream, req_id, **kw)
    return gemini_chat(e, model, USER, stream, req_id, **kw)


def expected_text(e: Env, ctype: str) -> str:
    return e.mock_text if ctype == "mock" else f"Hello from {e.fake(ctype).name}"


# --------------------------------------------------------------------------- raw helpers


def post_openai(e: Env, body: dict, **headers: str) -> httpx2.Response:
    h = {"authorization": f"Bearer {KEY}", **headers}
    return e.raw.post(e.gw.url + "/v1/chat/completions", json=body, headers=h)


def post_anthropic(
    e: Env, body: dict, path: str = "/v1/messages", **headers: str
) -> httpx2.Response:
    h = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **headers}
    return e.raw.post(e.gw.url + path, json=body, headers=h)


def post_gemini(
    e: Env,
    model: str,
    method: str,
    body: dict,
    query: str = "",
    version: str = "v1beta",
    **headers: str,
) -> httpx2.Response:
    h = {"x-goog-api-key": KEY, **headers}
    url = f"{e.gw.url}/{version}/models/{model}:{method}" + (f"?{query}" if query else "")
    return e.raw.post(url, json=body, headers=h)


def anthropic_body(model: str, content: Any, **kw: Any) -> dict:
    return {
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **kw,
    }


def gemini_body(parts: list[dict], **kw: Any) -> dict:
    return {"contents": [{"role": "user", "parts": parts}], **kw}


CROSS = [
    (ingress, proto)
    for ingress in INGRESSES
    for proto in ["openai", "anthropic", "gemini", "ollama", "bedrock"]
    if proto != ingress
]


def stream_request(e: Env, ingress: str, model: str) -> tuple[str, dict, dict]:
    """(url, json body, headers) of a raw streaming request in the ingress's protocol."""
    if ingress == "openai":
        body: dict = {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": USER}],
        }
        return e.gw.url + "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"}
    if ingress == "anthropic":
        h = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        return e.gw.url + "/v1/messages", anthropic_body(model, USER, stream=True), h
    alt = "" if ingress == "gemini-array" else "?alt=sse"
    url = f"{e.gw.url}/v1beta/models/{model}:streamGenerateContent{alt}"
    return url, gemini_body([{"text": USER}]), {"x-goog-api-key": KEY}


def assert_ends_with_error_event(ingress: str, data: bytes) -> dict:
    """The stream's last event is an error in the ingress's stream format."""
    events = parse_sse(data)
    assert events, data
    last = events[-1]
    doc = json.loads(last["data"])
    if ingress == "anthropic":
        assert last.get("event") == "error" and doc["type"] == "error", last
        assert doc["error"]["type"] and doc["error"]["message"]
    else:
        assert "error" in doc and doc["error"]["message"], last
    return doc


def assert_error_shape(ingress: str, r: httpx2.Response, status: int) -> dict:
    """The body is the ingress protocol's error document for `status`."""
    assert r.status_code == status, r.text
    doc = r.json()
    if ingress == "openai":
        err = doc["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert "type" in err and "code" in err
    elif ingress == "anthropic":
        assert doc["type"] == "error", doc
        assert set(doc["error"]) >= {"type", "message"} and doc["error"]["message"]
    else:
        err = doc["error"]
        assert err["code"] == status and err["message"] and err["status"].isupper(), doc
    return doc


def upstream_of(e: Env, ctype: str) -> Recorded:
    """The single request a fake received since the test began."""
    reqs = e.fake(ctype).requests
    assert len(reqs) == 1, [(r.path, r.status) for r in reqs]
    return reqs[0]


# =========================================================================== the matrix


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("ingress", INGRESSES)
def test_text_matrix(e: Env, ingress: str, ctype: str, stream: bool) -> None:
    """System prompt + user text, every ingress x every channel type x stream or not:
    the text arrives, the finish reason is mapped, usage reaches client and log."""
    req_id = rid()
    reply = text_turn(e, ingress, model_of(ctype), stream, req_id)
    assert reply.text == expected_text(e, ctype)
    assert reply.finish == FINISH[ingress]["stop"]

    rec = e.gw.record_for(req_id)
    assert rec["ingress"] == ingress
    assert rec["channel"] == channel_of(ctype) and rec["provider"] == ctype
    assert rec["model"] == model_of(ctype)
    assert rec["stream"] is stream and rec["status"] == 200 and rec["error_code"] == ""
    if ctype == "mock":
        # the mock counts in its own way: the log and the client agree, words = tokens
        assert rec["prompt_tokens"] > 0 and rec["prompt_tokens"] == reply.prompt
        assert rec["completion_tokens"] == len(reply.text.split()) == reply.completion
        return
    up = upstream_of(e, ctype)
    assert up.status == 200 and up.completed
    completion = len(content_pieces(reply.text))
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (PROMPT, completion)
    assert (reply.prompt, reply.completion) == (PROMPT, completion)
    assert rec["cached_tokens"] == 0 and rec["cache_write_tokens"] == 0
    assert rec["estimated"] is False
    if ctype == "bedrock":
        assert rec["upstream_model"] == BEDROCK_MODEL_ID
        assert up.notes["model_id"] == BEDROCK_MODEL_ID and up.notes["sigv4"]["valid"]
        assert up.path.endswith("/converse-stream" if stream else "/converse")
    if ctype == "azure":
        assert up.notes["deployment"] == AZURE_DEPLOYMENT
        assert up.notes["api_version"] == AZURE_VERSION
        assert "authorization" not in up.headers
    if ctype == "ollama":
        assert up.path == "/api/chat" and up.json["stream"] is stream
    if ctype == "anthropic":
        assert up.json["system"] in (SYSTEM, [{"type": "text", "text": SYSTEM}])
        assert up.headers["x-api-key"] == ANTHROPIC_KEY or up.notes["auth"] == "bearer"
        assert KEY not in str(up.header_pairs)
    if ctype == "gemini":
        assert up.query_params.get("alt") == ("sse" if stream else None)
        assert "key" not in up.query_params or up.query_params["key"] == GEMINI_KEY


@pytest.mark.parametrize("ctype", ["openai", "gemini", "ollama", "bedrock", "mock"])
def test_anthropic_sdk_stream_helper_accepts_converted_stream(e: Env, ctype: str) -> None:
    """The SDK's own stream accumulator (strict about event order) takes the converted
    stream: text deltas, final message, stop reason and usage."""
    with e.an.messages.stream(
        model=model_of(ctype),
        max_tokens=100,
        system=SYSTEM,
        messages=[{"role": "user", "content": USER}],
    ) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    text = expected_text(e, ctype)
    assert "".join(pieces) == text and len(pieces) > 1
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.role == "assistant"
    if ctype != "mock":
        assert final.usage.output_tokens == len(content_pieces(text))
        assert final.usage.input_tokens == PROMPT


@pytest.mark.parametrize("ctype", ["anthropic", "gemini", "openai", "bedrock", "ollama", "mock"])
@pytest.mark.parametrize("ingress", INGRESSES)
def test_max_tokens_and_length_finish(e: Env, ingress: str, ctype: str) -> None:
    """A small max-tokens limit reaches the upstream in its own field and a cut answer
    comes back with the ingress's 'length' finish reason."""
    req_id = rid()
    if ingress in ("openai", "anthropic"):
        reply = text_turn(e, ingress, model_of(ctype), False, req_id, max_tokens=2)
    else:
        reply = text_turn(e, ingress, model_of(ctype), False, req_id, max_output_tokens=2)
    if ctype == "mock":
        assert reply.finish == FINISH[ingress]["length"] and len(reply.text.split()) == 2
        return
    up = upstream_of(e, ctype)
    limit = {
        "openai": lambda j: j.get("max_completion_tokens", j.get("max_tokens")),
        "anthropic": lambda j: j["max_tokens"],
        "gemini": lambda j: j["generationConfig"]["maxOutputTokens"],
        "ollama": lambda j: j["options"]["num_predict"],
        "bedrock": lambda j: j["inferenceConfig"]["maxTokens"],
    }[PROTOCOL[ctype]]
    assert limit(up.json) == 2
    full = f"Hello from {e.fake(ctype).name}"
    if ctype in TRUNCATING:
        assert reply.text == "".join(content_pieces(full)[:2])
        assert reply.finish == FINISH[ingress]["length"]
    else:
        assert reply.text == full and reply.finish == FINISH[ingress]["stop"]


@pytest.mark.parametrize("ingress", ["openai", "gemini"])
def test_anthropic_channel_gets_default_max_tokens(e: Env, ingress: str) -> None:
    """A client that sent no max tokens: the Anthropic channel's default_max_tokens."""
    text_turn(e, ingress, "m-anthropic", False, rid())
    assert upstream_of(e, "anthropic").json["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("ctype", ["anthropic", "gemini", "ollama", "bedrock", "openai"])
@pytest.mark.parametrize("ingress", INGRESSES)
def test_sampling_parameters_mapped(e: Env, ingress: str, ctype: str) -> None:
    """Stop sequences, temperature, top_p and max tokens land in the upstream's fields."""
    model = model_of(ctype)
    if ingress == "openai":
        r = post_openai(
            e,
            {
                "model": model,
                "messages": [{"role": "user", "content": USER}],
                "stop": ["END", "##"],
                "temperature": 0.25,
                "top_p": 0.5,
                "max_tokens": 50,
            },
        )
    elif ingress == "anthropic":
        r = post_anthropic(
            e,
            anthropic_body(
                model,
                USER,
                stop_sequences=["END", "##"],
                temperature=0.25,
                top_p=0.5,
                max_tokens=50,
            ),
        )
    else:
        cfg = {
            "stopSequences": ["END", "##"],
            "temperature": 0.25,
            "topP": 0.5,
            "maxOutputTokens": 50,
        }
        r = post_gemini(
            e, model, "generateContent", gemini_body([{"text": USER}], generationConfig=cfg)
        )
    assert r.status_code == 200, r.text
    j = upstream_of(e, ctype).json
    proto = PROTOCOL[ctype]
    if proto == "openai":
        stop = j["stop"]
        got = (
            stop if isinstance(stop, list) else [stop],
            j["temperature"],
            j["top_p"],
            j.get("max_completion_tokens", j.get("max_tokens")),
        )
    elif proto == "anthropic":
        got = (j["stop_sequences"], j["temperature"], j["top_p"], j["max_tokens"])
    elif proto == "gemini":
        g = j["generationConfig"]
        got = (g["stopSequences"], g["temperature"], g["topP"], g["maxOutputTokens"])
    elif proto == "ollama":
        o = j["options"]
        got = (o["stop"], o["temperature"], o["top_p"], o["num_predict"])
    else:
        ic = j["inferenceConfig"]
        got = (ic["stopSequences"], ic["temperature"], ic["topP"], ic["maxTokens"])
    assert got == (["END", "##"], 0.25, 0.5, 50)


# --------------------------------------------------------------------------- usage with caches


CACHE_CASES = {
    # channel type: (cached, cache_write) the provider can report
    "anthropic": (5, 7),
    "bedrock": (5, 7),
    "gemini": (6, 0),
    "openai": (4, 0),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("ctype", list(CACHE_CASES))
@pytest.mark.parametrize("ingress", INGRESSES)
def test_cached_and_cache_write_usage(e: Env, ingress: str, ctype: str, stream: bool) -> None:
    """Cache-read and cache-write tokens are mapped to the client's protocol and logged:
    prompt = all input (cached and cache-write included)."""
    cached, write = CACHE_CASES[ctype]
    e.fake(ctype).script(Ok(cached_tokens=cached, cache_write_tokens=write))
    req_id = rid()
    reply = text_turn(e, ingress, model_of(ctype), stream, req_id)
    # FakeOpenAI counts the cached tokens inside its computed prompt; the others add them
    total = PROMPT if ctype == "openai" else PROMPT + cached + write
    rec = e.gw.record_for(req_id)
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) == (
        total,
        cached,
        write,
    )
    assert rec["completion_tokens"] == len(content_pieces(reply.text))
    assert reply.prompt == total and reply.cached == cached
    if ingress == "anthropic":
        assert reply.cache_write == write


# --------------------------------------------------------------------------- tools


def _tool_defs(ingress: str) -> Any:
    desc = "Current weather for a city"
    if ingress == "openai":
        return [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": desc,
                    "parameters": WEATHER_SCHEMA,
                },
            }
        ]
    if ingress == "anthropic":
        return [{"name": "get_weather", "description": desc, "input_schema": WEATHER_SCHEMA}]
    decl = gtypes.FunctionDeclaration(
        name="get_weather",
        description=desc,
        parameters=gtypes.Schema.model_validate(WEATHER_SCHEMA),
    )
    return [gtypes.Tool(function_declarations=[decl])]


def tool_turn(e: Env, ingress: str, model: str, stream: bool, req_id: str) -> Reply:
    tools = _tool_defs(ingress)
    if ingress == "openai":
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TOOL_PROMPT}]
        return openai_chat(e, model, msgs, stream, req_id, tools=tools)
    if ingress == "anthropic":
        return anthropic_chat(
            e, model, [{"role": "user", "content": TOOL_PROMPT}], stream, req_id, tools=tools
        )
    return gemini_chat(e, model, TOOL_PROMPT, stream, req_id, tools=tools)


def result_turn(e: Env, ingress: str, model: str, call: dict[str, Any], req_id: str) -> Reply:
    """Send the tool call back with its result (multi-turn), in the ingress's protocol."""
    tools = _tool_defs(ingress)
    if ingress == "openai":
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": TOOL_PROMPT},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": TOOL_RESULT},
        ]
        return openai_chat(e, model, msgs, False, req_id, tools=tools)
    if ingress == "anthropic":
        msgs = [
            {"role": "user", "content": TOOL_PROMPT},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": call["args"],
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call["id"], "content": TOOL_RESULT}
                ],
            },
        ]
        return anthropic_chat(e, model, msgs, False, req_id, tools=tools)
    contents = [
        gtypes.Content(role="user", parts=[gtypes.Part(text=TOOL_PROMPT)]),
        gtypes.Content(role="model", parts=[call["part"]]),
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part(
                    function_response=gtypes.FunctionResponse(
                        id=call["id"], name=call["name"], response={"result": TOOL_RESULT}
                    )
                )
            ],
        ),
    ]
    return gemini_chat(e, model, contents, False, req_id, tools=tools)


def _check_tool_defs(proto: str, j: dict) -> None:
    """The first upstream request declares get_weather in the upstream's own shape."""
    if proto == "openai":
        fn = j["tools"][0]["function"]
        assert j["tools"][0]["type"] == "function" and fn["name"] == "get_weather"
        schema = fn["parameters"]
    elif proto == "anthropic":
        assert j["tools"][0]["name"] == "get_weather"
        schema = j["tools"][0]["input_schema"]
    elif proto == "gemini":
        decls = j["tools"][0].get("functionDeclarations") or j["tools"][0]["function_declarations"]
        assert decls[0]["name"] == "get_weather"
        schema = decls[0].get("parameters") or decls[0].get("parametersJsonSchema")
    elif proto == "ollama":
        assert j["tools"][0]["type"] == "function"
        assert j["tools"][0]["function"]["name"] == "get_weather"
        schema = j["tools"][0]["function"]["parameters"]
    else:
        spec = j["toolConfig"]["tools"][0]["toolSpec"]
        assert spec["name"] == "get_weather"
        schema = spec["inputSchema"]["json"]
    assert str(schema["type"]).lower() == "object" and "city" in schema["properties"]


def _check_tool_history(proto: str, j: dict) -> str | None:
    """The second upstream request carries the call and its result, well formed in the
    upstream's protocol; returns the call id it uses (None where it has none)."""
    if proto == "openai":
        msgs = j["messages"]
        asst = next(m for m in msgs if m["role"] == "assistant")
        call = asst["tool_calls"][0]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == WEATHER_ARGS
        tool = next(m for m in msgs if m["role"] == "tool")
        assert tool["tool_call_id"] == call["id"] and msgs.index(tool) > msgs.index(asst)
        assert TOOL_RESULT in json.dumps(tool["content"])
        return call["id"]
    if proto == "anthropic":
        msgs = j["messages"]
        asst = next(m for m in msgs if m["role"] == "assistant")
        use = next(b for b in asst["content"] if b["type"] == "tool_use")
        assert use["name"] == "get_weather" and use["input"] == WEATHER_ARGS
        last = msgs[-1]
        assert last["role"] == "user"
        res = next(b for b in last["content"] if b["type"] == "tool_result")
        assert res["tool_use_id"] == use["id"] and TOOL_RESULT in json.dumps(res["content"])
        return use["id"]
    if proto == "gemini":
        contents = j["contents"]
        model_turn = next(c for c in contents if c.get("role") == "model")
        fc_part = next(
            p for p in model_turn["parts"] if "functionCall" in p or "function_call" in p
        )
        fc = fc_part.get("functionCall") or fc_part["function_call"]
        assert fc["name"] == "get_weather" and fc["args"] == WEATHER_ARGS
        last = contents[-1]
        assert last.get("role", "user") in ("user", "function")
        fr_part = next(
            p for p in last["parts"] if "functionResponse" in p or "function_response" in p
        )
        fr = fr_part.get("functionResponse") or fr_part["function_response"]
        assert fr["name"] == "get_weather" and TOOL_RESULT in json.dumps(fr["response"])
        return fc.get("id")
    if proto == "ollama":
        msgs = j["messages"]
        asst = next(m for m in msgs if m["role"] == "assistant")
        fn = asst["tool_calls"][0]["function"]
        assert fn["name"] == "get_weather" and fn["arguments"] == WEATHER_ARGS
        tool = msgs[-1]
        assert tool["role"] == "tool" and TOOL_RESULT in tool["content"]
        return None
    msgs = j["messages"]
    asst = next(m for m in msgs if m["role"] == "assistant")
    use = next(b["toolUse"] for b in asst["content"] if "toolUse" in b)
    assert use["name"] == "get_weather" and use["input"] == WEATHER_ARGS
    last = msgs[-1]
    assert last["role"] == "user"
    res = next(b["toolResult"] for b in last["content"] if "toolResult" in b)
    assert res["toolUseId"] == use["toolUseId"] and TOOL_RESULT in json.dumps(res["content"])
    return use["toolUseId"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("ctype", FAKE_TYPES)
@pytest.mark.parametrize("ingress", INGRESSES)
def test_tool_call_and_result_round_trip(e: Env, ingress: str, ctype: str, stream: bool) -> None:
    """A declared tool the user names -> the upstream answers a call -> the client gets
    it in its own protocol (id, name, args) -> the result goes back upstream well formed."""
    model = model_of(ctype)
    fake = e.fake(ctype)
    req1 = rid()
    reply = tool_turn(e, ingress, model, stream, req1)
    assert len(reply.calls) == 1, reply
    call = reply.calls[0]
    assert call["name"] == "get_weather" and call["args"] == WEATHER_ARGS
    assert reply.finish == FINISH[ingress]["tool"]
    first = upstream_of(e, ctype)
    _check_tool_defs(PROTOCOL[ctype], first.json)
    up_id = first.notes["tool_call"]["id"]
    if ingress in ("openai", "anthropic"):
        assert isinstance(call["id"], str) and call["id"]
        if up_id:
            assert call["id"] == up_id  # the provider's id survives the conversion
    rec = e.gw.record_for(req1)
    assert rec["completion_tokens"] == first.usage["completion_tokens"] > 0
    assert rec["prompt_tokens"] == first.usage["prompt_tokens"]

    fake.clear()
    reply2 = result_turn(e, ingress, model, call, rid())
    second = upstream_of(e, ctype)
    if "tool_call" in second.notes:  # chat-style fakes: the last *user* turn names it still
        assert [c["name"] for c in reply2.calls] == ["get_weather"]
    else:
        assert reply2.text == f"Hello from {fake.name}" and not reply2.calls
    used_id = _check_tool_history(PROTOCOL[ctype], second.json)
    if ingress in ("openai", "anthropic") and up_id and used_id is not None:
        assert used_id == up_id


@pytest.mark.parametrize("ctype", ["anthropic", "gemini", "bedrock", "openai"])
def test_named_tool_choice_mapped(e: Env, ctype: str) -> None:
    """OpenAI's named tool_choice becomes the upstream's forced-tool setting."""
    body = {
        "model": model_of(ctype),
        "messages": [{"role": "user", "content": TOOL_PROMPT}],
        "tools": _tool_defs("openai"),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    r = post_openai(e, body)
    assert r.status_code == 200, r.text
    j = upstream_of(e, ctype).json
    if ctype == "anthropic":
        assert j["tool_choice"] == {"type": "tool", "name": "get_weather"}
    elif ctype == "gemini":
        fcc = j["toolConfig"]["functionCallingConfig"]
        assert fcc["mode"] == "ANY" and fcc["allowedFunctionNames"] == ["get_weather"]
    elif ctype == "bedrock":
        assert j["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    else:
        assert j["tool_choice"] == body["tool_choice"]


@pytest.mark.parametrize("forced", ["any", "named"])
@pytest.mark.parametrize("ingress", ["anthropic", "gemini"])
def test_tool_choice_from_other_ingresses(e: Env, ingress: str, forced: str) -> None:
    """Anthropic's and Gemini's forced tool use become OpenAI's tool_choice."""
    if ingress == "anthropic":
        choice = {"type": "any"} if forced == "any" else {"type": "tool", "name": "get_weather"}
        body = anthropic_body(
            "m-openai", TOOL_PROMPT, tools=_tool_defs("anthropic"), tool_choice=choice
        )
        r = post_anthropic(e, body)
    else:
        fcc: dict[str, Any] = {"mode": "ANY"}
        if forced == "named":
            fcc["allowedFunctionNames"] = ["get_weather"]
        decl = {"name": "get_weather", "parameters": WEATHER_SCHEMA}
        body = gemini_body(
            [{"text": TOOL_PROMPT}],
            tools=[{"functionDeclarations": [decl]}],
            toolConfig={"functionCallingConfig": fcc},
        )
        r = post_gemini(e, "m-openai", "generateContent", body)
    assert r.status_code == 200, r.text
    j = upstream_of(e, "openai").json
    expected = (
        "required" if forced == "any" else {"type": "function", "function": {"name": "get_weather"}}
    )
    assert j["tool_choice"] == expected
    assert j["tools"][0]["function"]["name"] == "get_weather"


# --------------------------------------------------------------------------- images


def _image_request(e: Env, ingress: str, model: str, kind: str) -> httpx2.Response:
    data_url = f"data:image/png;base64,{PNG_B64}"
    if ingress == "openai":
        url = data_url if kind == "base64" else IMAGE_URL
        parts = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return post_openai(e, {"model": model, "messages": [{"role": "user", "content": parts}]})
    if ingress == "anthropic":
        src = (
            {"type": "base64", "media_type": "image/png", "data": PNG_B64}
            if kind == "base64"
            else {"type": "url", "url": IMAGE_URL}
        )
        blocks = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "source": src},
        ]
        return post_anthropic(e, anthropic_body(model, blocks))
    part = (
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}
        if kind == "base64"
        else {"fileData": {"mimeType": "image/png", "fileUri": IMAGE_URL}}
    )
    return post_gemini(
        e, model, "generateContent", gemini_body([{"text": "What is in this picture?"}, part])
    )


def _upstream_image(proto: str, j: dict) -> tuple[str, str]:
    """("base64", data) or ("url", url) from the upstream request's image part."""
    if proto == "openai":
        parts = j["messages"][-1]["content"]
        img = next(p for p in parts if p.get("type") == "image_url")
        url = img["image_url"]["url"]
        if url.startswith("data:"):
            assert url.startswith("data:image/png;base64,")
            return "base64", url.split(",", 1)[1]
        return "url", url
    if proto == "anthropic":
        blocks = j["messages"][-1]["content"]
        src = next(b for b in blocks if b["type"] == "image")["source"]
        if src["type"] == "base64":
            assert src["media_type"] == "image/png"
            return "base64", src["data"]
        assert src["type"] == "url"
        return "url", src["url"]
    if proto == "gemini":
        parts = j["contents"][-1]["parts"]
        for p in parts:
            inline = p.get("inlineData") or p.get("inline_data")
            if inline:
                assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"
                return "base64", inline["data"]
            fd = p.get("fileData") or p.get("file_data")
            if fd:
                return "url", fd.get("fileUri") or fd["file_uri"]
        raise AssertionError(f"no image part in {parts}")
    if proto == "ollama":
        msg = j["messages"][-1]
        assert msg["images"] == [PNG_B64] and "What is in this picture?" in msg["content"]
        return "base64", msg["images"][0]
    blocks = j["messages"][-1]["content"]
    img = next(b["image"] for b in blocks if "image" in b)
    assert img["format"] == "png"
    return "base64", img["source"]["bytes"]


@pytest.mark.parametrize("kind", ["base64", "url"])
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("ingress", INGRESSES)
def test_images(e: Env, ingress: str, ctype: str, kind: str) -> None:
    """Base64 and URL images reach the upstream in its own part shape, or the request
    is refused with a clear 400 (in the ingress's error format) when the target
    cannot take a URL image; nothing is silently dropped."""
    r = _image_request(e, ingress, model_of(ctype), kind)
    if ctype == "mock":
        assert r.status_code == 200, r.text
        return
    url_refused = kind == "url" and ctype in ("ollama", "bedrock")
    if url_refused:
        doc = assert_error_shape(ingress, r, 400)
        assert "image" in json.dumps(doc).lower() or "url" in json.dumps(doc).lower()
        assert e.fake(ctype).request_count == 0
        return
    if kind == "url" and ctype == "gemini" and r.status_code == 400:
        assert_error_shape(ingress, r, 400)  # Gemini takes fileData; a clear 400 is fine too
        return
    assert r.status_code == 200, r.text
    got = _upstream_image(PROTOCOL[ctype], upstream_of(e, ctype).json)
    assert got == (("base64", PNG_B64) if kind == "base64" else ("url", IMAGE_URL))


# --------------------------------------------------------------------------- unsupported


@pytest.mark.parametrize("ctype", ["anthropic", "bedrock", "ollama"])
def test_unsupported_n_is_a_clear_400(e: Env, ctype: str) -> None:
    """`n: 2` cannot be honoured by these providers: a 400 in OpenAI's format, no
    upstream call, rather than one silently dropped choice."""
    r = post_openai(
        e, {"model": model_of(ctype), "n": 2, "messages": [{"role": "user", "content": USER}]}
    )
    doc = assert_error_shape("openai", r, 400)
    assert "n" in doc["error"]["message"]
    assert e.fake(ctype).request_count == 0


def test_unsupported_feature_anthropic_ingress_400(e: Env) -> None:
    """An Anthropic block the converter cannot express (a document of an unknown source
    type) is a 400 in Anthropic's format, not a silently dropped block."""
    blocks = [
        {"type": "text", "text": "read"},
        {"type": "document", "source": {"type": "made_up", "x": 1}},
    ]
    r = post_anthropic(e, anthropic_body("m-openai", blocks))
    assert_error_shape("anthropic", r, 400)
    assert e.fake("openai").request_count == 0


# --------------------------------------------------------------------------- passthrough


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_passthrough_is_byte_identical(e: Env, stream: bool) -> None:
    """Anthropic SDK -> Anthropic channel: the body the SDK sent is the body upstream
    received; the raw response bytes are the fake's; usage is logged."""
    req_id = rid()
    reply = anthropic_chat(e, "m-anthropic", [{"role": "user", "content": USER}], stream, req_id)
    sent = e.cap[-1]
    up = upstream_of(e, "anthropic")
    assert up.body == sent.content
    assert up.headers["x-api-key"] == ANTHROPIC_KEY and KEY not in str(up.header_pairs)
    rec = e.gw.record_for(req_id)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (PROMPT, 3)
    assert reply.text == "Hello from anthropic"

    # the raw response bytes, untouched
    e.clear()
    body = anthropic_body("m-anthropic", USER, system=SYSTEM, stream=stream)
    r = post_anthropic(e, body)
    assert r.status_code == 200
    assert r.content == upstream_of(e, "anthropic").response_body
    assert json.loads(upstream_of(e, "anthropic").body) == body


@pytest.mark.parametrize("mode", ["json", "sse", "array"])
def test_gemini_passthrough_is_byte_identical(e: Env, mode: str) -> None:
    """Gemini -> Gemini channel: request body and response bytes untouched (SSE and the
    JSON-array stream alike), the client key is not forwarded, usage is logged."""
    req_id = rid()
    if mode != "array":
        gemini_chat(e, "m-gemini", USER, mode == "sse", req_id)
        sent = e.cap[-1]
        assert upstream_of(e, "gemini").body == sent.content
        rec = e.gw.record_for(req_id)
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (PROMPT, 3)
        e.clear()
    body = gemini_body([{"text": USER}], systemInstruction={"parts": [{"text": SYSTEM}]})
    method = "generateContent" if mode == "json" else "streamGenerateContent"
    query = f"key={KEY}" + ("&alt=sse" if mode == "sse" else "")
    req_id = rid()
    url = f"{e.gw.url}/v1beta/models/m-gemini:{method}?{query}"
    r = e.raw.post(url, json=body, headers={"x-request-id": req_id})
    assert r.status_code == 200, r.text
    up = upstream_of(e, "gemini")
    assert r.content == up.response_body
    assert json.loads(up.body) == body
    assert up.query_params.get("key") in (None, GEMINI_KEY)
    assert KEY not in up.query and KEY not in str(up.header_pairs)
    rec = e.gw.record_for(req_id)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (PROMPT, 3)
    assert rec["ingress"] == "gemini" and rec["channel"] == "ch-gemini"


# --------------------------------------------------------------------------- ingress details


def test_gemini_sdk_default_v1_path(e: Env) -> None:
    """The google-genai SDK's default api version (/v1/models/...:method) is served."""
    req_id = rid()
    for stream in (False, True):
        reply = gemini_chat(e, "m-anthropic", USER, stream, req_id + str(stream), client=e.ge_v1)
        assert reply.text == "Hello from anthropic" and reply.finish == "STOP"
    assert [r.url.path for r in e.cap] == [
        "/v1/models/m-anthropic:generateContent",
        "/v1/models/m-anthropic:streamGenerateContent",
    ]
    rec = e.gw.record_for(req_id + "True")
    assert rec["ingress"] == "gemini" and rec["stream"] is True


@pytest.mark.parametrize("version", ["v1beta", "v1"])
@pytest.mark.parametrize("ctype", ["anthropic", "gemini", "openai", "bedrock"])
def test_gemini_stream_without_alt_sse_is_a_json_array(e: Env, ctype: str, version: str) -> None:
    """streamGenerateContent without alt=sse: one JSON array, converted or not."""
    url = f"{e.gw.url}/{version}/models/{model_of(ctype)}:streamGenerateContent?key={KEY}"
    body = gemini_body([{"text": USER}], systemInstruction={"parts": [{"text": SYSTEM}]})
    with e.raw.stream("POST", url, json=body) as r:
        raw = r.read()
        assert r.status_code == 200, raw
        assert r.headers["content-type"].startswith("application/json")
    docs = json.loads(raw)
    assert isinstance(docs, list) and docs
    text = "".join(
        p.get("text", "")
        for d in docs
        for c in d.get("candidates", [])
        for p in c.get("content", {}).get("parts", [])
    )
    assert text == f"Hello from {e.fake(ctype).name}"
    finish = [
        c["finishReason"] for d in docs for c in d.get("candidates", []) if c.get("finishReason")
    ]
    assert finish == ["STOP"]
    assert docs[-1]["usageMetadata"]["promptTokenCount"] == PROMPT
    assert docs[-1]["usageMetadata"]["candidatesTokenCount"] == 3


def test_anthropic_auth_headers(e: Env) -> None:
    """Anthropic ingress takes x-api-key or a Bearer token (what the SDK sends)."""
    body = anthropic_body("m-gemini", USER)
    assert post_anthropic(e, body).status_code == 200
    h = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    r = e.raw.post(e.gw.url + "/v1/messages", json=body, headers=h)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "Hello from gemini"
    e.cap.clear()
    anthropic_chat(e, "m-gemini", [{"role": "user", "content": USER}], False, rid())
    sent = e.cap[-1].headers
    assert sent.get("authorization") == f"Bearer {KEY}" or sent.get("x-api-key") == KEY


def test_gemini_auth_key_query_and_header(e: Env) -> None:
    body = gemini_body([{"text": USER}])
    url = f"{e.gw.url}/v1beta/models/m-openai:generateContent"
    r1 = e.raw.post(url, json=body, params={"key": KEY})
    r2 = e.raw.post(url, json=body, headers={"x-goog-api-key": KEY})
    for r in (r1, r2):
        assert r.status_code == 200, r.text
        assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hello from openai"
    # the client's key never reaches an upstream
    for rec in e.fake("openai").requests:
        assert KEY not in rec.query and KEY not in str(rec.header_pairs)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("ingress", INGRESSES)
def test_gateway_errors_in_ingress_format(e: Env, ingress: str) -> None:
    """401 (bad key) and 404 (unknown model) in each ingress protocol's error shape."""
    bad = make_key()
    if ingress == "openai":
        body = {"model": "m-openai", "messages": [{"role": "user", "content": USER}]}
        r401 = post_openai(e, body, authorization=f"Bearer {bad}")
        r404 = post_openai(e, dict(body, model="no-such-model"))
    elif ingress == "anthropic":
        r401 = post_anthropic(e, anthropic_body("m-openai", USER), **{"x-api-key": bad})
        r404 = post_anthropic(e, anthropic_body("no-such-model", USER))
    else:
        body = gemini_body([{"text": USER}])
        r401 = post_gemini(e, "m-openai", "generateContent", body, **{"x-goog-api-key": bad})
        r404 = post_gemini(e, "no-such-model", "generateContent", body)
    d401 = assert_error_shape(ingress, r401, 401)
    d404 = assert_error_shape(ingress, r404, 404)
    if ingress == "anthropic":
        assert d401["error"]["type"] == "authentication_error"
        assert d404["error"]["type"] == "not_found_error"
    elif ingress == "gemini":
        assert d401["error"]["status"] == "UNAUTHENTICATED"
        assert d404["error"]["status"] == "NOT_FOUND"
    else:
        assert d401["error"]["code"] == "invalid_token"
        assert d404["error"]["code"] == "model_not_found"
    assert e.fake("openai").request_count == 0


def test_gateway_errors_through_sdks(e: Env) -> None:
    """The SDKs raise their own typed errors for the gateway's 401/404."""
    bad = make_key()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=e.gw.url, api_key=bad, max_retries=0, http_client=http()
        ).messages.create(
            model="m-openai", max_tokens=10, messages=[{"role": "user", "content": USER}]
        )
    with pytest.raises(anthropic.NotFoundError):
        e.an.messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": USER}]
        )
    with pytest.raises(genai_errors.ClientError) as ei:
        e.ge.models.generate_content(model="nope", contents=USER)
    assert ei.value.code == 404 and ei.value.status == "NOT_FOUND"


UPSTREAM_400 = "upstream says: this request is unacceptable"


def upstream_error_doc(ctype: str, message: str) -> dict:
    """A 400 body in the provider's own error shape."""
    proto = PROTOCOL[ctype]
    if proto == "openai":
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    if proto == "anthropic":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    if proto == "gemini":
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    return {"message": message} if proto == "bedrock" else {"error": message}


@pytest.mark.parametrize(
    ("ingress", "ctype"),
    [
        ("openai", "anthropic"),
        ("openai", "gemini"),
        ("openai", "bedrock"),
        ("openai", "ollama"),
        ("anthropic", "openai"),
        ("anthropic", "gemini"),
        ("gemini", "openai"),
        ("gemini", "anthropic"),
    ],
)
def test_upstream_400_converted_to_ingress_format(e: Env, ingress: str, ctype: str) -> None:
    """An upstream 4xx in one provider's shape reaches the client in its own, with the
    provider's message kept and the status unchanged."""
    e.fake(ctype).script(Fail(400, body=upstream_error_doc(ctype, UPSTREAM_400)))
    model = model_of(ctype)
    if ingress == "openai":
        r = post_openai(e, {"model": model, "messages": [{"role": "user", "content": USER}]})
    elif ingress == "anthropic":
        r = post_anthropic(e, anthropic_body(model, USER))
    else:
        r = post_gemini(e, model, "generateContent", gemini_body([{"text": USER}]))
    doc = assert_error_shape(ingress, r, 400)
    assert UPSTREAM_400 in json.dumps(doc)
    if ingress == "anthropic":
        assert doc["error"]["type"] == "invalid_request_error"
    elif ingress == "gemini":
        assert doc["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert doc["error"]["type"] == "invalid_request_error"


def test_upstream_400_through_openai_sdk(e: Env) -> None:
    fake = e.fake("anthropic")
    fake.script(
        Fail(
            400,
            body={
                "type": "error",
                "error": {"type": "invalid_request_error", "message": UPSTREAM_400},
            },
        )
    )
    with pytest.raises(openai.BadRequestError) as ei:
        e.oa.chat.completions.create(
            model="m-anthropic", messages=[{"role": "user", "content": USER}]
        )
    assert UPSTREAM_400 in str(ei.value.body)


# --------------------------------------------------------------------------- stream timing


SLOW_TEXT = "one two three four five six seven eight"
SLOW_DELAY = 0.06


def first_text_timing(e: Env, ingress: str, model: str, word: str) -> tuple[float, float]:
    """Stream raw; (seconds to the first chunk carrying `word`, seconds to the end)."""
    url, body, h = stream_request(e, ingress, model)
    t0 = time.monotonic()
    seen = b""
    t_first = None
    with e.raw.stream("POST", url, json=body, headers=h) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            seen += chunk
            if t_first is None and f'"{word}'.encode() in seen:
                t_first = time.monotonic()
    t_end = time.monotonic()
    assert t_first is not None, seen
    return t_first - t0, t_end - t0


@pytest.mark.parametrize(
    ("ingress", "ctype"),
    [
        ("openai", "anthropic"),
        ("openai", "gemini"),
        ("openai", "ollama"),
        ("openai", "bedrock"),
        ("anthropic", "openai"),
        ("gemini", "openai"),
        ("anthropic", "bedrock"),
        ("gemini", "ollama"),
        ("gemini-array", "anthropic"),
    ],
)
def test_converted_stream_is_not_buffered(e: Env, ingress: str, ctype: str) -> None:
    """The first converted text reaches the client while the upstream is still
    streaming: its arrival is far ahead of the stream's end."""
    e.fake(ctype).script(Slow(chunk_delay=SLOW_DELAY, content=SLOW_TEXT))
    first, end = first_text_timing(e, ingress, model_of(ctype), SLOW_TEXT.split()[0])
    upstream_span = SLOW_DELAY * (len(content_pieces(SLOW_TEXT)) - 1)
    assert end >= upstream_span * 0.9
    assert end - first >= upstream_span * 0.6, (first, end)


@pytest.mark.parametrize("ingress", [*INGRESSES, "gemini-array"])
def test_mock_delay_streams_incrementally_on_every_ingress(e: Env, ingress: str) -> None:
    """The mock's per-token delay shows through every ingress's converted stream."""
    words = e.mock_text.split()
    first, end = first_text_timing(e, ingress, "m-mock-slow", words[0])
    span = MOCK_DELAY_MS / 1000 * (len(words) - 1)
    assert end >= span * 0.9
    assert end - first >= span * 0.6, (first, end)


# --------------------------------------------------------------------------- malformed upstreams


@pytest.mark.parametrize(("ingress", "bad"), CROSS)
def test_malformed_upstream_stream_ends_with_error_event(e: Env, ingress: str, bad: str) -> None:
    """A 200 stream of garbage from the upstream: the client gets an error in its own
    stream format and the response ends (the upstream keeps the connection open)."""
    req_id = rid()
    url, body, h = stream_request(e, ingress, f"bad-{bad}")
    h["x-request-id"] = req_id
    t0 = time.monotonic()
    with http(timeout=httpx2.Timeout(8.0)) as c, c.stream("POST", url, json=body, headers=h) as r:
        data = r.read()
    assert time.monotonic() - t0 < 6
    if r.status_code != 200:  # refused before any byte: a plain error document
        assert_error_shape(ingress, r, r.status_code)
        assert r.status_code >= 500
    else:
        assert_ends_with_error_event(ingress, data)
    rec = e.gw.record_for(req_id)
    assert rec["status"] >= 500 and rec["error_code"]


def test_malformed_gemini_array_stream_stays_valid_json(e: Env) -> None:
    """Without alt=sse the stream is one JSON array; a malformed upstream ends it with an
    error element and the closing bracket, still parseable."""
    url = f"{e.gw.url}/v1beta/models/bad-anthropic:streamGenerateContent?key={KEY}"
    with http(timeout=httpx2.Timeout(8.0)) as c:
        r = c.post(url, json=gemini_body([{"text": USER}]))
    if r.status_code == 200:
        docs = json.loads(r.content)
        assert isinstance(docs, list) and "error" in docs[-1], r.content
    else:
        assert_error_shape("gemini", r, r.status_code)


PROVIDER_ERROR = "the provider is overloaded right now"


@pytest.mark.parametrize(("ingress", "proto"), CROSS)
def test_in_band_stream_error_is_converted(e: Env, ingress: str, proto: str) -> None:
    """A provider's own mid-stream error event (Anthropic `event: error`, a Bedrock
    exception frame, an Ollama error line, OpenAI/Gemini `data: {"error"}`) reaches the
    client as an error event of its protocol, message kept, and the stream ends."""

    e.fake(proto).script(StreamError(after_chunks=2, status=529, message=PROVIDER_ERROR))
    req_id = rid()
    url, body, h = stream_request(e, ingress, model_of(proto))
    h["x-request-id"] = req_id
    with http(timeout=httpx2.Timeout(8.0)) as c, c.stream("POST", url, json=body, headers=h) as r:
        data = r.read()
    assert r.status_code == 200, data
    doc = assert_ends_with_error_event(ingress, data)
    assert PROVIDER_ERROR in json.dumps(doc)


@pytest.mark.parametrize(("ingress", "proto"), CROSS)
def test_upstream_dies_mid_stream(e: Env, ingress: str, proto: str) -> None:
    """The upstream drops the connection after a few events: no failover (bytes were
    sent), the client's stream ends with an error event of its protocol, quickly."""

    # 5 events: past Anthropic's message_start/content_block_start/ping, so text was sent
    e.fake(proto).script(DieMidStream(after_chunks=5, delay=0.05))
    req_id = rid()
    url, body, h = stream_request(e, ingress, model_of(proto))
    h["x-request-id"] = req_id
    t0 = time.monotonic()
    with http(timeout=httpx2.Timeout(8.0)) as c, c.stream("POST", url, json=body, headers=h) as r:
        data = r.read()
    assert time.monotonic() - t0 < 5
    assert r.status_code == 200, data
    assert_ends_with_error_event(ingress, data)
    rec = e.gw.record_for(req_id)
    assert rec["status"] == 502 and rec["error_code"] and rec["attempts"] == 1


# --------------------------------------------------------------------------- multi-turn

EARLIER_Q = "What is a gateway anyway"
EARLIER_A = "A gateway forwards requests"


def _turns(proto: str, j: dict) -> tuple[str, list[tuple[str, str]]]:
    """(system text, [(role, text)...]) of an upstream request, roles as user/assistant."""
    if proto in ("openai", "ollama"):
        system = " ".join(
            text_of(m["content"]) for m in j["messages"] if m["role"] in ("system", "developer")
        )
        turns = [
            (m["role"], text_of(m["content"]))
            for m in j["messages"]
            if m["role"] not in ("system", "developer")
        ]
        return system, turns
    if proto == "anthropic":
        turns = [(m["role"], text_of(m["content"])) for m in j["messages"]]
        return text_of(j.get("system", "")), turns
    if proto == "gemini":
        si = j.get("systemInstruction") or j.get("system_instruction") or {}
        turns = [
            ("assistant" if c.get("role") == "model" else "user", text_of(c["parts"]))
            for c in j["contents"]
        ]
        return text_of(si.get("parts", [])), turns
    turns = [(m["role"], text_of(m["content"])) for m in j["messages"]]
    return text_of(j.get("system", [])), turns


@pytest.mark.parametrize("ctype", FAKE_TYPES)
@pytest.mark.parametrize("ingress", INGRESSES)
def test_multi_turn_history(e: Env, ingress: str, ctype: str) -> None:
    """A system prompt and a user/assistant/user history arrive upstream in order, with
    the upstream's own roles, and are all counted."""
    model = model_of(ctype)
    req_id = rid()
    if ingress == "openai":
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": EARLIER_Q},
            {"role": "assistant", "content": EARLIER_A},
            {"role": "user", "content": [{"type": "text", "text": USER}]},
        ]
        r = post_openai(e, {"model": model, "messages": msgs}, **{"x-request-id": req_id})
    elif ingress == "anthropic":
        body = {
            "model": model,
            "max_tokens": 100,
            "system": [{"type": "text", "text": SYSTEM}],
            "messages": [
                {"role": "user", "content": EARLIER_Q},
                {"role": "assistant", "content": [{"type": "text", "text": EARLIER_A}]},
                {"role": "user", "content": [{"type": "text", "text": USER}]},
            ],
        }
        r = post_anthropic(e, body, **{"x-request-id": req_id})
    else:
        body = {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [
                {"role": "user", "parts": [{"text": EARLIER_Q}]},
                {"role": "model", "parts": [{"text": EARLIER_A}]},
                {"role": "user", "parts": [{"text": USER}]},
            ],
        }
        r = post_gemini(e, model, "generateContent", body, **{"x-request-id": req_id})
    assert r.status_code == 200, r.text
    system, turns = _turns(PROTOCOL[ctype], upstream_of(e, ctype).json)
    assert system == SYSTEM
    assert turns == [("user", EARLIER_Q), ("assistant", EARLIER_A), ("user", USER)]
    rec = e.gw.record_for(req_id)
    assert rec["prompt_tokens"] == chat_prompt_tokens([SYSTEM, EARLIER_Q, EARLIER_A, USER])


@pytest.mark.parametrize("bad", ["openai", "anthropic", "gemini", "ollama", "bedrock"])
def test_malformed_upstream_body_is_a_clean_502(e: Env, bad: str) -> None:
    """A 200 non-stream body that is not JSON: a gateway error in the client's format."""
    ingress = "anthropic" if bad == "openai" else "openai"
    if ingress == "openai":
        r = post_openai(e, {"model": f"bad-{bad}", "messages": [{"role": "user", "content": USER}]})
    else:
        r = post_anthropic(e, anthropic_body(f"bad-{bad}", USER))
    assert_error_shape(ingress, r, 502)


# --------------------------------------------------------------------------- count tokens


def test_anthropic_count_tokens(e: Env) -> None:
    """count_tokens: passthrough to an Anthropic channel (the fake's count), a local
    estimate for a model only other kinds of channel serve."""
    msgs = [{"role": "user", "content": USER}]
    n = e.an.messages.count_tokens(model="m-anthropic", system=SYSTEM, messages=msgs)
    up = upstream_of(e, "anthropic")
    assert up.path == "/v1/messages/count_tokens"
    assert n.input_tokens == anthropic_prompt_tokens(up.json) == PROMPT
    est = e.an.messages.count_tokens(model="m-openai", system=SYSTEM, messages=msgs)
    assert est.input_tokens > 0
    assert e.fake("openai").request_count == 0


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_gemini_count_tokens(e: Env, version: str) -> None:
    c = e.ge if version == "v1beta" else e.ge_v1
    n = c.models.count_tokens(model="m-gemini", contents=USER)
    up = upstream_of(e, "gemini")
    assert up.path.endswith("/models/m-gemini:countTokens")
    assert n.total_tokens == gemini_prompt_tokens(up.json) == chat_prompt_tokens([USER])
    est = c.models.count_tokens(model="m-ollama", contents=USER)
    assert est.total_tokens > 0
    assert e.fake("ollama").request_count == 0
