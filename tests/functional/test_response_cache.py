"""The response cache (docs/contract.md section 7), end to end through real fastgate processes.

A gateway with `[cache] enabled = true` sits in front of the OpenAI, Anthropic
and Gemini fakes; the official SDKs (and raw httpx where the exact bytes
matter) send the same request twice. What proves a hit: the fake's request
counter does not move, the client gets the first answer's bytes (the fakes put
a fresh id in every answer), `x-fastgate-cache` says so, and the usage record
says `cache_hit` with cost 0. Redis tests use a random key prefix and delete
their keys at the end.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
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
from google import genai
from google.genai import types as gtypes

from tests.conftest import require_service
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.base import DieMidStream, Fail, FakeUpstream, Ok, Slow, StreamError
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, gateway_config, make_key, token

KEY = make_key()  # opts in per request (header)
CKEY = make_key()  # cache = true
INGRESSES = ["openai", "anthropic", "gemini"]
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens: a miss costs > 0


def model_of(kind: str) -> str:
    return f"m-{kind}"


def channels(fakes: dict[str, FakeUpstream]) -> list[dict[str, Any]]:
    return [
        {
            "name": f"ch-{kind}",
            "type": kind,
            "base_url": fake.url,
            "api_key": f"sk-{kind}",
            "models": [model_of(kind)],
        }
        for kind, fake in fakes.items()
    ]


def cache_toml(**kw: Any) -> str:
    values = {"enabled": True, **kw}
    lines = ["[cache]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def config(fakes: dict[str, FakeUpstream], extra: str, cached_key: bool = True, **kw: Any) -> str:
    keys = [token("plain", KEY)] + ([token("cached", CKEY, cache=True)] if cached_key else [])
    return gateway_config(
        channels(fakes),
        keys,
        routing={"max_attempts": 1},
        prices=[{"model": model_of(k), **PRICE} for k in fakes],
        extra=extra,
        **kw,
    )


@dataclass
class Env:
    gw: Gateway
    fakes: dict[str, FakeUpstream]
    seen: list[httpx2.Response] = field(default_factory=list)
    clients: dict[str, Any] = field(default_factory=dict)

    def count(self) -> int:
        return sum(f.request_count for f in self.fakes.values())

    def cache_header(self) -> str | None:
        return self.seen[-1].headers.get("x-fastgate-cache")


def http(seen: list[httpx2.Response] | None = None) -> httpx2.Client:
    hooks = {"response": [seen.append]} if seen is not None else {}
    return httpx2.Client(verify=False, timeout=20, event_hooks=hooks)


def sdk_clients(url: str, key: str, seen: list[httpx2.Response]) -> dict[str, Any]:
    opts = gtypes.HttpOptions(
        base_url=url,
        api_version="v1beta",
        retry_options=gtypes.HttpRetryOptions(attempts=1),
        httpx_client=http(seen),
    )
    return {
        "openai": openai.OpenAI(
            base_url=url + "/v1", api_key=key, max_retries=0, http_client=http(seen)
        ),
        "anthropic": anthropic.Anthropic(
            base_url=url, api_key=key, max_retries=0, http_client=http(seen)
        ),
        "gemini": genai.Client(api_key=key, http_options=opts),
    }


@contextlib.contextmanager
def started(*fakes: FakeUpstream) -> Iterator[None]:
    on: list[FakeUpstream] = []
    try:
        for f in fakes:
            f.start()
            on.append(f)
        yield
    finally:
        for f in on:
            f.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    fakes: dict[str, FakeUpstream] = {
        "openai": FakeOpenAI("openai"),
        "anthropic": FakeAnthropic("anthropic"),
        "gemini": FakeGemini("gemini"),
    }
    with started(*fakes.values()):
        gw = Gateway(Path(tmp_path_factory.mktemp("cachegw")), config(fakes, cache_toml()))
        gw.start()
        try:
            e = Env(gw, fakes)
            e.clients = sdk_clients(gw.url, KEY, e.seen)
            e.clients["cached"] = sdk_clients(gw.url, CKEY, e.seen)
            yield e
        finally:
            gw.close()


@pytest.fixture
def e(env: Env) -> Env:
    for f in env.fakes.values():
        f.set_behaviour(Ok())
    env.seen.clear()
    return env


def prompt() -> str:
    return "cache test " + uuid.uuid4().hex


# --------------------------------------------------------------------------- SDK calls


def ask(
    e: Env,
    ingress: str,
    model: str,
    text: str,
    stream: bool,
    header: str | None = "on",
    *,
    cached_key: bool = False,
) -> dict[str, Any]:
    """One request through the ingress's SDK: the answer's text, usage and id."""
    h = {"x-fastgate-cache": header} if header is not None else {}
    c = (e.clients["cached"] if cached_key else e.clients)[ingress]
    out: dict[str, Any] = {"text": "", "ids": []}
    if ingress == "openai":
        msgs = [{"role": "user", "content": text}]
        if not stream:
            r = c.chat.completions.create(model=model, messages=msgs, extra_headers=h)
            out["text"] = r.choices[0].message.content
            out["ids"].append(r.id)
            out["usage"] = (r.usage.prompt_tokens, r.usage.completion_tokens)
        else:
            s = c.chat.completions.create(
                model=model,
                messages=msgs,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=h,
            )
            for ch in s:
                out["ids"].append(ch.id)
                for choice in ch.choices:
                    out["text"] += choice.delta.content or ""
                if ch.usage is not None:
                    out["usage"] = (ch.usage.prompt_tokens, ch.usage.completion_tokens)
    elif ingress == "anthropic":
        msgs = [{"role": "user", "content": text}]
        if not stream:
            m = c.messages.create(model=model, max_tokens=50, messages=msgs, extra_headers=h)
            out["text"] = "".join(b.text for b in m.content if b.type == "text")
            out["ids"].append(m.id)
            out["usage"] = (m.usage.input_tokens, m.usage.output_tokens)
        else:
            inp = outp = 0
            for ev in c.messages.create(
                model=model, max_tokens=50, messages=msgs, stream=True, extra_headers=h
            ):
                if ev.type == "message_start":
                    out["ids"].append(ev.message.id)
                    inp = ev.message.usage.input_tokens
                elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                    out["text"] += ev.delta.text
                elif ev.type == "message_delta":
                    outp = ev.usage.output_tokens
            out["usage"] = (inp, outp)
    else:
        cfg = gtypes.GenerateContentConfig(http_options=gtypes.HttpOptions(headers=h))
        chunks = (
            list(c.models.generate_content_stream(model=model, contents=text, config=cfg))
            if stream
            else [c.models.generate_content(model=model, contents=text, config=cfg)]
        )
        for ch in chunks:
            out["ids"].append(ch.response_id)
            out["text"] += ch.text or ""
            if ch.usage_metadata is not None:
                um = ch.usage_metadata
                out["usage"] = (um.prompt_token_count, um.candidates_token_count)
    return out


def records(e: Env, n: int) -> list[dict[str, Any]]:
    return e.gw.wait_records(n)


def last_record(gw: Gateway, before: int) -> dict[str, Any]:
    return gw.wait_records(before + 1)[-1]


# --------------------------------------------------------------------------- hit and miss, every ingress


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("channel", INGRESSES)
@pytest.mark.parametrize("ingress", INGRESSES)
def test_miss_then_hit(e: Env, ingress: str, channel: str, stream: bool) -> None:
    """Same protocol (passthrough) and converted, stream and not: the second
    identical request is answered from the cache, in the client's protocol."""
    text = prompt()
    model = model_of(channel)
    n_recs = len(e.gw.access_log_records())
    before = e.count()
    first = ask(e, ingress, model, text, stream)
    assert e.cache_header() == "miss"
    assert e.fakes[channel].request_count >= 1 and e.count() == before + 1
    assert f"Hello from {channel}" in first["text"]
    miss_rec = last_record(e.gw, n_recs)

    second = ask(e, ingress, model, text, stream)
    assert e.cache_header() == "hit"
    assert e.count() == before + 1  # no upstream touched
    assert second == first  # same text, same ids (the fakes make a fresh id per answer)
    hit_rec = last_record(e.gw, n_recs + 1)

    assert miss_rec["cache_hit"] is False and miss_rec["cost_micros"] > 0
    assert miss_rec["channel"] == f"ch-{channel}"
    assert hit_rec["cache_hit"] is True and hit_rec["cost_micros"] == 0
    assert hit_rec["status"] == 200 and hit_rec["error_code"] == ""
    assert hit_rec["stream"] is stream and hit_rec["ingress"] == ingress
    assert hit_rec["channel"] == "" and hit_rec["attempts"] == 0
    # the cached response's token counts are kept
    for f in ("prompt_tokens", "completion_tokens", "upstream_model"):
        assert hit_rec[f] == miss_rec[f], f
    assert hit_rec["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("ingress", "path", "body", "ctype"),
    [
        ("openai", "/v1/chat/completions", {"stream": True}, "text/event-stream"),
        ("openai", "/v1/chat/completions", {}, "application/json"),
        ("anthropic", "/v1/messages", {"stream": True, "max_tokens": 50}, "text/event-stream"),
        (
            "gemini",
            "/v1beta/models/m-gemini:streamGenerateContent?alt=sse",
            {},
            "text/event-stream",
        ),
        ("gemini", "/v1beta/models/m-gemini:streamGenerateContent", {}, "application/json"),
        ("gemini", "/v1beta/models/m-openai:streamGenerateContent", {}, "application/json"),
        (
            "gemini",
            "/v1beta/models/m-anthropic:streamGenerateContent?alt=sse",
            {},
            "text/event-stream",
        ),
    ],
)
def test_replay_is_the_same_bytes_and_framing(
    e: Env, ingress: str, path: str, body: dict[str, Any], ctype: str
) -> None:
    """A stream is replayed as a stream (chunked, same content type, same bytes),
    including Gemini's JSON-array stream when the request did not ask for SSE."""
    text = prompt()
    if ingress == "gemini":
        doc: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        headers = {"x-goog-api-key": KEY}
    else:
        doc = {"model": model_of(ingress), "messages": [{"role": "user", "content": text}]}
        headers = {"authorization": f"Bearer {KEY}"}
    doc.update(body)
    headers["x-fastgate-cache"] = "on"
    before = e.count()
    with http() as c:
        r1 = c.post(e.gw.url + path, json=doc, headers=headers)
        r2 = c.post(e.gw.url + path, json=doc, headers=headers)
    assert r1.status_code == r2.status_code == 200, r1.text
    assert e.count() == before + 1
    assert (r1.headers["x-fastgate-cache"], r2.headers["x-fastgate-cache"]) == ("miss", "hit")
    assert r1.headers["content-type"].startswith(ctype)
    assert r2.headers["content-type"] == r1.headers["content-type"]
    assert r2.content == r1.content and len(r1.content) > 0
    assert r2.headers["x-request-id"] != r1.headers["x-request-id"]
    if "stream" in body or "streamGenerateContent" in path:
        assert r2.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r2.headers
    else:
        assert r2.headers["content-length"] == str(len(r1.content))
    if ctype == "application/json" and "stream" in path.lower():
        assert isinstance(json.loads(r2.content), list)


