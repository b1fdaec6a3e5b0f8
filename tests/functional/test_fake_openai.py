"""The fake upstream itself, checked with the official openai SDK pointed straight at it.

Other tests trust FakeOpenAI to speak OpenAI's wire format and to report what it
did; these tests are why that trust is earned.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx2
import openai
import pytest

from tests.fakes.openai_fake import (
    BigStream,
    CloseImmediately,
    DieMidStream,
    Fail,
    FakeOpenAI,
    Hang,
    Ok,
    Slow,
    content_pieces,
    prompt_tokens_for,
)
from tests.harness import http_request_bytes, parse_sse

MSGS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "say hello to the test suite"},
]


def client(fake: FakeOpenAI, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0, **kw)


def test_chat_non_stream_content_usage_and_record(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    r = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
    comp = r.parse()
    assert comp.choices[0].message.content == "Hello from fake"
    assert comp.choices[0].finish_reason == "stop"
    assert comp.model == "gpt-4o"
    assert comp.id.startswith("chatcmpl-")
    # 3 + (4 + 2) + (4 + 6) by the documented rule; pieces "Hello", " from", " fake"
    assert (
        comp.usage.prompt_tokens
        == 19
        == prompt_tokens_for("/v1/chat/completions", {"messages": MSGS})
    )
    assert comp.usage.completion_tokens == 3
    assert comp.usage.total_tokens == 22
    rec = fake_openai.last
    assert rec.path == "/v1/chat/completions" and rec.method == "POST"
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.headers["AUTHORIZATION"] == "Bearer sk-test"
    assert rec.json["messages"] == MSGS
    assert json.loads(rec.body) == rec.json
    assert r.headers["x-request-id"] == rec.response_request_id
    assert fake_openai.last_usage == {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "cached_tokens": 0,
        "total_tokens": 22,
    }


def test_chat_stream_without_and_with_include_usage(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Hello from fake"
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"

    chunks = list(
        c.chat.completions.create(
            model="gpt-4o", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 19
    assert chunks[-1].usage.completion_tokens == 3
    assert [ch for ch in chunks if not ch.choices] == [chunks[-1]]


def test_chat_stream_raw_wire_format(fake_openai: FakeOpenAI) -> None:
    body = {
        "model": "m",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx2.Client() as h:
        r = h.post(fake_openai.url + "/v1/chat/completions", json=body)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["x-request-id"].startswith("req_")
    assert r.text.endswith("data: [DONE]\n\n")
    events = [e["data"] for e in parse_sse(r.content)]
    assert events[-1] == "[DONE]"
    docs = [json.loads(d) for d in events[:-1]]
    assert all(d["object"] == "chat.completion.chunk" for d in docs)
    assert all(d["usage"] is None for d in docs[:-1])
    assert docs[-1]["choices"] == [] and docs[-1]["usage"]["total_tokens"] == 22
    assert b'"usage":null' in r.content


def test_stream_options_rejected_like_openai(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="m", messages=MSGS, stream_options={"include_usage": True})
    with pytest.raises(openai.BadRequestError):
        c.responses.create(
            model="m",
            input="x",
            stream=True,
            extra_body={"stream_options": {"include_usage": True}},
        )


def test_completions_stream_and_not(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    r = c.completions.create(model="gpt-4o", prompt="one two three")
    assert r.choices[0].text == "Hello from fake"
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 3
    chunks = list(
        c.completions.create(
            model="gpt-4o", prompt="x", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "Hello from fake"
    assert chunks[-1].usage.prompt_tokens == 2


def test_embeddings_float_and_base64(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    a = c.embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
    assert fake_openai.last.json["encoding_format"] == "base64"  # the SDK's default
    b = c.embeddings.create(
        model="text-embedding-3-small", input=["a b c", "d"], encoding_format="float"
    )
    assert [d.embedding for d in a.data] == [d.embedding for d in b.data]
    assert len(a.data) == 2 and len(a.data[0].embedding) == 8
    assert a.usage.prompt_tokens == 4 == a.usage.total_tokens


def test_responses_stream_and_not(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    r = c.responses.create(model="gpt-4o", input="hello there")
    assert r.output_text == "Hello from fake"
    assert r.usage.input_tokens == 5 and r.usage.output_tokens == 3 and r.usage.total_tokens == 8
    events = list(c.responses.create(model="gpt-4o", input="hello there", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta")
        == "Hello from fake"
    )
    assert events[-1].response.usage.output_tokens == 3
    with c.responses.stream(model="gpt-4o", input="hi") as s:
        assert s.get_final_response().output_text == "Hello from fake"


def test_models_and_echo(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    assert [m.id for m in c.models.list()] == fake_openai.models
    with httpx2.Client() as h:
        r = h.post(fake_openai.url + "/v1/moderations", json={"model": "omni", "input": "x"})
    assert r.json() == {"path": "/v1/moderations", "model": "omni"}


def test_script_is_fifo_then_default(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script(Fail(500), Fail(429), Ok(content="custom words here", prompt_tokens=7))
    with pytest.raises(openai.InternalServerError) as e500:
        c.chat.completions.create(model="m", messages=MSGS)
    assert e500.value.body["type"] == "server_error"
    with pytest.raises(openai.RateLimitError) as e429:
        c.chat.completions.create(model="m", messages=MSGS)
    assert e429.value.response.headers["retry-after"] == "1"
    r = c.chat.completions.create(model="m", messages=MSGS)
    assert r.choices[0].message.content == "custom words here"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (7, 3)
    r = c.chat.completions.create(model="m", messages=MSGS)
    assert r.choices[0].message.content == "Hello from fake"
    assert [x.status for x in fake_openai.requests] == [500, 429, 200, 200]


def test_fail_custom_body_is_sent_verbatim(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Fail(400, body=b'{"error":{"message":"nope","code":"x"}}  '))
    with httpx2.Client() as h:
        r = h.post(fake_openai.url + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 400
    assert r.content == b'{"error":{"message":"nope","code":"x"}}  '


@pytest.mark.parametrize("rst", [False, True])
def test_close_immediately(fake_openai: FakeOpenAI, rst: bool) -> None:
    c = client(fake_openai)
    fake_openai.script(CloseImmediately(rst=rst))
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="m", messages=MSGS)
    assert fake_openai.wait_connections_closed(1) >= 1
    assert fake_openai.last.client_disconnected


def test_hang_until_client_goes_away(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai, timeout=0.5)
    fake_openai.script(Hang())
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=MSGS)
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while not fake_openai.last.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_openai.last.client_disconnected


def test_die_mid_stream(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script(DieMidStream(after_chunks=3))
    got = []
    with pytest.raises(openai.APIConnectionError):
        for ch in c.chat.completions.create(model="m", messages=MSGS, stream=True):
            got.append(ch)
    assert len(got) == 3  # the role chunk and two content chunks


def test_slow_stream_spaces_chunks(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script(Slow(chunk_delay=0.1))
    times = []
    for _ in c.chat.completions.create(model="m", messages=MSGS, stream=True):
        times.append(time.monotonic())
    # role + 3 pieces + finish = 5 events, 4 gaps of 0.1 s
    assert times[-1] - times[0] >= 0.35


def test_big_stream_stalls_behind_a_slow_reader(fake_openai: FakeOpenAI) -> None:
    big = BigStream(chunks=2000, chunk_bytes=16384)  # ~33 MB
    fake_openai.script(big)
    body = json.dumps({"model": "m", "messages": MSGS, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", fake_openai.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(
        http_request_bytes(
            "POST", "/v1/chat/completions", "x", body, {"content-type": "application/json"}
        )
    )
    deadline = time.monotonic() + 10
    while big.bytes_written == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # let it fill the socket buffers, until it stops growing
    first, prev = -1, big.bytes_written
    while first != prev and time.monotonic() < deadline:
        time.sleep(0.3)
        first, prev = prev, big.bytes_written
    assert first > 0
    time.sleep(0.5)
    assert big.bytes_written == first, "producer kept writing while nobody read"
    assert first < 8 * 2**20
    assert not big.finished
    s.close()
    deadline = time.monotonic() + 5
    while not big.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert big.client_disconnected
    assert not big.finished


def test_big_stream_completes_for_a_reader(fake_openai: FakeOpenAI) -> None:
    big = BigStream(chunks=50, chunk_bytes=1000)
    fake_openai.script(big)
    c = client(fake_openai)
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model="m", messages=MSGS, stream=True)
    )
    assert text == "x" * 50_000
    assert big.finished and big.chunks_written == 50 + 3  # role, 50 content, finish, [DONE]


async def test_async_client(fake_openai: FakeOpenAI) -> None:
    c = openai.AsyncOpenAI(base_url=fake_openai.url + "/v1", api_key="k", max_retries=0)
    r = await c.chat.completions.create(model="m", messages=MSGS)
    assert r.choices[0].message.content == "Hello from fake"
    parts = [
        ch.choices[0].delta.content or ""
        async for ch in await c.chat.completions.create(model="m", messages=MSGS, stream=True)
    ]
    assert "".join(parts) == "Hello from fake"
    await c.close()


def test_stop_ends_hanging_requests_and_connection_counters() -> None:
    fake = FakeOpenAI("h")
    fake.start()
    fake.set_behaviour(Hang())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client(fake, timeout=30).chat.completions.create(model="m", messages=MSGS)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    fake.wait_requests(1)
    assert fake.open_connections == 1
    t0 = time.monotonic()
    fake.stop()
    t.join(10)
    assert time.monotonic() - t0 < 5
    assert not t.is_alive()
    assert errors and isinstance(errors[0], openai.APIConnectionError)
    assert fake.connections_opened == fake.connections_closed == 1


def test_content_pieces_roundtrip() -> None:
    for text in ["Hello from fake", " lead", "trail ", "", "a  b\n c"]:
        assert "".join(content_pieces(text)) == text
