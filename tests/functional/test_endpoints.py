"""Endpoint coverage for a drop-in base URL, each through the SDK that calls it.

A real fastgate process in front of fake upstreams (tests/fakes/): model
listings in the OpenAI, Anthropic and Gemini shapes (`models.list` / `.retrieve`
/ `.get` of each SDK), OpenAI embeddings served by Gemini, Ollama and Bedrock
channels (request and response converted, usage recorded), and the OpenAI calls
that carry no model (files, batches, audio, images...) passed through to the
key's group's OpenAI channel, multipart uploads streamed. Expectations come from
the config and from what the fakes recorded, never from the gateway's output.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.fakes.base import embedding_for
from tests.fakes.bedrock_fake import FakeBedrock
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, channel, gateway_config, make_key, token

OPENAI_MODELS = ["gpt-4o", "gpt-4o-mini", "whisper-1", "gpt-image-1"]
VIP_MODELS = ["vip-model"]
ALIASES = {"gpt4": "gpt-4o"}
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
PRICED = ["g-embed", "all-minilm", "titan", "cohere", "gpt-image-1"]
MICROS_PER_TOKEN = 1000  # their price: 1000 USD per 1M input tokens


@dataclass
class Env:
    gw: Gateway
    oa: FakeOpenAI
    oa2: FakeOpenAI
    ge: FakeGemini
    ol: FakeOllama
    bed: FakeBedrock
    key: str  # group default, no allow-list
    narrow: str  # allow-list: gpt-4o only
    vip: str  # group vip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    fakes = [
        FakeOpenAI("oa"),
        FakeOpenAI("oa2"),
        FakeGemini("ge"),
        FakeOllama("ol"),
        FakeBedrock("bed"),
    ]
    for f in fakes:
        f.start()
    oa, oa2, ge, ol, bed = fakes
    keys = [make_key() for _ in range(3)]
    chans = [
        channel("oa", oa.url, OPENAI_MODELS, priority=5),
        channel("oa2", oa2.url, ["gpt-4o"], priority=1),
        channel("oa-vip", oa2.url, VIP_MODELS, groups=["vip"]),
        {
            "name": "ge",
            "type": "gemini",
            "base_url": ge.url,
            "api_key": "g-key",
            "models": ["g-embed"],
            "model_map": {"g-embed": "gemini-embedding-001"},
        },
        {"name": "ol", "type": "ollama", "base_url": ol.url, "models": ["all-minilm"]},
        {
            "name": "bed",
            "type": "bedrock",
            "base_url": bed.url,
            "region": bed.region,
            "access_key_id": bed.access_key,
            "secret_access_key": bed.secret_key,
            "models": ["titan", "cohere"],
            "model_map": {"titan": TITAN, "cohere": COHERE},
        },
    ]
    toks = [
        token("full", keys[0]),
        token("narrow", keys[1], models=["gpt-4o"]),
        token("vip", keys[2], group="vip"),
    ]
    text = gateway_config(
        chans,
        toks,
        aliases=ALIASES,
        server={"max_body_bytes": 1024 * 1024},  # an upload bigger than this streams
        groups=[{"name": "vip", "ratio": 1.0}],
        prices=[{"model": m, "input": 1000.0, "output": 0.0} for m in PRICED],
    )
    gw = Gateway(Path(tmp_path_factory.mktemp("endpoints")), text).start()
    try:
        yield Env(gw, oa, oa2, ge, ol, bed, *keys)
    finally:
        gw.close()
        for f in fakes:
            f.stop()


def oa_client(env: Env, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=env.gw.url + "/v1",
        api_key=key or env.key,
        max_retries=0,
        timeout=20,
        http_client=httpx2.Client(),
    )


def group_names(models: list[str], aliases: dict[str, str]) -> list[str]:
    """What the config lets a key of the group use: its models and their aliases."""
    return sorted(set(models) | {a for a, t in aliases.items() if t in models})


DEFAULT_GROUP = group_names(
    [*OPENAI_MODELS, "gpt-4o", "g-embed", "all-minilm", "titan", "cohere"], ALIASES
)


# --------------------------------------------------------------------------- model listings


def test_openai_models_list_and_retrieve(env: Env) -> None:
    c = oa_client(env)
    assert sorted(m.id for m in c.models.list()) == DEFAULT_GROUP
    m = c.models.retrieve("gpt-4o")
    assert (m.id, m.object) == ("gpt-4o", "model")
    assert c.models.retrieve("gpt4").id == "gpt4"  # an alias is a model name too
    with pytest.raises(openai.NotFoundError) as exc:
        c.models.retrieve("vip-model")  # another group's model
    body = exc.value.response.json()
    assert body["error"]["code"] == "model_not_found"
    assert "vip-model" in body["error"]["message"]
    # the allow-list narrows both the list and what can be retrieved
    narrow = oa_client(env, env.narrow)
    assert sorted(m.id for m in narrow.models.list()) == ["gpt-4o", "gpt4"]
    with pytest.raises(openai.NotFoundError):
        narrow.models.retrieve("gpt-4o-mini")
    with pytest.raises(openai.AuthenticationError):
        oa_client(env, make_key()).models.retrieve("gpt-4o")


def test_anthropic_models_list_shape_and_pages(env: Env) -> None:
    c = anthropic.Anthropic(
        base_url=env.gw.url, api_key=env.key, max_retries=0, http_client=httpx2.Client()
    )
    listed = list(c.models.list(limit=3))  # auto-paging over after_id
    assert [m.id for m in listed] == DEFAULT_GROUP
    assert all(m.type == "model" and m.display_name == m.id for m in listed)
    page = c.models.list(limit=2)
    assert page.has_more and page.first_id == DEFAULT_GROUP[0]
    assert page.last_id == DEFAULT_GROUP[1]
    assert c.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(anthropic.NotFoundError) as exc:
        c.models.retrieve("vip-model")
    assert exc.value.response.json()["error"]["type"] == "not_found_error"
    vip = anthropic.Anthropic(
        base_url=env.gw.url, api_key=env.vip, max_retries=0, http_client=httpx2.Client()
    )
    assert [m.id for m in vip.models.list()] == VIP_MODELS
    # raw: anthropic-version with a Bearer key picks the Anthropic shape too
    r = httpx2.get(
        env.gw.url + "/v1/models?limit=1&after_id=" + DEFAULT_GROUP[0],
        headers={"authorization": f"Bearer {env.key}", "anthropic-version": "2023-06-01"},
    )
    doc = r.json()
    assert [d["id"] for d in doc["data"]] == [DEFAULT_GROUP[1]]
    assert doc["data"][0]["created_at"].endswith("Z")
    bad = httpx2.get(env.gw.url + "/v1/models", headers={"x-api-key": make_key()})
    assert bad.status_code == 401
    assert bad.json()["type"] == "error"
    assert bad.json()["error"]["type"] == "authentication_error"


def genai_client(env: Env, key: str, version: str | None = None) -> genai.Client:
    opts = gtypes.HttpOptions(
        base_url=env.gw.url,
        api_version=version,
        retry_options=gtypes.HttpRetryOptions(attempts=1),
        httpx_client=httpx2.Client(),
    )
    return genai.Client(api_key=key, http_options=opts)


def test_gemini_models_list_and_get(env: Env) -> None:
    c = genai_client(env, env.key)
    names = [m.name for m in c.models.list(config={"page_size": 4})]  # 4 per page
    assert names == [f"models/{n}" for n in DEFAULT_GROUP]
    m = c.models.get(model="g-embed")
    assert m.name == "models/g-embed"
    assert "generateContent" in m.supported_actions
    with pytest.raises(genai.errors.ClientError) as exc:
        c.models.get(model="vip-model")
    assert exc.value.code == 404
    assert exc.value.status == "NOT_FOUND"
    # ?key= and the v1 API path (/v1/models with a Gemini key)
    r = httpx2.get(f"{env.gw.url}/v1/models?key={env.vip}")
    assert r.json() == {
        "models": [
            {
                "name": "models/vip-model",
                "baseModelId": "vip-model",
                "version": "fastgate",
                "displayName": "vip-model",
                "description": "vip-model, served by fastgate",
                "supportedGenerationMethods": [
                    "generateContent",
                    "streamGenerateContent",
                    "countTokens",
                ],
            }
        ]
    }
    bad = httpx2.get(f"{env.gw.url}/v1beta/models", headers={"x-goog-api-key": make_key()})
    assert bad.status_code == 401
    assert bad.json()["error"]["status"] == "UNAUTHENTICATED"
    # listings are answered locally: no upstream saw any of them
    assert not [r for r in env.ge.requests if r.method == "GET"]


def _json(r: Any) -> Any:
    return json.loads(r.content)


# --------------------------------------------------------------------------- embeddings


def est_tokens(texts: list[str]) -> int:
    """The gateway's documented estimate of input tokens: ceil(characters / 4)."""
    return -(-sum(len(t) for t in texts) // 4)


def record(env: Env, resp: Any) -> dict[str, Any]:
    return env.gw.record_for(resp.headers["x-request-id"])


def test_embeddings_through_gemini(env: Env) -> None:
    c = oa_client(env)
    raw = c.embeddings.with_raw_response.create(model="g-embed", input="the quick brown fox")
    r = raw.parse()
    up = env.ge.last
    assert up.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert up.json == {"content": {"parts": [{"text": "the quick brown fox"}]}}
    assert up.headers["x-goog-api-key"] == "g-key"
    assert r.data[0].embedding == embedding_for("the quick brown fox", 8)  # base64 decoded
    assert (r.object, r.model, r.data[0].index) == ("list", "g-embed", 0)
    # the Gemini API reports no token count: the gateway's estimate, in answer and record
    n = est_tokens(["the quick brown fox"])
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (n, n)
    rec = record(env, raw)
    assert (rec["channel"], rec["prompt_tokens"], rec["estimated"]) == ("ge", n, True)
    assert rec["cost_micros"] == n * MICROS_PER_TOKEN  # billed like any priced model

    texts = ["one two", "three four five"]
    r = c.embeddings.create(model="g-embed", input=texts, dimensions=4, encoding_format="float")
    up = env.ge.last
    assert up.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert up.json == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 4,
            }
            for t in texts
        ]
    }
    assert [d.embedding for d in r.data] == [embedding_for(t, 4) for t in texts]
    assert [d.index for d in r.data] == [0, 1]