# --------------------------------------------------------------------------- opting in and out


def test_key_with_cache_true_off_and_refresh(e: Env) -> None:
    text = prompt()
    model = model_of("openai")
    fake = e.fakes["openai"]
    before = e.count()
    first = ask(e, "openai", model, text, False, header=None, cached_key=True)
    assert e.cache_header() == "miss"
    assert ask(e, "openai", model, text, False, header=None, cached_key=True) == first
    assert e.cache_header() == "hit" and e.count() == before + 1

    # off: not cacheable for this request, no header, the upstream answers
    off = ask(e, "openai", model, text, False, header="off", cached_key=True)
    assert e.cache_header() is None and e.count() == before + 2 and off["ids"] != first["ids"]

    # refresh: fetched anew and stored over the old entry
    fake.set_behaviour(Ok(content="A fresher answer"))
    fresh = ask(e, "openai", model, text, False, header="refresh", cached_key=True)
    assert e.cache_header() == "miss" and e.count() == before + 3
    assert fresh["text"] == "A fresher answer"
    again = ask(e, "openai", model, text, False, header=None, cached_key=True)
    assert e.cache_header() == "hit" and again == fresh and e.count() == before + 3


def test_keys_share_entries_and_uncached_requests_have_no_header(e: Env) -> None:
    text = prompt()
    model = model_of("anthropic")
    before = e.count()
    ask(e, "anthropic", model, text, False, header=None)  # plain key, no header: not cacheable
    assert e.cache_header() is None
    ask(e, "anthropic", model, text, False)
    assert e.cache_header() == "miss"
    ask(e, "anthropic", model, text, False, header=None, cached_key=True)  # another key, same group
    assert e.cache_header() == "hit"
    assert e.count() == before + 2


