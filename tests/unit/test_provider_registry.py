"""The channel-type registry: one entry per type, and what each entry says.

The entries replace type-name comparisons, so these tests pin the facts those
comparisons used to encode: protocol, auth headers, request targets, the probe's
request, the model listing and its pages.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from fastgate.config import CHANNEL_TYPES, ChannelConfig
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.providers import registry
from fastgate.providers.base import ChannelType, ProbeSetupError

PROTOCOLS = {
    "openai": "openai",
    "openrouter": "openai",
    "azure": "openai",
    "mock": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
    "bedrock": "bedrock",
}
HUB = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def cfg(ctype: str, **kw: Any) -> ChannelConfig:
    base = {"mock": "", "bedrock": "https://bedrock-runtime.us-east-1.amazonaws.com"}
    kw.setdefault("base_url", base.get(ctype, "https://up.example/base"))
    return ChannelConfig(name="c", type=ctype, models=("m",), **kw)


def data_channel(cc: ChannelConfig) -> Any:
    """What the request builders read of a snapshot Channel."""
    return SimpleNamespace(
        config=cc,
        default_max_tokens=cc.default_max_tokens,
        type=cc.type,
        targets={},
        path_prefix=b"",
    )


def test_every_config_type_is_registered_once_with_its_protocol() -> None:
    assert registry.names() == CHANNEL_TYPES
    for name in CHANNEL_TYPES:
        kind = registry.get(name)
        assert isinstance(kind, ChannelType) and kind.name == name
        assert kind.protocol == PROTOCOLS[name]
    with pytest.raises(KeyError):
        registry.get("cohere")


def test_entries_are_immutable() -> None:
    with pytest.raises(AttributeError):
        registry.get("openai").protocol = "gemini"  # type: ignore[misc]


def test_config_facts() -> None:
    assert [n for n in CHANNEL_TYPES if registry.get(n).in_process] == ["mock"]
    assert [n for n in CHANNEL_TYPES if registry.get(n).needs_region] == ["bedrock"]
    assert {n for n in CHANNEL_TYPES if not registry.get(n).needs_base_url} == {"mock", "bedrock"}
    assert registry.get("mock").default_models == ("mock-1",)
    assert registry.get("gemini").base_url_suffixes == ("/v1beta", "/v1")
    assert registry.get("ollama").base_url_suffixes == ()
    assert registry.get("anthropic").base_url_suffixes == ("/v1",)
    bedrock = registry.get("bedrock")
    assert (
        bedrock.default_base_url("eu-west-1") == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    )
    assert registry.get("openai").default_base_url("eu-west-1") == ""
    assert registry.get("anthropic").dropped_client_headers == {b"anthropic-version"}


@pytest.mark.parametrize(
    ("ctype", "expected"),
    [
        ("openai", [("authorization", "Bearer k")]),
        ("openrouter", [("authorization", "Bearer k")]),
        ("ollama", [("authorization", "Bearer k")]),
        ("azure", [("api-key", "k")]),
        ("anthropic", [("x-api-key", "k"), ("anthropic-version", "2023-06-01")]),
        ("gemini", [("x-goog-api-key", "k")]),
        ("bedrock", []),
        ("mock", []),
    ],
)
def test_auth_headers(ctype: str, expected: list[tuple[str, str]]) -> None:
    assert registry.get(ctype).auth_headers(cfg(ctype, api_key="k")) == expected


def test_auth_headers_without_a_key() -> None:
    assert registry.get("openai").auth_headers(cfg("openai")) == []
    assert registry.get("anthropic").auth_headers(cfg("anthropic", anthropic_version="v9")) == [
        ("anthropic-version", "v9")
    ]


def test_openai_target_is_the_ingress_path_except_on_azure() -> None:
    ch = data_channel(cfg("openai"))
    got = registry.get("openai").openai_target(ch, "m", "m", b"/v1/embeddings", b"a=1")
    assert got == (b"/v1/embeddings", b"a=1")
    az = data_channel(cfg("azure", api_version="2024-10-21", deployments={"m": "dep"}))
    got = registry.get("azure").openai_target(az, "m", "up", b"/v1/chat/completions", b"a=1")
    assert got == (b"/openai/deployments/dep/chat/completions?api-version=2024-10-21", b"")
    # remembered per channel (the fast path reads `targets`); the client's query
    # never reaches Azure, so it is not part of the key
    key = ("m", "up", b"/v1/chat/completions")
    assert az.targets == {key: got[0]}
    assert registry.get("azure").openai_target(az, "m", "up", key[2], b"") == got
    az.targets[key] = b"/remembered"
    assert registry.get("azure").openai_target(az, "m", "up", key[2], b"")[0] == b"/remembered"


@pytest.mark.parametrize(
    ("base_url", "line"),
    [
        ("https://r.openai.azure.com", b"POST /openai/deployments/dep/chat/completions?"),
        ("https://r.openai.azure.com/openai/", b"POST /openai/deployments/dep/chat/completions?"),
        ("https://gw.example.com/azure", b"POST /azure/openai/deployments/dep/chat/completions?"),
    ],
)
def test_azure_request_line_has_openai_once_whatever_the_base_url(
    base_url: str, line: bytes
) -> None:
    """The base URL's path goes in front of the target (`request_bytes`), so a base
    URL that already ends in `/openai` (as Azure's portal shows it) must not get a
    second `/openai`: it did, on both paths, before stop 22."""
    from fastgate.config import parse_config
    from fastgate.providers.openai import request_bytes
    from fastgate.snapshot import build_snapshot

    snap = build_snapshot(
        parse_config(
            {
                "channels": [
                    {
                        "name": "az",
                        "type": "azure",
                        "base_url": base_url,
                        "api_key": "k",
                        "api_version": "2024-10-21",
                        "deployments": {"m": "dep"},
                        "models": ["m"],
                    }
                ]
            }
        )
    )
    ch = snap.channels["az"]
    path, query = ch.kind.openai_target(ch, "m", "m", b"/v1/chat/completions", b"")
    data = request_bytes(ch, path, query, [], b"{}")
    assert data.startswith(line + b"api-version=2024-10-21 HTTP/1.1\r\n"), data[:120]


@pytest.mark.parametrize(
    ("ctype", "stream", "target"),
    [
        ("openai", False, b"/v1/chat/completions"),
        ("anthropic", True, b"/v1/messages"),
        ("gemini", False, b"/v1beta/models/up%2Fm:generateContent"),
        ("gemini", True, b"/v1beta/models/up%2Fm:streamGenerateContent?alt=sse"),
        ("ollama", True, b"/api/chat"),
        ("azure", False, b"/openai/v1/chat/completions"),
    ],
)
def test_converted_request(ctype: str, stream: bool, target: bytes) -> None:
    ch = data_channel(cfg(ctype, api_version="v1"))
    got_target, body, extra = registry.get(ctype).converted_request(ch, HUB, "m", "up/m", stream)
    assert got_target == target and extra == []
    doc = orjson.loads(body)
    if ctype == "gemini":
        assert "model" not in doc and doc["contents"][0]["parts"] == [{"text": "hi"}]
    else:
        assert doc["model"] == "up/m"
    if ctype == "ollama":
        assert doc["stream"] is stream
    if ctype == "openai":
        assert "stream_options" not in doc
    if ctype == "anthropic":
        assert doc["stream"] is True and doc["max_tokens"] == 5


def test_converted_openai_stream_asks_for_usage() -> None:
    ch = data_channel(cfg("openai"))
    _, body, _ = registry.get("openai").converted_request(ch, HUB, "m", "m", True)
    assert orjson.loads(body)["stream_options"] == {"include_usage": True}


def test_converted_request_refuses_what_the_protocol_cannot_say() -> None:
    ch = data_channel(cfg("ollama"))
    with pytest.raises(ConversionError):
        registry.get("ollama").converted_request(
            ch, dict(HUB, tool_choice="required", tools=[]), "m", "m", False
        )


def test_bedrock_converted_request_is_signed() -> None:
    cc = cfg("bedrock", region="us-east-1", access_key_id="AK", secret_access_key="SK")
    target, body, extra = registry.get("bedrock").converted_request(
        data_channel(cc), HUB, "m", "anthropic.claude-v1:0", True
    )
    assert target == b"/model/anthropic.claude-v1%3A0/converse-stream"
    assert orjson.loads(body)["inferenceConfig"]["maxTokens"] == 5
    names = [line.split(b":", 1)[0] for line in extra]
    assert names == [b"x-amz-date", b"authorization"]
    assert all(line.endswith(b"\r\n") for line in extra)
    assert b"Credential=AK/" in extra[1]
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert f"/{day}/us-east-1/bedrock/aws4_request".encode() in extra[1]


def test_probe_requests() -> None:
    h: dict[str, str] = {}
    url, _, body, enc = registry.get("openai").probe_request(cfg("openai"), "m", "u", h)
    assert url == "https://up.example/base/v1/chat/completions" and not enc
    assert orjson.loads(body) == {
        "model": "u",
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "stream": False,
    }
    url, _, body, _ = registry.get("gemini").probe_request(cfg("gemini"), "m", "a/b", h)
    assert url.endswith("/v1beta/models/a%2Fb:generateContent")
    assert orjson.loads(body)["generationConfig"] == {"maxOutputTokens": 1}
    url, _, body, _ = registry.get("ollama").probe_request(cfg("ollama"), "m", "u", h)
    assert url.endswith("/api/chat") and orjson.loads(body)["options"] == {"num_predict": 1}
    url, _, body, _ = registry.get("anthropic").probe_request(cfg("anthropic"), "m", "u", h)
    assert url.endswith("/v1/messages") and orjson.loads(body)["max_tokens"] == 1
    az = cfg("azure", api_version="2024-10-21", deployments={"m": "dep"})
    url, _, body, _ = registry.get("azure").probe_request(az, "m", "u", h)
    assert (
        url
        == "https://up.example/base/openai/deployments/dep/chat/completions?api-version=2024-10-21"
    )
    assert orjson.loads(body)["model"] == "dep"


def test_bedrock_probe_needs_credentials_and_signs() -> None:
    kind = registry.get("bedrock")
    with pytest.raises(ProbeSetupError, match="secret_access_key"):
        kind.probe_request(cfg("bedrock", region="us-east-1", access_key_id="AK"), "m", "u", {})
    cc = cfg("bedrock", region="us-east-1", access_key_id="AK", secret_access_key="SK")
    headers = {"Content-Type": "application/json", "X-Extra": "1"}
    url, headers, body, enc = kind.probe_request(cc, "m", "u", headers)
    assert enc and url.endswith("/model/u/converse")
    assert headers["content-type"] == "application/json" and "Content-Type" not in headers
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 ") and headers["X-Extra"] == "1"
    assert orjson.loads(body)["inferenceConfig"] == {"maxTokens": 1}


def test_probe_problem() -> None:
    kind = registry.get("openai")
    assert kind.probe_problem(b'{"choices": []}') is None
    assert kind.probe_problem(b"nope") == "the answer is not JSON"
    assert kind.probe_problem(b"[1]") == "the answer is not a JSON object"
    assert kind.probe_problem(b'{"error": {"message": "bad key"}}') == "bad key"


def test_model_listings_and_pages() -> None:
    openai = registry.get("openai")
    assert openai.models_listing(cfg("openai")) == ("https://up.example/base/v1/models", None)
    assert openai.models_page({"data": [{"id": "a"}, {"x": 1}]}, None) == (["a"], None)
    with pytest.raises(UpstreamProtocolError, match='"data" list'):
        openai.models_page({}, None)

    anthropic = registry.get("anthropic")
    url, params = anthropic.models_listing(cfg("anthropic"))
    assert url.endswith("/v1/models") and params == {"limit": "1000"}
    page = {"data": [{"id": "a"}], "has_more": True, "last_id": "a"}
    assert anthropic.models_page(page, params) == (["a"], {"limit": "1000", "after_id": "a"})
    assert anthropic.models_page(dict(page, has_more=False), params) == (["a"], None)

    gemini = registry.get("gemini")
    assert gemini.models_listing(cfg("gemini"))[1] == {"pageSize": "1000"}
    page = {"models": [{"name": "models/g"}], "nextPageToken": "t"}
    assert gemini.models_page(page, None) == (["g"], {"pageSize": "1000", "pageToken": "t"})
    with pytest.raises(UpstreamProtocolError, match='"models" list'):
        gemini.models_page({"models": 3}, None)

    ollama = registry.get("ollama")
    assert ollama.models_listing(cfg("ollama"))[0].endswith("/api/tags")
    assert ollama.models_page({"models": [{"name": "llama3:8b"}]}, None) == (["llama3:8b"], None)
    assert ollama.canonical_model("llama3") == "llama3:latest"
    assert ollama.canonical_model("ns/llama3:8b") == "ns/llama3:8b"
    assert openai.canonical_model("llama3") == "llama3"

    azure = registry.get("azure")
    url, _ = azure.models_listing(cfg("azure", api_version="v1"))
    assert url == "https://up.example/base/openai/v1/models"

    bedrock = registry.get("bedrock")
    assert not bedrock.discoverable and "Converse" in bedrock.not_discoverable_reason
    assert all(registry.get(n).discoverable for n in CHANNEL_TYPES if n != "bedrock")
