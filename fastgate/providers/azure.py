"""Azure OpenAI: where an OpenAI path goes on an Azure resource, and the `azure`
channel type (OpenAI wire format, `api-key` auth, its own URL scheme).

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
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import orjson

from fastgate.providers.base import ChannelType, origin, probe_message

__all__ = [
    "DEPLOYMENT_PATHS",
    "TYPE",
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


TARGETS_MAX = 1024  # targets a channel remembers (models x paths; the rest computed)


class AzureType(ChannelType):
    """OpenAI's wire format at Azure's paths, with an `api-key` header."""

    __slots__ = ()

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        key = cfg.resolve_api_key()
        return [("api-key", key)] if key else []

    def openai_target(
        self, ch: Any, model: str, upstream_model: str, path: bytes, query: bytes
    ) -> tuple[bytes, bytes]:
        """Deployments are keyed by the public model name (or the model_map'ed one);
        the client's query is not forwarded (the api-version is the channel's).
        Remembered in `ch.targets` (the fast path reads it; the channel is the
        snapshot's, so a reload starts afresh), at most TARGETS_MAX of them."""
        memo = ch.targets
        key = (model, upstream_model, path)
        target = memo.get(key)
        if target is None:
            cfg = ch.config
            name = model if model in cfg.deployments else upstream_model
            # The base URL's path (`ch.path_prefix`, which `request_bytes` puts in
            # front) decides whether `/openai` is added: a base URL that ends in
            # `/openai` must not get it twice.
            prefix = ch.path_prefix
            target = azure_target(
                prefix.decode("latin-1"),
                cfg.api_version,
                cfg.deployments,
                name,
                path.decode("latin-1"),
            ).encode("latin-1")[len(prefix) :]
            if len(memo) < TARGETS_MAX:
                memo[key] = target
        return target, b""

    def converted_target(self, ch: Any, model: str, upstream_model: str, stream: bool) -> bytes:
        return self.openai_target(ch, model, upstream_model, b"/v1/chat/completions", b"")[0]

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        # `deployments` is keyed by public name (config validation) or by the
        # model_map'ed name: either finds the deployment.
        deployment = cfg.deployments.get(model) or azure_deployment(cfg.deployments, upstream)
        doc = {
            "model": deployment,
            "messages": [probe_message()],
            "max_tokens": 1,
            "stream": False,
        }
        base = cfg.base_url
        target = azure_target(
            base, cfg.api_version, {upstream: deployment}, upstream, "/v1/chat/completions"
        )
        return origin(base) + target, headers, orjson.dumps(doc), False

    def models_listing(self, cfg: Any) -> tuple[str, dict[str, str] | None]:
        base = cfg.base_url
        target = azure_target(base, cfg.api_version, cfg.deployments, "", "/v1/models")
        return origin(base) + target, None


TYPE = AzureType(
    "azure", fast_path=True, own_target=True, own_keys=frozenset({"api_version", "deployments"})
)