def test_embeddings_through_ollama(env: Env) -> None:
    c = oa_client(env)
    texts = ["alpha beta", "gamma"]
    raw = c.embeddings.with_raw_response.create(model="all-minilm", input=texts)
    r = raw.parse()
    up = env.ol.last
    assert (up.path, up.json) == ("/api/embed", {"model": "all-minilm", "input": texts})
    assert [d.embedding for d in r.data] == [embedding_for(t, 8) for t in texts]
    n = up.usage["prompt_tokens"]  # the fake's prompt_eval_count
    assert r.usage.prompt_tokens == n
    rec = record(env, raw)
    assert (rec["channel"], rec["prompt_tokens"], rec["estimated"]) == ("ol", n, False)
    assert rec["cost_micros"] == n * MICROS_PER_TOKEN


def test_embeddings_through_bedrock_titan_and_cohere(env: Env) -> None:
    c = oa_client(env)
    raw = c.embeddings.with_raw_response.create(
        model="titan", input="red green blue", dimensions=256
    )
    r = raw.parse()
    up = env.bed.last
    assert up.path == "/model/amazon.titan-embed-text-v2:0/invoke"
    assert up.json == {"inputText": "red green blue", "dimensions": 256}
    assert up.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert r.data[0].embedding == embedding_for("red green blue", 256)
    n = up.usage["prompt_tokens"]  # inputTextTokenCount
    assert r.usage.prompt_tokens == n
    rec = record(env, raw)
    assert (rec["prompt_tokens"], rec["cost_micros"]) == (n, n * MICROS_PER_TOKEN)

    texts = ["search me", "and me too"]
    raw = c.embeddings.with_raw_response.create(model="cohere", input=texts)
    r = raw.parse()
    up = env.bed.last
    assert up.path == f"/model/{COHERE}/invoke"
    assert up.json == {"texts": texts, "input_type": "search_document"}
    assert [d.embedding for d in r.data] == [embedding_for(t, 1024) for t in texts]
    n = up.usage["prompt_tokens"]  # from the X-Amzn-Bedrock-Input-Token-Count header
    assert r.usage.prompt_tokens == n
    assert record(env, raw)["prompt_tokens"] == n

    before = env.bed.request_count
    with pytest.raises(openai.BadRequestError) as exc:
        c.embeddings.create(model="titan", input=["a", "b"])
    assert "Titan embeds one text per request" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        c.embeddings.create(model="cohere", input=[[1, 2, 3]])
    assert "token-id input" in exc.value.message
    assert env.bed.request_count == before  # refused before any upstream call


