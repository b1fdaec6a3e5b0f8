"""Authentication, authorization and the gateway's own errors, end to end.

Every error fastgate produces on the OpenAI ingress must have docs/contract.md section 3's
status, code and type in OpenAI's shape, carry one x-request-id, and never reach
the upstream. One gateway serves the whole module (each test uses its own key or
model so they do not interfere).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, channel, gateway_config, make_key, token

MSGS = [{"role": "user", "content": "hello"}]
MAX_BODY = 8192
MAX_HEADER = 8192


@dataclass
class Env:
    gw: Gateway
    a: FakeOpenAI  # default-group channel
    v: FakeOpenAI  # vip-group channel
    keys: dict[str, str]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    a, v = FakeOpenAI("a"), FakeOpenAI("v")
    a.start()
    v.start()
    keys = {
        name: make_key()
        for name in ("ok", "expired", "narrow", "disabled", "vip", "broke", "limited")
    }
    text = gateway_config(
        channels=[
            channel("a", a.url, ["gpt-4o", "gpt-4o-mini"]),
            channel("v", v.url, ["gpt-4o", "vip-model"], groups=["vip"]),
        ],
        tokens=[
            token("ok", keys["ok"]),
            token("expired", keys["expired"], expires_at="2020-01-01T00:00:00Z"),
            token("narrow", keys["narrow"], models=["gpt-4o"]),
            token("disabled", keys["disabled"], enabled=False),
            token("vip", keys["vip"], group="vip"),
            token("broke", keys["broke"], quota_usd=0),
            token("limited", keys["limited"], rpm=2),
        ],
        groups=[{"name": "default", "ratio": 1.0}, {"name": "vip", "ratio": 1.0}],
        server={"max_body_bytes": MAX_BODY, "max_header_bytes": MAX_HEADER},
    )
    gw = Gateway(tmp_path_factory.mktemp("auth"), text)
    try:
        gw.start()
        yield Env(gw, a, v, keys)
    finally:
        gw.close()
        a.stop()
        v.stop()


def post(
    env: Env,
    body: bytes | dict[str, Any],
    *,
    key: str | None,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    h = {"content-type": "application/json"}
    if key is not None:
        h["authorization"] = f"Bearer {key}" if key else "Bearer"
    h.update(headers or {})
    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx2.post(env.gw.url + path, headers=h, timeout=10, **kw)


def chat(model: str = "gpt-4o") -> dict[str, Any]:
    return {"model": model, "messages": MSGS}


def assert_error(resp: httpx2.Response, status: int, code: str, etype: str) -> dict[str, Any]:
    """docs/contract.md section 3: OpenAI error shape with the table's status, code and type."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert len(resp.headers.get_list("x-request-id")) == 1
    doc = resp.json()
    assert set(doc) == {"error"}
    err = doc["error"]
    assert {"message", "type", "code"} <= set(err)
    assert err["code"] == code
    assert err["type"] == etype
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.fixture
def untouched(env: Env) -> Iterator[None]:
    """Asserts that the test's requests never reached an upstream."""
    before = (env.a.request_count, env.v.request_count)
    yield
    assert (env.a.request_count, env.v.request_count) == before


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize(
    "key",
    [None, "", "sk-not-a-fastgate-key", "fg-" + "A" * 43, "fg-short"],
    ids=["missing", "empty", "foreign", "unknown", "malformed"],
)
def test_missing_or_unknown_key_is_401(env: Env, untouched: None, key: str | None) -> None:
    assert_error(post(env, chat(), key=key), 401, "invalid_token", "invalid_request_error")


def test_expired_key_is_401_token_expired(env: Env, untouched: None) -> None:
    resp = post(env, chat(), key=env.keys["expired"])
    assert_error(resp, 401, "token_expired", "invalid_request_error")


