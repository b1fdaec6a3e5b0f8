"""OpenAI data plane end to end: the official openai SDK -> a real fastgate process ->
FakeOpenAI. Expectations come from what the SDK sent (captured with an httpx event
hook) and from what the fake recorded and reported, never from the gateway's output.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.openai_fake import FakeOpenAI, Ok, embedding_for, prompt_tokens_for
from tests.harness import Gateway, channel, make_key, parse_sse, token

MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me something about gateways please"},
]
MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
UPSTREAM_KEY = "sk-upstream-a"


class Capture:
    """Keeps the exact requests the SDK put on the wire (httpx request hook)."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def hook(self, request: httpx2.Request) -> None:
        request.read()
        self.requests.append(request)

    async def ahook(self, request: httpx2.Request) -> None:
        await request.aread()
        self.requests.append(request)

    @property
    def body(self) -> bytes:
        return self.requests[-1].content

    @property
    def json(self) -> Any:
        return json.loads(self.requests[-1].content)


def sync_client(gw: Gateway, key: str, cap: Capture | None = None) -> openai.OpenAI:
    hooks = {"request": [cap.hook]} if cap else {}
    return openai.OpenAI(
        base_url=gw.url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=20,
        http_client=httpx2.Client(event_hooks=hooks),
    )


def async_client(gw: Gateway, key: str, cap: Capture | None = None) -> openai.AsyncOpenAI:
    hooks = {"request": [cap.ahook]} if cap else {}
    return openai.AsyncOpenAI(
        base_url=gw.url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=20,
        http_client=httpx2.AsyncClient(event_hooks=hooks),
    )


