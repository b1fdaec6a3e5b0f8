"""Azure OpenAI request targets, checked against the openai SDK's own Azure clients.

The oracle: `openai.AzureOpenAI` (dated api-version) and `openai.OpenAI` on the v1
base URL, with a mock transport that records the URL each call would hit. The target
computed by `azure_target` must be the path and query the SDK sends.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import openai
import pytest

from fastgate.providers.azure import (
    DEPLOYMENT_PATHS,
    azure_deployment,
    azure_target,
    is_v1,
)

ENDPOINT = "https://my-res.openai.azure.com"
DEPLOYMENTS = {"gpt-4o": "prod-4o", "text-embedding-3-small": "emb small"}

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
CHAT_BODY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [],
}


def _recording_client(seen: list[str]) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.raw_path.decode())
        path = request.url.path
        if path.endswith("/embeddings"):
            body: dict[str, Any] = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                "model": "m",
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        elif path.endswith("/completions") and "chat" not in path:
            body = {
                "id": "x",
                "object": "text_completion",
                "created": 0,
                "model": "m",
                "choices": [],
            }
        elif path.endswith("/models"):
            body = {"object": "list", "data": []}
        elif path.endswith("/responses"):
            body = {
                "id": "r",
                "object": "response",
                "created_at": 0,
                "model": "m",
                "output": [],
                "status": "completed",
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
            }
        else:
            body = CHAT_BODY
        return httpx2.Response(200, json=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _sdk_calls(make_client: Any, deployment_or_model: str) -> dict[str, str]:
    """Path+query the SDK uses for each operation (one call each)."""
    seen: list[str] = []
    client = make_client(_recording_client(seen))
    client.chat.completions.create(model=deployment_or_model, **CHAT)
    client.completions.create(model=deployment_or_model, prompt="x")
    client.embeddings.create(model=deployment_or_model, input="x")
    client.responses.create(model=deployment_or_model, input="x")
    client.models.list()
    paths = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
    ]
    assert len(seen) == len(paths)
    return dict(zip(paths, seen, strict=True))


def _same_target(a: str, b: str) -> None:
    ua, ub = urlsplit(a), urlsplit(b)
    assert ua.path == ub.path
    assert sorted(parse_qsl(ua.query)) == sorted(parse_qsl(ub.query))


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", "2024-02-15-preview"])
@pytest.mark.parametrize("model", ["gpt-4o", "unmapped-model", "text-embedding-3-small"])
def test_dated_versions_match_azure_openai_client(version, model):
    deployment = azure_deployment(DEPLOYMENTS, model)

    def make(http_client):
        return openai.AzureOpenAI(
            api_key="k", api_version=version, azure_endpoint=ENDPOINT, http_client=http_client
        )

    for path, sdk_target in _sdk_calls(make, deployment).items():
        _same_target(azure_target(ENDPOINT, version, DEPLOYMENTS, model, path), sdk_target)


def test_dated_target_exact_strings():
    assert (
        azure_target(ENDPOINT, "2024-10-21", DEPLOYMENTS, "gpt-4o", "/v1/chat/completions")
        == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    )
    assert (
        azure_target(
            ENDPOINT, "2024-10-21", DEPLOYMENTS, "text-embedding-3-small", "/v1/embeddings"
        )
        == "/openai/deployments/emb%20small/embeddings?api-version=2024-10-21"
    )
    assert (
        azure_target(ENDPOINT, "2025-04-01-preview", DEPLOYMENTS, "gpt-4o", "/v1/responses")
        == "/openai/responses?api-version=2025-04-01-preview"
    )


@pytest.mark.parametrize("version", ["v1", "", "latest", "preview", " V1 "])
def test_v1_api_matches_openai_client_on_the_v1_base(version):
    query = {"api-version": "preview"} if version == "preview" else None

    def make(http_client):
        return openai.OpenAI(
            api_key="k",
            base_url=f"{ENDPOINT}/openai/v1/",
            default_query=query,
            http_client=http_client,
        )

    model = "gpt-4o"
    for path, sdk_target in _sdk_calls(make, azure_deployment(DEPLOYMENTS, model)).items():
        _same_target(azure_target(ENDPOINT, version, DEPLOYMENTS, model, path), sdk_target)
    assert is_v1(version)
    assert azure_target(ENDPOINT, version, DEPLOYMENTS, model, "/v1/chat/completions").startswith(
        "/openai/v1/chat/completions"
    )


def test_base_url_prefixes_and_query_strings():
    # a base ending in /openai is not doubled; other prefixes are kept
    assert (
        azure_target(
            "https://r.openai.azure.com/openai/", "2024-10-21", {}, "m", "/v1/chat/completions"
        )
        == "/openai/deployments/m/chat/completions?api-version=2024-10-21"
    )
    assert (
        azure_target("https://gw.example.com/azure", "2024-10-21", {}, "m", "/chat/completions")
        == "/azure/openai/deployments/m/chat/completions?api-version=2024-10-21"
    )
    # the client's own api-version is replaced, other parameters are kept
    got = azure_target(ENDPOINT, "2024-10-21", {}, "m", "/v1/models?api-version=1999&limit=5")
    assert urlsplit(got).path == "/openai/models"
    assert sorted(parse_qsl(urlsplit(got).query)) == [("api-version", "2024-10-21"), ("limit", "5")]
    assert (
        azure_target(ENDPOINT, "v1", {}, "m", "/v1/files?purpose=batch")
        == "/openai/v1/files?purpose=batch"
    )


def test_deployment_scoped_paths_cover_audio_and_images():
    for op in ("/audio/speech", "/audio/transcriptions", "/images/generations"):
        assert op in DEPLOYMENT_PATHS
        assert azure_target(
            ENDPOINT, "2025-04-01-preview", {"tts": "tts-dep"}, "tts", "/v1" + op
        ) == (f"/openai/deployments/tts-dep{op}?api-version=2025-04-01-preview")


def test_deployment_lookup():
    assert azure_deployment(DEPLOYMENTS, "gpt-4o") == "prod-4o"
    assert azure_deployment({}, "gpt-4o") == "gpt-4o"
    assert not is_v1("2024-10-21")
