"""Azure OpenAI: where an OpenAI path goes on an Azure resource (sans-IO).

Azure speaks the OpenAI wire format with `api-key` authentication (the snapshot puts
the header in the channel's static headers) but at other paths. Two API styles exist:

- dated `api_version` ("2024-10-21", "2025-04-01-preview"...): the model is chosen by
  the deployment in the path for the deployment-scoped operations,
  `/openai/deployments/{deployment}/chat/completions?api-version=...` (also
  completions, embeddings, audio and images, the set the openai SDK's `AzureOpenAI`
  client routes through deployments); every other path goes to `/openai/{path}`
  (`/openai/responses?api-version=...`, `/openai/models?...`), as that client does.
- the v1 API (GA since August 2025; `api_version` "v1", "latest" or empty): the same
  paths as OpenAI under `/openai/v1/` with no api-version (or `api-version=preview`
  for `api_version = "preview"`), and the deployment name goes in the body's `model`
  (see `azure_deployment`).

`deployments` maps the public (or model_map'ed) model name to a deployment name; a
model without an entry is its own deployment name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

__all__ = [
    "DEPLOYMENT_PATHS",
    "V1_VERSIONS",
    "azure_deployment",
    "azure_target",
    "is_v1",
]

# Operations routed through /openai/deployments/{deployment}/... (openai SDK's list).
DEPLOYMENT_PATHS: Final = frozenset(
    {
        "/completions",
        "/chat/completions",
        "/embeddings",
        "/audio/transcriptions",
        "/audio/translations",
        "/audio/speech",
        "/images/generations",
        "/images/edits",
    }
)
V1_VERSIONS: Final = frozenset({"", "v1", "latest", "preview"})


def is_v1(api_version: str) -> bool:
    """True for the v1 API (no dated api-version, deployment name in the body)."""
    return api_version.strip().lower() in V1_VERSIONS


def azure_deployment(deployments: Mapping[str, str], model: str) -> str:
    """The deployment serving `model` (the model name itself when not mapped)."""
    return deployments.get(model, model)


def azure_target(
    base_url: str,
    api_version: str,
    deployments: Mapping[str, str],
    model: str,
    path: str,
) -> str:
    """The origin-form request target (path and query) on the Azure resource.

    `path` is the ingress path (`/v1/chat/completions`, with or without `/v1`, with an
    optional query string, which is kept; any client `api-version` is replaced).
    `base_url`'s own path is kept as a prefix, and a prefix that already ends in
    `/openai` is not doubled.
    """
    raw_path, _, query = path.partition("?")
    op = raw_path.rstrip("/") or "/"
    if op == "/v1" or op.startswith("/v1/"):
        op = op[3:] or "/"
    if not op.startswith("/"):
        op = "/" + op
    prefix = urlsplit(base_url).path.rstrip("/")
    if not prefix.endswith("/openai"):
        prefix += "/openai"
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "api-version"]
    version = api_version.strip()
    if is_v1(version):
        target = f"{prefix}/v1{op}"
        if version.lower() == "preview":
            params.append(("api-version", "preview"))
    else:
        if op in DEPLOYMENT_PATHS:
            deployment = quote(azure_deployment(deployments, model), safe="")
            target = f"{prefix}/deployments/{deployment}{op}"
        else:
            target = f"{prefix}{op}"
        params.append(("api-version", version))
    if params:
        target += "?" + urlencode(params, quote_via=quote, safe="")
    return target