def test_bad_header_is_a_400_in_the_ingress_shape(e: Env) -> None:
    with http() as c:
        r = c.post(
            e.gw.url + "/v1/messages",
            json={
                "model": "m-anthropic",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"x-api-key": KEY, "x-fastgate-cache": "maybe"},
        )
        r2 = c.post(
            e.gw.url + "/v1/chat/completions",
            json={"model": "m-openai", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY}", "x-fastgate-cache": "yes"},
        )
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert "x-fastgate-cache" in r.json()["error"]["message"]
    assert r2.status_code == 400 and r2.json()["error"]["code"] == "invalid_request"


# --------------------------------------------------------------------------- nothing stored


@pytest.mark.parametrize(
    ("ingress", "behaviour", "stream"),
    [
        ("openai", Fail(400), False),
        ("gemini", Fail(500), False),  # max_attempts = 1: the gateway's own 502
        ("anthropic", Fail(404), True),
        ("openai", StreamError(after_chunks=2), True),
        ("anthropic", StreamError(after_chunks=2), True),
        ("gemini", StreamError(after_chunks=1), True),
        ("openai", DieMidStream(after_chunks=2), True),
        ("anthropic", DieMidStream(), False),
    ],
    ids=[
        "4xx",
        "502",
        "4xx-stream",
        "oa-error-event",
        "an-error-event",
        "ge-error-event",
        "oa-aborted",
        "an-cut-body",
    ],
)
def test_no_entry_for_errors_or_aborted_responses(
    e: Env, ingress: str, behaviour: Any, stream: bool
) -> None:
    text = prompt()
    model = model_of(ingress)
    fake = e.fakes[ingress]
    fake.script(behaviour)
    before = e.count()
    with contextlib.suppress(Exception):  # the SDK raises on the error: expected
        ask(e, ingress, model, text, stream)
    assert e.count() == before + 1
    if e.seen:
        assert e.cache_header() == "miss"
    # the same request again goes upstream (nothing was stored) and is stored now
    ok = ask(e, ingress, model, text, stream)
    assert e.cache_header() == "miss" and e.count() == before + 2
    assert ask(e, ingress, model, text, stream) == ok
    assert e.cache_header() == "hit" and e.count() == before + 2