def one_channel_gateway(
    make_gateway: Callable[..., Gateway],
    fake: FakeOpenAI,
    key: str,
    *,
    model_map: dict[str, str] | None = None,
    tokens: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> Gateway:
    ch = channel("a", fake.url, MODELS, api_key=UPSTREAM_KEY)
    if model_map:
        ch["model_map"] = model_map
    return make_gateway(
        channels=[ch],
        tokens=tokens or [token("t1", key)],
        aliases={"gpt4": "gpt-4o"},
        **kw,
    )


def assert_upstream_auth(fake: FakeOpenAI, client_key: str) -> None:
    """The upstream saw the channel's key, once, and nothing of the client's key."""
    rec = fake.last
    assert rec.headers.getall("authorization") == [f"Bearer {UPSTREAM_KEY}"]
    for name, value in rec.header_pairs:
        assert client_key not in value, f"client key leaked upstream in {name}"


def one_header(headers: httpx2.Headers, name: str) -> str:
    values = headers.get_list(name)
    assert len(values) == 1, f"{name}: expected exactly one, got {values}"
    return values[0]


def with_include_usage(body: dict[str, Any]) -> dict[str, Any]:
    """What the upstream must receive for an OpenAI stream the client sent without usage."""
    out = json.loads(json.dumps(body))
    so = dict(out.get("stream_options") or {})
    so["include_usage"] = True
    out["stream_options"] = so
    return out


def assert_logged_usage(gw: Gateway, request_id: str, usage: dict[str, int]) -> dict[str, Any]:
    rec = gw.record_for(request_id)
    assert rec["prompt_tokens"] == usage["prompt_tokens"]
    assert rec["completion_tokens"] == usage["completion_tokens"]
    assert rec["cached_tokens"] == usage["cached_tokens"]
    assert rec["estimated"] is False
    return rec


# --------------------------------------------------------------------------- chat


def test_chat_non_stream_passthrough(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS, temperature=0)
    comp = raw.parse()
    up = fake_openai.last

    assert up.path == "/v1/chat/completions"
    assert up.body == cap.body, "request body must reach the upstream byte for byte"
    assert_upstream_auth(fake_openai, demo_key)
    assert raw.http_response.content == up.response_body, "response body must pass unchanged"
    assert comp.choices[0].message.content == "Hello from fake"
    expected_prompt = prompt_tokens_for("/v1/chat/completions", {"messages": MSGS})
    assert up.usage["prompt_tokens"] == expected_prompt
    assert comp.usage.prompt_tokens == up.usage["prompt_tokens"]
    assert comp.usage.completion_tokens == up.usage["completion_tokens"]

    rid = one_header(raw.headers, "x-request-id")
    assert one_header(raw.headers, "x-upstream-request-id") == up.response_request_id
    assert rid != up.response_request_id
    log = assert_logged_usage(gw, rid, up.usage)
    assert log["status"] == 200
    assert log["channel"] == "a"
    assert log["key_name"] == "t1"
    assert log["model"] == "gpt-4o" and log["upstream_model"] == "gpt-4o"
    assert log["stream"] is False
    assert log["attempts"] == 1
    assert log["error_code"] in ("", None)


@pytest.mark.parametrize(
    "stream_options", [None, {"include_usage": False}], ids=["absent", "explicit-false"]
)
def test_chat_stream_without_include_usage(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str, stream_options: dict | None
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    kw = {"stream_options": stream_options} if stream_options else {}
    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MSGS, stream=True, **kw
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    up = fake_openai.last

    sent = cap.json
    assert sent.get("stream_options") == stream_options
    assert up.json == with_include_usage(sent), "the only edit is stream_options.include_usage"
    assert_upstream_auth(fake_openai, demo_key)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == up.content
    assert all(ch.choices for ch in chunks), "the usage-only chunk must be removed"
    assert all(ch.usage is None for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    log = assert_logged_usage(gw, rid, up.usage)
    assert log["stream"] is True and log["status"] == 200


@pytest.mark.parametrize("asked", [False, True], ids=["added", "asked"])
def test_chat_stream_in_one_write_is_read_from_its_tail(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str, asked: bool
) -> None:
    """The whole stream in one upstream write: the gateway gets it in one read, over
    the scanner's 1 KiB, and reads its usage from the tail; the usage chunk it added
    is cut, the one the client asked for is left, and the usage is logged."""
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    text = " ".join(f"word{i}" for i in range(60))
    fake_openai.script(Ok(content=text, one_write=True))
    c = sync_client(gw, demo_key)
    kw = {"stream_options": {"include_usage": True}} if asked else {}
    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MSGS, stream=True, **kw
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        body = resp.read()
    up = fake_openai.last
    assert len(up.response_body) > 1024 and up.response_body.count(b"\n\ndata:") > 20
    events = [json.loads(e["data"]) for e in parse_sse(body) if e["data"] != "[DONE]"]
    assert (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        == text
    )
    usage_chunks = [e for e in events if e["choices"] == []]
    if asked:
        assert body == up.response_body, "the provider's bytes reach the client unchanged"
        assert [u["usage"]["completion_tokens"] for u in usage_chunks] == [
            up.usage["completion_tokens"]
        ]
    else:
        assert usage_chunks == [], "the usage-only chunk the gateway asked for is cut"
        raw = up.response_body
        done = raw.rindex(b"data: [DONE]")
        last = raw.rindex(b"data: ", 0, done)  # the provider's usage-only chunk
        assert json.loads(raw[last + 6 : done])["choices"] == []
        assert body == raw[:last] + raw[done:], "nothing else is changed"
    assert_logged_usage(gw, rid, up.usage)


def test_chat_stream_with_include_usage_is_untouched(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MSGS, stream=True, stream_options={"include_usage": True}
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        body = resp.read()
    up = fake_openai.last

    assert up.body == cap.body
    assert body == up.response_body, "the provider's stream bytes must reach the client unchanged"
    events = [e["data"] for e in parse_sse(body)]
    assert events[-1] == "[DONE]"
    usage_chunks = [json.loads(d) for d in events[:-1] if json.loads(d)["choices"] == []]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["prompt_tokens"] == up.usage["prompt_tokens"]
    assert usage_chunks[0]["usage"]["completion_tokens"] == up.usage["completion_tokens"]
    assert_logged_usage(gw, rid, up.usage)


def test_chat_stream_sdk_iteration_with_usage(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    c = sync_client(gw, demo_key)
    chunks = list(
        c.chat.completions.create(
            model="gpt-4o", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    up = fake_openai.last
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == up.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == up.usage["prompt_tokens"]
    assert chunks[-1].usage.completion_tokens == up.usage["completion_tokens"]


def test_cached_tokens_reach_log(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    c = sync_client(gw, demo_key)
    fake_openai.script(Ok(prompt_tokens=1200, completion_tokens=9, cached_tokens=1024))
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
    assert raw.parse().usage.prompt_tokens_details.cached_tokens == 1024
    rid = one_header(raw.headers, "x-request-id")
    assert_logged_usage(gw, rid, fake_openai.last.usage)

    fake_openai.script(Ok(prompt_tokens=2000, completion_tokens=5, cached_tokens=1536))
    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MSGS, stream=True
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        list(resp.parse())
    assert_logged_usage(gw, rid, fake_openai.last.usage)


# --------------------------------------------------------------------------- model names


def test_model_map_renames_only_the_model(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(
        make_gateway, fake_openai, demo_key, model_map={"gpt-4o": "gpt-4o-2024-08-06"}
    )
    cap = Capture()
    c = sync_client(gw, demo_key, cap)

    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS, seed=7)
    up = fake_openai.last
    expected = dict(cap.json, model="gpt-4o-2024-08-06")
    assert up.json == expected
    rid = one_header(raw.headers, "x-request-id")
    log = gw.record_for(rid)
    assert log["model"] == "gpt-4o"
    assert log["upstream_model"] == "gpt-4o-2024-08-06"

    chunks = list(c.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True))
    up = fake_openai.last
    assert up.json == with_include_usage(dict(cap.json, model="gpt-4o-2024-08-06"))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == up.content

    # a model without a mapping passes untouched
    c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert fake_openai.last.body == cap.body


def test_alias_resolves(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    raw = c.chat.completions.with_raw_response.create(model="gpt4", messages=MSGS)
    assert raw.parse().choices[0].message.content == "Hello from fake"
    up = fake_openai.last
    assert up.json == dict(cap.json, model="gpt-4o")
    log = gw.record_for(one_header(raw.headers, "x-request-id"))
    assert log["model"] == "gpt-4o"
    assert log["status"] == 200


# --------------------------------------------------------------------------- other endpoints


def test_completions(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    raw = c.completions.with_raw_response.create(model="gpt-4o", prompt="count to three please")
    r = raw.parse()
    up = fake_openai.last
    assert up.path == "/v1/completions"
    assert up.body == cap.body
    assert r.choices[0].text == up.content
    assert r.usage.prompt_tokens == up.usage["prompt_tokens"] == 5
    assert_logged_usage(gw, one_header(raw.headers, "x-request-id"), up.usage)

    with c.completions.with_streaming_response.create(
        model="gpt-4o", prompt="count to three please", stream=True
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        chunks = list(resp.parse())
    up = fake_openai.last
    assert up.json == with_include_usage(cap.json)
    assert "".join(ch.choices[0].text for ch in chunks) == up.content
    assert all(ch.choices for ch in chunks)
    assert_logged_usage(gw, rid, up.usage)


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_embeddings(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str, encoding_format: str | None
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    inputs = ["the quick brown fox", "jumps"]
    kw = {"encoding_format": encoding_format} if encoding_format else {}
    raw = c.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=inputs, dimensions=4, **kw
    )
    r = raw.parse()
    up = fake_openai.last
    assert up.path == "/v1/embeddings"
    assert up.body == cap.body
    assert [d.embedding for d in r.data] == [embedding_for(t, 4) for t in inputs]
    assert r.usage.prompt_tokens == up.usage["prompt_tokens"] == 5
    assert_logged_usage(gw, one_header(raw.headers, "x-request-id"), up.usage)


def test_responses_non_stream(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    raw = c.responses.with_raw_response.create(model="gpt-4o", input="what is a gateway")
    r = raw.parse()
    up = fake_openai.last
    assert up.path == "/v1/responses"
    assert up.body == cap.body
    assert r.output_text == up.content
    assert r.usage.input_tokens == up.usage["prompt_tokens"]
    assert_logged_usage(gw, one_header(raw.headers, "x-request-id"), up.usage)


def test_responses_stream(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = sync_client(gw, demo_key, cap)
    with c.responses.with_streaming_response.create(
        model="gpt-4o", input="what is a gateway", stream=True
    ) as resp:
        rid = one_header(resp.headers, "x-request-id")
        events = list(resp.parse())
    up = fake_openai.last
    # The Responses API has no stream_options.include_usage: nothing may be added.
    assert up.status == 200, up.response_body
    assert up.body == cap.body
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == up.content
    assert events[-1].response.usage.output_tokens == up.usage["completion_tokens"]
    log = assert_logged_usage(gw, rid, up.usage)
    assert log["stream"] is True


def test_other_post_endpoint_is_forwarded(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    body = b'{"model": "gpt-4o-mini", "input": "is this fine?"}'
    r = httpx2.post(
        gw.url + "/v1/moderations",
        content=body,
        headers={"authorization": f"Bearer {demo_key}", "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/v1/moderations", "model": "gpt-4o-mini"}
    assert fake_openai.last.body == body
    assert_upstream_auth(fake_openai, demo_key)


# --------------------------------------------------------------------------- async client


async def test_async_client_chat_and_stream(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    cap = Capture()
    c = async_client(gw, demo_key, cap)
    try:
        r = await c.chat.completions.create(model="gpt-4o", messages=MSGS)
        up = fake_openai.last
        assert up.body == cap.body
        assert r.choices[0].message.content == up.content
        assert r.usage.total_tokens == up.usage["total_tokens"]

        stream = await c.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)
        parts = [ch.choices[0].delta.content or "" async for ch in stream]
        up = fake_openai.last
        assert "".join(parts) == up.content
        assert up.json == with_include_usage(cap.json)

        events = [
            e async for e in await c.responses.create(model="gpt-4o", input="hi there", stream=True)
        ]
        assert events[-1].type == "response.completed"
        assert fake_openai.last.body == cap.body
    finally:
        await c.close()


async def test_async_concurrent_streams_keep_their_own_usage(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    fake_openai.set_behaviour(Ok(chunk_delay=0.02))
    c = async_client(gw, demo_key)

    async def one(i: int) -> tuple[str, str]:
        msgs = [{"role": "user", "content": " ".join(["word"] * (i + 1))}]
        async with c.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=msgs, stream=True
        ) as resp:
            rid = one_header(resp.headers, "x-request-id")
            text = "".join([ch.choices[0].delta.content or "" async for ch in await resp.parse()])
        return rid, text

    try:
        results = await asyncio.gather(*(one(i) for i in range(8)))
    finally:
        await c.close()
    assert all(text == "Hello from fake" for _, text in results)
    by_words = {
        len(r.json["messages"][0]["content"].split()): r.usage["prompt_tokens"]
        for r in fake_openai.requests
    }
    assert len(by_words) == 8
    for i, (rid, _) in enumerate(results):
        log = gw.record_for(rid)
        assert log["prompt_tokens"] == by_words[i + 1]
        assert log["status"] == 200 and log["stream"] is True


def test_upstream_connections_are_kept_alive(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    c = sync_client(gw, demo_key)
    for i in range(10):
        if i % 2:
            list(c.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True))
        else:
            c.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert fake_openai.request_count == 10
    assert fake_openai.connections_opened <= 2, "the upstream pool should reuse connections"


def test_access_log_record_fields(make_gateway, fake_openai: FakeOpenAI, demo_key: str) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    c = sync_client(gw, demo_key)
    fake_openai.script(Ok(first_byte_delay=0.2))
    t0 = time.time()
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MSGS, extra_headers={"x-fastgate-tag": "bench-run-7"}
    )
    t1 = time.time()
    log = gw.record_for(one_header(raw.headers, "x-request-id"))
    assert log["tag"] == "bench-run-7"
    assert log["ingress"] == "openai"
    assert log["provider"] == "openai"
    assert log["group"] == "default"
    assert log["client_ip"] == "127.0.0.1"
    assert log["cache_hit"] is False
    assert t0 - 1 <= log["ts"] <= t1 + 1
    assert 200 <= log["ttfb_ms"] <= log["latency_ms"] <= (t1 - t0) * 1000 + 50
    assert isinstance(log["cost_micros"], int)


# --------------------------------------------------------------------------- models & ids


def test_models_lists_what_the_key_may_use(
    make_gateway, make_fake: Callable[..., FakeOpenAI], demo_key: str
) -> None:
    a, v = make_fake("a"), make_fake("v")
    restricted = make_key()
    gw = make_gateway(
        channels=[
            channel("a", a.url, ["gpt-4o", "gpt-4o-mini"]),
            channel("v", v.url, ["secret-model"], groups=["vip"]),
        ],
        tokens=[
            token("t1", demo_key),
            token("narrow", restricted, models=["gpt-4o-mini"]),
        ],
        aliases={"gpt4": "gpt-4o"},
    )
    ids = {m.id for m in sync_client(gw, demo_key).models.list()}
    assert ids == {"gpt-4o", "gpt-4o-mini", "gpt4"}
    narrow = {m.id for m in sync_client(gw, restricted).models.list()}
    assert "gpt-4o-mini" in narrow
    assert "gpt-4o" not in narrow and "secret-model" not in narrow
    assert a.request_count == 0 and v.request_count == 0


def test_request_id_echoed_or_generated(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    c = sync_client(gw, demo_key)

    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MSGS, extra_headers={"x-request-id": "client-chosen-id-42"}
    )
    assert one_header(raw.headers, "x-request-id") == "client-chosen-id-42"
    assert one_header(raw.headers, "x-upstream-request-id") == fake_openai.last.response_request_id
    assert gw.record_for("client-chosen-id-42")["status"] == 200

    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o",
        messages=MSGS,
        stream=True,
        extra_headers={"x-request-id": "client-stream-id-43"},
    ) as resp:
        assert one_header(resp.headers, "x-request-id") == "client-stream-id-43"
        assert one_header(resp.headers, "x-upstream-request-id").startswith("req_")
        list(resp.parse())
    assert one_header(resp.headers, "x-upstream-request-id") == fake_openai.last.response_request_id

    generated = set()
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
        rid = one_header(raw.headers, "x-request-id")
        assert rid and rid != fake_openai.last.response_request_id
        generated.add(rid)
    assert len(generated) == 3

    # gateway-made errors carry one too
    bad = httpx2.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o"}, timeout=10)
    assert bad.status_code == 401
    assert one_header(bad.headers, "x-request-id")


# --------------------------------------------------------------------------- process controls


def test_sigterm_exits_zero_and_flushes_the_log(
    make_gateway, fake_openai: FakeOpenAI, demo_key: str
) -> None:
    gw = one_channel_gateway(make_gateway, fake_openai, demo_key)
    assert gw.rss_bytes() > 1_000_000
    assert gw.cpu_seconds() > 0
    c = sync_client(gw, demo_key)
    ids = []
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
        ids.append(one_header(raw.headers, "x-request-id"))
    assert gw.stop() == 0
    logged = {r["request_id"] for r in gw.access_log_records()}
    assert set(ids) <= logged