def test_embeddings_encoding_format_refused_clearly(env: Env) -> None:
    r = httpx2.post(
        env.gw.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {env.key}"},
        json={"model": "all-minilm", "input": "x", "encoding_format": "int8"},
    )
    assert r.status_code == 400
    assert "encoding_format" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- passthrough


def assert_channel_key_only(rec: Any, env: Env, channel_key: str) -> None:
    """The upstream saw the channel's key, and nothing of the client's or the gateway's."""
    assert rec.headers.getall("authorization") == [f"Bearer {channel_key}"]
    for name, value in rec.header_pairs:
        assert env.key not in value, name
        assert name.lower() != "x-fastgate-channel"


def no_cost_record(env: Env, raw: Any, channel: str = "oa") -> dict[str, Any]:
    rec = record(env, raw)
    assert (rec["channel"], rec["model"], rec["status"]) == (channel, "", 200)
    assert rec["cost_micros"] == 0 and not rec["unpriced"]
    return rec


class SlowFile:
    """A file object whose reads take a while: the SDK's upload is slow and, its
    length unknown, sent chunked. `done_at`: when the last read returned."""

    def __init__(self, data: bytes, piece: int, pause: float) -> None:
        self.data, self.piece, self.pause = data, piece, pause
        self.pos = 0
        self.done_at = 0.0
        self.name = "slow.bin"

    def read(self, n: int = -1) -> bytes:
        time.sleep(self.pause)
        out = self.data[self.pos : self.pos + self.piece]
        self.pos += len(out)
        if not out:
            self.done_at = time.monotonic()
        return out