def test_no_entry_when_the_client_leaves_mid_stream(e: Env) -> None:
    text = prompt()
    doc = {
        "model": "m-openai",
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }
    e.fakes["openai"].script(Slow(chunk_delay=0.1))
    before = e.count()
    with (
        http() as c,
        c.stream(
            "POST",
            e.gw.url + "/v1/chat/completions",
            json=doc,
            headers={"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"},
        ) as r,
    ):
        assert r.headers["x-fastgate-cache"] == "miss"
        for _ in r.iter_bytes():
            break  # leave after the first bytes
    time.sleep(0.8)  # the slow stream would have ended by now
    ok = ask(e, "openai", "m-openai", text, True)
    assert e.cache_header() == "miss" and e.count() == before + 2
    assert ok["text"]


class StallAfterDone:
    """An OpenAI upstream that sends a whole chat stream, `data: [DONE]` included,
    and then never ends the response (no last chunk) until its client goes."""

    EVENTS = [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " from the stalling upstream"},
    ]

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.requests = 0
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < n:
                body += conn.recv(65536)
            self.requests += 1
            rid = uuid.uuid4().hex
            events = b"".join(
                b"data: "
                + json.dumps(
                    {
                        "id": f"chatcmpl-{rid}",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": "m-stall",
                        "choices": [{"index": 0, "delta": d, "finish_reason": None}],
                    }
                ).encode()
                + b"\n\n"
                for d in self.EVENTS
            )
            events += b"data: [DONE]\n\n"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n" % (len(events), events)
            )
            while conn.recv(65536):  # no last chunk: wait for the gateway to give up
                pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_stored_when_the_client_leaves_after_the_end_event(tmp_path: Path) -> None:
    """The client reads the stream up to `data: [DONE]` and leaves before the
    upstream's end (as SDKs may): it had the whole answer, so the answer is stored."""
    up = StallAfterDone()
    try:
        text = gateway_config(
            [
                {
                    "name": "stall",
                    "type": "openai",
                    "base_url": up.url,
                    "api_key": "sk",
                    "models": ["m-stall"],
                }
            ],
            [token("plain", KEY)],
            extra=cache_toml(),
        )
        gw = Gateway(tmp_path, text)
        gw.start()
        try:
            doc = {
                "model": "m-stall",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            }
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            got = b""
            with (
                http() as c,
                c.stream("POST", gw.url + "/v1/chat/completions", json=doc, headers=h) as r,
            ):
                assert r.headers["x-fastgate-cache"] == "miss"
                for chunk in r.iter_bytes():
                    got += chunk
                    if b"data: [DONE]" in got:
                        break  # leave now: the upstream has not ended its response
            assert b"from the stalling upstream" in got
            time.sleep(0.2)  # the gateway sees the first client leave
            with httpx2.Client(verify=False, timeout=5) as c:
                r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
            assert r.headers["x-fastgate-cache"] == "hit"
            assert r.content == got
            assert up.requests == 1
        finally:
            gw.close()
    finally:
        up.close()