def test_sdk_sees_authentication_error(env: Env, untouched: None) -> None:
    c = openai.OpenAI(base_url=env.gw.url + "/v1", api_key="fg-" + "B" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        c.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert exc.value.status_code == 401
    assert exc.value.code == "invalid_token"


def test_models_endpoint_needs_a_key(env: Env) -> None:
    resp = httpx2.get(env.gw.url + "/v1/models", timeout=10)
    assert_error(resp, 401, "invalid_token", "invalid_request_error")


# --------------------------------------------------------------------------- 403 / 404


def test_model_outside_allow_list_is_403(env: Env, untouched: None) -> None:
    resp = post(env, chat("gpt-4o-mini"), key=env.keys["narrow"])
    assert_error(resp, 403, "permission_denied", "permission_error")


def test_allow_listed_model_is_served(env: Env) -> None:
    before = env.a.request_count
    resp = post(env, chat("gpt-4o"), key=env.keys["narrow"])
    assert resp.status_code == 200, resp.text
    assert env.a.request_count == before + 1


def test_disabled_key_is_403(env: Env, untouched: None) -> None:
    resp = post(env, chat(), key=env.keys["disabled"])
    assert_error(resp, 403, "permission_denied", "permission_error")


def test_sdk_sees_permission_denied(env: Env, untouched: None) -> None:
    c = openai.OpenAI(base_url=env.gw.url + "/v1", api_key=env.keys["narrow"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert exc.value.code == "permission_denied"


def test_unknown_model_is_404(env: Env, untouched: None) -> None:
    resp = post(env, chat("no-such-model"), key=env.keys["ok"])
    assert_error(resp, 404, "model_not_found", "not_found_error")
    c = openai.OpenAI(base_url=env.gw.url + "/v1", api_key=env.keys["ok"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="no-such-embedder", input="x")


# --------------------------------------------------------------------------- 400


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-4o", "messages": [',
        b"not json at all",
        b"",
        b"[1, 2, 3]",
        b'{"messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": 42, "messages": []}',
        b'{"model": "", "messages": []}',
    ],
    ids=["truncated", "garbage", "empty", "array", "no-model", "model-int", "model-empty"],
)
def test_bad_request_is_400(env: Env, untouched: None, body: bytes) -> None:
    resp = post(env, body, key=env.keys["ok"])
    assert_error(resp, 400, "invalid_request", "invalid_request_error")


def test_sdk_sees_bad_request(env: Env, untouched: None) -> None:
    c = openai.OpenAI(base_url=env.gw.url + "/v1", api_key=env.keys["ok"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="gpt-4o", messages=MSGS, extra_body={"model": None})
    assert exc.value.code == "invalid_request"


def test_body_too_large_is_413(env: Env, untouched: None) -> None:
    big = chat()
    big["messages"] = [{"role": "user", "content": "x" * (MAX_BODY * 2)}]
    resp = post(env, big, key=env.keys["ok"])
    assert_error(resp, 413, "request_too_large", "invalid_request_error")


def test_headers_too_large_is_431(env: Env, untouched: None) -> None:
    resp = post(env, chat(), key=env.keys["ok"], headers={"x-padding": "p" * (MAX_HEADER * 2)})
    assert_error(resp, 431, "headers_too_large", "invalid_request_error")


# --------------------------------------------------------------------------- 402 / 429


def test_no_quota_left_is_402(env: Env, untouched: None) -> None:
    resp = post(env, chat(), key=env.keys["broke"])
    assert_error(resp, 402, "insufficient_quota", "insufficient_quota_error")


def test_key_rpm_is_429_with_retry_after(env: Env) -> None:
    before = env.a.request_count
    for _ in range(2):
        assert post(env, chat(), key=env.keys["limited"]).status_code == 200
    resp = post(env, chat(), key=env.keys["limited"])
    assert_error(resp, 429, "rate_limit_exceeded", "rate_limit_error")
    retry_after = resp.headers.get("retry-after")
    assert retry_after is not None and re.fullmatch(r"\d+", retry_after), retry_after
    assert 1 <= int(retry_after) <= 60
    assert env.a.request_count == before + 2


# --------------------------------------------------------------------------- groups


def test_groups_select_channels(env: Env) -> None:
    a0, v0 = env.a.request_count, env.v.request_count
    r = post(env, chat("gpt-4o"), key=env.keys["vip"])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from v"
    r = post(env, chat("vip-model"), key=env.keys["vip"])
    assert r.json()["choices"][0]["message"]["content"] == "Hello from v"
    r = post(env, chat("gpt-4o"), key=env.keys["ok"])
    assert r.json()["choices"][0]["message"]["content"] == "Hello from a"
    assert (env.a.request_count, env.v.request_count) == (a0 + 1, v0 + 2)


def test_model_outside_group_is_404(env: Env, untouched: None) -> None:
    # vip-model exists, but only in the vip group; gpt-4o-mini only in default
    assert_error(
        post(env, chat("vip-model"), key=env.keys["ok"]), 404, "model_not_found", "not_found_error"
    )
    assert_error(
        post(env, chat("gpt-4o-mini"), key=env.keys["vip"]),
        404,
        "model_not_found",
        "not_found_error",
    )


def test_model_list_follows_group(env: Env) -> None:
    def ids(key: str) -> set[str]:
        c = openai.OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)
        return {m.id for m in c.models.list()}

    assert ids(env.keys["vip"]) == {"gpt-4o", "vip-model"}
    assert ids(env.keys["ok"]) == {"gpt-4o", "gpt-4o-mini"}


# --------------------------------------------------------------------------- ops endpoints


def test_health_ready_metrics(env: Env) -> None:
    for path in ("/health", "/ready"):
        r = httpx2.get(env.gw.url + path, timeout=10)
        assert r.status_code == 200, (path, r.text)
    # make sure something has been counted
    post(env, chat(), key=env.keys["ok"])
    r = httpx2.get(env.gw.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    sample = re.compile(
        r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+]?([0-9.]+([eE][-+]?[0-9]+)?|NaN|[+-]Inf)"
        r"( [0-9]+)?$"
    )
    lines = [ln for ln in r.text.splitlines() if ln and not ln.startswith("#")]
    assert lines, r.text
    bad = [ln for ln in lines if not sample.match(ln)]
    assert not bad, bad
    assert "# TYPE" in r.text
    assert any(float(ln.rsplit(" ", 1)[-1]) > 0 for ln in lines if " " in ln)


def test_unknown_path_is_not_a_crash(env: Env, untouched: None) -> None:
    r = httpx2.get(env.gw.url + "/definitely/not/here", timeout=10)
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["message"]