def test_files_create_list_retrieve_content_delete(env: Env) -> None:
    c = oa_client(env)
    data = os.urandom(4 * 1024 * 1024)  # 4x max_body_bytes: collected, it would be a 413
    raw = c.files.with_raw_response.create(
        file=("data.jsonl", data, "application/jsonl"), purpose="batch"
    )
    f = raw.parse()
    up = env.oa.last
    assert (up.method, up.path) == ("POST", "/v1/files")
    assert up.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert env.oa.files[f.id] == data  # the exact bytes reached the upstream
    assert (f.bytes, f.filename, f.purpose) == (len(data), "data.jsonl", "batch")
    assert_channel_key_only(up, env, "sk-upstream-oa")
    no_cost_record(env, raw)

    assert f.id in [x.id for x in c.files.list()]
    raw = c.files.with_raw_response.retrieve(f.id)
    assert raw.parse().bytes == len(data)
    assert (env.oa.last.method, env.oa.last.path) == ("GET", f"/v1/files/{f.id}")
    no_cost_record(env, raw)
    assert c.files.content(f.id).read() == data  # 4 MiB back through the gateway
    raw = c.files.with_raw_response.delete(f.id)
    assert raw.parse().deleted is True
    assert env.oa.last.method == "DELETE"
    no_cost_record(env, raw)
    assert f.id not in env.oa.files
    with pytest.raises(openai.NotFoundError):  # the upstream's own 404, as it was
        c.files.retrieve(f.id)


def test_upload_is_streamed_not_collected(env: Env) -> None:
    c = oa_client(env)
    data = os.urandom(32 * 64 * 1024)
    slow = SlowFile(data, 64 * 1024, 0.03)
    f = c.files.create(file=("slow.bin", slow, "application/octet-stream"), purpose="user_data")
    up = env.oa.last
    assert up.headers.get("transfer-encoding") == "chunked"  # as the client sent it
    assert env.oa.files[f.id] == data
    # the upstream had body bytes while the client was still reading its file
    lead = slow.done_at - up.notes["first_body_at"]
    print(f"upstream's first body bytes {lead:.2f} s before the client's last read")
    assert lead > 0.3


def test_upload_memory_stays_flat(env: Env) -> None:
    c = oa_client(env)
    data = os.urandom(48 * 1024 * 1024)
    base = env.gw.rss_bytes()
    peak = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], env.gw.rss_bytes())
            time.sleep(0.005)

    t = threading.Thread(target=poll)
    t.start()
    try:
        f = c.files.create(file=("big.bin", data, "application/octet-stream"), purpose="batch")
    finally:
        stop.set()
        t.join()
    assert env.oa.files[f.id] == data
    grew = peak[0] - base
    print(f"gateway RSS: {base} before, {peak[0]} at peak for a {len(data)}-byte upload")
    assert grew < len(data) // 4, f"gateway RSS grew by {grew} bytes for a {len(data)}-byte upload"
    env.oa.files.pop(f.id)