def test_body_over_max_entry_bytes_is_not_stored(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        gw = Gateway(tmp_path, config({"openai": fake}, cache_toml(max_entry_bytes=200)))
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            fake.set_behaviour(Ok(content="word " * 100))  # well over 200 bytes
            with http() as c:
                for _ in range(2):
                    r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                    assert r.status_code == 200 and r.headers["x-fastgate-cache"] == "miss"
                assert fake.request_count == 2
                m = metrics(c, gw)
            assert m.get("fastgate_cache_too_large_total") == 2
            assert m.get("fastgate_cache_stored_total", 0) == 0
        finally:
            gw.close()


# --------------------------------------------------------------------------- cache disabled


def test_disabled_cache_serves_uncached_without_header(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        text = gateway_config(channels({"openai": fake}), [token("plain", KEY)])
        gw = Gateway(tmp_path, text)
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            with http() as c:
                for _ in range(2):
                    r = c.post(
                        gw.url + "/v1/chat/completions",
                        json=doc,
                        headers={"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"},
                    )
                    assert r.status_code == 200 and "x-fastgate-cache" not in r.headers
                bad = c.post(
                    gw.url + "/v1/chat/completions",
                    json=doc,
                    headers={"authorization": f"Bearer {KEY}", "x-fastgate-cache": "bogus"},
                )
            assert fake.request_count == 2
            assert bad.status_code == 400
        finally:
            gw.close()


def test_key_with_cache_true_refused_when_cache_disabled(tmp_path: Path) -> None:
    text = gateway_config(
        [{"name": "m", "type": "mock", "models": ["mock-1"]}], [token("c", CKEY, cache=True)]
    )
    gw = Gateway(tmp_path, text)
    with pytest.raises(RuntimeError) as info:
        gw.start()
    assert "tokens[0].cache: the response cache is off" in str(info.value)


# --------------------------------------------------------------------------- metrics


def metrics(c: httpx2.Client, gw: Gateway) -> dict[str, float]:
    text = c.get(gw.url + "/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(fastgate_cache_[a-z_]+) (\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_metrics_count_hits_misses_and_bytes(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        gw = Gateway(tmp_path, config({"openai": fake}, cache_toml()))
        gw.start()
        try:
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            with http() as c:
                bodies = []
                for i in range(3):
                    doc = {"model": "m-openai", "messages": [{"role": "user", "content": f"q{i}"}]}
                    c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                    for _ in range(2):
                        r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                        assert r.headers["x-fastgate-cache"] == "hit"
                        bodies.append(len(r.content))
                m = metrics(c, gw)
            assert m["fastgate_cache_hits_total"] == 6
            assert m["fastgate_cache_misses_total"] == 3
            assert m["fastgate_cache_stored_total"] == 3
            assert m["fastgate_cache_bytes_total"] == sum(bodies)
            assert m["fastgate_cache_entries"] == 3
            assert m["fastgate_cache_held_bytes"] == sum(bodies) / 2
            assert fake.request_count == 3
        finally:
            gw.close()


# --------------------------------------------------------------------------- memory bounds


def _pipelined(host: str, port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the requests on one kept-alive connection, `len(requests)` at a time,
    and read the (status, x-fastgate-cache) of each content-length response."""
    out: list[tuple[int, bytes]] = []
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"".join(requests))
        buf = b""
        while len(out) < len(requests):
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                data = s.recv(1 << 20)
                assert data, "connection closed early"
                buf += data
                continue
            head = buf[:end]
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            if len(buf) < end + 4 + length:
                data = s.recv(1 << 20)
                assert data, "connection closed early"
                buf += data
                continue
            state = re.search(rb"(?i)\r\nx-fastgate-cache: *(\w+)", head)
            out.append((int(head[9:12]), state.group(1) if state else b""))
            buf = buf[end + 4 + length :]
    return out


def test_memory_stays_within_bounds_over_10000_distinct_requests(tmp_path: Path) -> None:
    max_entries = 500
    text = gateway_config(
        [{"name": "mock", "type": "mock", "models": ["mock-1"]}],
        [token("plain", KEY)],
        extra=cache_toml(max_entries=max_entries, max_entry_bytes=4096),
    )
    gw = Gateway(tmp_path, text)
    gw.start()
    try:
        t0 = time.monotonic()
        with http() as c:
            rss0 = gw.rss_bytes()
            seen_entries = []
            total = 0
            for batch in range(20):  # 20 x 500 = 10,000 distinct requests
                reqs = []
                for i in range(500):
                    body = json.dumps(
                        {
                            "model": "mock-1",
                            "messages": [{"role": "user", "content": f"r{batch}-{i}"}],
                        }
                    ).encode()
                    reqs.append(
                        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                        b"authorization: Bearer %b\r\nx-fastgate-cache: on\r\n"
                        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                        % (KEY.encode(), len(body), body)
                    )
                got = _pipelined(gw.host, gw.port, reqs)
                assert got == [(200, b"miss")] * 500
                total += 500
                if batch % 5 == 4:
                    m = metrics(c, gw)
                    seen_entries.append(m["fastgate_cache_entries"])
                    assert m["fastgate_cache_entries"] <= max_entries
                    assert m["fastgate_cache_held_bytes"] <= max_entries * 4096
            m = metrics(c, gw)
            rss1 = gw.rss_bytes()
        elapsed = time.monotonic() - t0
        assert total == 10_000
        assert m["fastgate_cache_stored_total"] == 10_000
        assert m["fastgate_cache_entries"] == max_entries
        assert m["fastgate_cache_evictions_total"] == 10_000 - max_entries
        assert seen_entries[-1] == max_entries
        # 500 entries of ~0.5 KB: the process does not grow with the requests served
        assert rss1 - rss0 < 32 * 1024 * 1024, (rss0, rss1)
        assert elapsed < 60, elapsed
    finally:
        gw.close()


# --------------------------------------------------------------------------- redis


REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_service("redis", "127.0.0.1", 6379)
    import redis

    prefix = "fgtest-" + uuid.uuid4().hex[:12] + ":"
    client = redis.Redis.from_url(REDIS)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def redis_keys(prefix: str) -> list[bytes]:
    import redis

    with redis.Redis.from_url(REDIS) as client:
        return list(client.scan_iter(match=prefix + "*"))


def test_redis_hit_on_instance_b_for_a_request_made_on_a(tmp_path: Path, redis_prefix: str) -> None:
    fakes: dict[str, FakeUpstream] = {
        "openai": FakeOpenAI("openai"),
        "gemini": FakeGemini("gemini"),
    }
    with started(*fakes.values()):
        text = config(
            fakes, cache_toml(backend="redis", redis_url=REDIS, key_prefix=redis_prefix, ttl=30)
        )
        a = Gateway(tmp_path / "a", text)
        b = Gateway(tmp_path / "b", text)
        a.start()
        b.start()
        try:
            seen_a: list[httpx2.Response] = []
            seen_b: list[httpx2.Response] = []
            ea = Env(a, fakes, seen_a, sdk_clients(a.url, KEY, seen_a))
            eb = Env(b, fakes, seen_b, sdk_clients(b.url, KEY, seen_b))
            cases = [
                ("openai", "m-openai", False),
                ("openai", "m-openai", True),
                ("gemini", "m-gemini", True),
                ("anthropic", "m-gemini", True),
            ]
            for i, (ingress, model, stream) in enumerate(cases):
                text_ = prompt()
                before = ea.count()
                first = ask(ea, ingress, model, text_, stream)
                assert ea.cache_header() == "miss" and ea.count() == before + 1
                deadline = time.monotonic() + 3  # the SET goes out after the response
                while len(redis_keys(redis_prefix)) <= i and time.monotonic() < deadline:
                    time.sleep(0.01)
                second = ask(eb, ingress, model, text_, stream)
                assert eb.cache_header() == "hit", (ingress, stream)
                assert second == first and ea.count() == before + 1
                rec = b.wait_records(i + 1)[i]
                assert rec["cache_hit"] is True and rec["cost_micros"] == 0
            keys = redis_keys(redis_prefix)
            assert len(keys) == 4
            import redis

            with redis.Redis.from_url(REDIS) as client:
                assert all(0 < client.pttl(k) <= 30_000 for k in keys)
        finally:
            a.close()
            b.close()


def test_redis_refresh_overwrites_for_every_instance(tmp_path: Path, redis_prefix: str) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        text = config(
            {"openai": fake}, cache_toml(backend="redis", redis_url=REDIS, key_prefix=redis_prefix)
        )
        a = Gateway(tmp_path / "a", text)
        b = Gateway(tmp_path / "b", text)
        a.start()
        b.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}

            def post(gw: Gateway, mode: str) -> httpx2.Response:
                h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": mode}
                with http() as c:
                    return c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)

            r1 = post(a, "on")
            time.sleep(0.2)
            fake.set_behaviour(Ok(content="Refreshed text"))
            r2 = post(b, "refresh")
            assert r2.headers["x-fastgate-cache"] == "miss" and fake.request_count == 2
            time.sleep(0.2)
            r3 = post(a, "on")
            assert r3.headers["x-fastgate-cache"] == "hit" and r3.content == r2.content
            assert r3.content != r1.content and fake.request_count == 2
        finally:
            a.close()
            b.close()


def test_unreachable_redis_is_bypassed(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed once the with ends: nothing listens there
    with started(fake):
        text = config(
            {"openai": fake}, cache_toml(backend="redis", redis_url=f"redis://127.0.0.1:{dead}/0")
        )
        gw = Gateway(tmp_path, text)
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            with http() as c:
                for _ in range(3):
                    r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                    assert r.status_code == 200 and r.headers["x-fastgate-cache"] == "miss"
                m = metrics(c, gw)
            assert fake.request_count == 3
            assert m["fastgate_cache_errors_total"] >= 3
            assert m["fastgate_cache_misses_total"] == 3
            assert gw.stderr_text().count("redis unreachable") == 1  # logged once per outage
        finally:
            gw.close()


def test_client_leaving_during_a_slow_redis_lookup(tmp_path: Path) -> None:
    """Redis that accepts and never answers: the lookup waits (bounded by its
    timeout); a client that leaves meanwhile is recorded as 499, and the gateway
    goes on serving."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = silent.accept()
                held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    fake = FakeOpenAI("openai")
    try:
        with started(fake):
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            gw = Gateway(
                tmp_path, config({"openai": fake}, cache_toml(backend="redis", redis_url=url))
            )
            gw.start()
            try:
                body = json.dumps(
                    {"model": "m-openai", "messages": [{"role": "user", "content": "x"}]}
                )
                req = (
                    f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n"
                    f"x-fastgate-cache: on\r\nx-request-id: leaver-1\r\n"
                    f"content-length: {len(body)}\r\n\r\n{body}"
                ).encode()
                with socket.create_connection((gw.host, gw.port)) as s:
                    s.sendall(req)
                    time.sleep(0.2)  # the lookup is waiting on the silent server
                rec = gw.record_for("leaver-1")
                assert rec["status"] == 499 and rec["cache_hit"] is False
                assert fake.request_count == 0
                # once the lookup times out the cache is bypassed, never an error
                with http() as c:
                    r = c.post(
                        gw.url + "/v1/chat/completions",
                        content=body,
                        headers={"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"},
                    )
                assert r.status_code == 200 and r.headers["x-fastgate-cache"] == "miss"
                assert gw.alive()
                assert "Traceback" not in gw.stderr_text()
            finally:
                gw.close()
    finally:
        stop.set()
        t.join(2)
        for conn in held:
            conn.close()
        silent.close()


def test_workers_share_the_redis_cache(tmp_path: Path, redis_prefix: str) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        text = config(
            {"openai": fake},
            cache_toml(backend="redis", redis_url=REDIS, key_prefix=redis_prefix),
        )
        gw = Gateway(tmp_path, text, args=["--workers", "2"])
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            states = []
            pids = set()
            for _ in range(12):
                with http() as c:  # a new connection each time: either worker may answer
                    r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                    states.append(r.headers["x-fastgate-cache"])
                    pids.add(c.get(gw.url + "/ready").json()["pid"])
                if len(states) == 1:
                    time.sleep(0.2)  # the SET goes out after the response
            assert states == ["miss"] + ["hit"] * 11
            assert fake.request_count == 1
            assert len(pids) == 2  # both workers answered (12 connections, SO_REUSEPORT)
        finally:
            gw.close()


def test_sighup_turns_the_cache_on(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        gw = Gateway(
            tmp_path, config({"openai": fake}, "[cache]\nenabled = false\n", cached_key=False)
        )
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            h = {"authorization": f"Bearer {KEY}", "x-fastgate-cache": "on"}
            with http() as c:
                r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                assert "x-fastgate-cache" not in r.headers
                gw.config_path.write_text(gw.toml_text.replace("enabled = false", "enabled = true"))
                gw.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 5
                state = None
                while state is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                    state = r.headers.get("x-fastgate-cache")
                assert state == "miss"
                r = c.post(gw.url + "/v1/chat/completions", json=doc, headers=h)
                assert r.headers["x-fastgate-cache"] == "hit"
        finally:
            gw.close()


def test_a_hit_counts_against_the_keys_rpm(tmp_path: Path) -> None:
    fake = FakeOpenAI("openai")
    with started(fake):
        text = gateway_config(
            channels({"openai": fake}),
            [token("limited", CKEY, cache=True, rpm=2)],
            extra=cache_toml(),
        )
        gw = Gateway(tmp_path, text)
        gw.start()
        try:
            doc = {"model": "m-openai", "messages": [{"role": "user", "content": prompt()}]}
            h = {"authorization": f"Bearer {CKEY}"}
            with http() as c:
                got = [
                    c.post(gw.url + "/v1/chat/completions", json=doc, headers=h) for _ in range(3)
                ]
            assert [r.status_code for r in got] == [200, 200, 429]
            assert [r.headers.get("x-fastgate-cache") for r in got] == ["miss", "hit", None]
            assert fake.request_count == 1
        finally:
            gw.close()