def test_batches_create_and_retrieve(env: Env) -> None:
    c = oa_client(env)
    f = c.files.create(
        file=("in.jsonl", b'{"custom_id":"1"}\n', "application/jsonl"), purpose="batch"
    )
    raw = c.batches.with_raw_response.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    b = raw.parse()
    assert env.oa.last.json == {
        "input_file_id": f.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    assert b.status == "validating"
    no_cost_record(env, raw)
    raw = c.batches.with_raw_response.retrieve(b.id)
    got = raw.parse()
    assert got.status == "completed" and got.usage.total_tokens > 0  # the upstream's
    rec = no_cost_record(env, raw)
    # a retrieved object's usage was billed when it was made: not counted again
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (0, 0)


def test_audio_transcription_multipart_billed_from_its_usage(env: Env) -> None:
    c = oa_client(env)
    audio = os.urandom(96_000)
    raw = c.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav")
    )
    t = raw.parse()
    up = env.oa.last
    assert up.path == "/v1/audio/transcriptions"
    assert up.notes["form"]["model"] == "whisper-1"
    assert up.body == audio
    assert t.text
    rec = no_cost_record(env, raw)  # no model read from the form: no price
    want = up.usage
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (
        want["prompt_tokens"],
        want["completion_tokens"],
    )


def test_images_generate(env: Env) -> None:
    c = oa_client(env)
    raw = c.images.with_raw_response.generate(model="gpt-image-1", prompt="a red fox in snow")
    img = raw.parse()
    assert img.data[0].b64_json
    up = env.oa.last
    assert (up.path, up.json["model"]) == ("/v1/images/generations", "gpt-image-1")
    rec = record(env, raw)  # a JSON body with a model: routed and priced by it
    n = up.usage["prompt_tokens"]
    assert (rec["model"], rec["prompt_tokens"]) == ("gpt-image-1", n)
    assert rec["completion_tokens"] == up.usage["completion_tokens"]
    assert rec["cost_micros"] == n * MICROS_PER_TOKEN
    raw = c.images.with_raw_response.generate(prompt="no model named")  # passed through
    assert raw.parse().data
    assert "model" not in env.oa.last.json
    rec = no_cost_record(env, raw)
    assert rec["prompt_tokens"] == env.oa.last.usage["prompt_tokens"]


def test_channel_header_and_who_may_pass_through(env: Env) -> None:
    c = oa_client(env)
    before = env.oa2.request_count
    c.files.list(extra_headers={"x-fastgate-channel": "oa2"})
    assert env.oa2.request_count == before + 1
    assert (env.oa2.last.method, env.oa2.last.path) == ("GET", "/v1/files")
    assert_channel_key_only(env.oa2.last, env, "sk-upstream-oa2")
    with pytest.raises(openai.NotFoundError) as exc:
        c.files.list(extra_headers={"x-fastgate-channel": "oa-vip"})  # not this group's
    assert "x-fastgate-channel" in exc.value.message
    vip = oa_client(env, env.vip)
    vip.files.list()  # its group's only OpenAI channel
    assert env.oa2.last.headers["authorization"] == "Bearer sk-upstream-oa-vip"
    narrow = oa_client(env, env.narrow)
    n = env.oa.request_count
    with pytest.raises(openai.PermissionDeniedError):
        narrow.files.list()
    with pytest.raises(openai.PermissionDeniedError):  # answered while the body still came
        narrow.files.create(file=("x.bin", os.urandom(2 * 1024 * 1024), "x/y"), purpose="batch")
    assert env.oa.request_count == n
    with pytest.raises(openai.AuthenticationError):
        oa_client(env, make_key()).batches.retrieve("batch_x")
    for method in ("PUT", "PATCH"):  # what the upstream answers, passed back as it is
        r = httpx2.request(
            method,
            env.gw.url + "/v1/organization/projects/p1?x=1",
            headers={"authorization": f"Bearer {env.key}"},
            json={"name": "p"},
        )
        up = env.oa.last
        assert (up.method, up.path, up.query, up.json) == (
            method,
            "/v1/organization/projects/p1",
            "x=1",
            {"name": "p"},
        )
        assert r.status_code == up.status == 404
        assert r.json() == json.loads(up.response_body)
    r = httpx2.post(
        env.gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {env.key}"},
        files={"file": ("a", b"b")},
    )
    assert r.status_code == 400 and "JSON body" in r.json()["error"]["message"]
