"""The `gemini` channel type: the Gemini API with `x-goog-api-key`.

Conversion to and from the hub is `fastgate.convert.gemini`; this is what is specific
to talking to the service: the model and the stream flag live in the URL, the key in
a header (never in the URL), and the model list is paged with `pageToken`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from fastgate.convert.embeddings import gemini_embed_request, gemini_embed_response
from fastgate.convert.errors import UpstreamProtocolError
from fastgate.providers.base import PROBE_PROMPT, ChannelType
from fastgate.vocab.usage import Usage

__all__ = ["TYPE", "GeminiType", "gemini_ids"]


def gemini_ids(doc: Any) -> list[str]:
    """Model ids of a `models.list` page, without the `models/` prefix."""
    models = doc.get("models", []) if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise UpstreamProtocolError('the answer has no "models" list')
    out = []
    for m in models:
        name = m.get("name") if isinstance(m, dict) else None
        if isinstance(name, str) and name:
            out.append(name.removeprefix("models/"))
    return out


def model_target(model: str, method: bytes) -> bytes:
    """`/v1beta/models/{model}:{method}` with the model as one path segment."""
    return b"/v1beta/models/" + quote(model, safe="").encode() + b":" + method


class GeminiType(ChannelType):
    """Google's Gemini API (generativelanguage)."""

    __slots__ = ()

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        key = cfg.resolve_api_key()
        return [("x-goog-api-key", key)] if key else []

    def converted_target(self, ch: Any, model: str, upstream_model: str, stream: bool) -> bytes:
        method = b"streamGenerateContent?alt=sse" if stream else b"generateContent"
        return model_target(upstream_model, method)

    def converted_body(
        self, ch: Any, hub: dict[str, Any], upstream_model: str, stream: bool
    ) -> bytes:
        return orjson.dumps(self._hub_to_protocol(ch, hub))

    def embed_request(
        self, ch: Any, req: dict[str, Any], upstream_model: str
    ) -> tuple[bytes, bytes, list[bytes]]:
        method, body = gemini_embed_request(req, upstream_model)
        return model_target(upstream_model, method), orjson.dumps(body), []

    def embed_response(
        self, ch: Any, resp: Any, upstream_model: str, headers: list[bytes]
    ) -> tuple[list[list[float]], Usage]:
        return gemini_embed_response(resp)

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        doc = {
            "contents": [{"role": "user", "parts": [{"text": PROBE_PROMPT}]}],
            "generationConfig": {"maxOutputTokens": 1},
        }
        url = f"{cfg.base_url}/v1beta/models/{quote(upstream, safe='')}:generateContent"
        return url, headers, orjson.dumps(doc), False

    def models_listing(self, cfg: Any) -> tuple[str, dict[str, str] | None]:
        return cfg.base_url + "/v1beta/models", {"pageSize": "1000"}

    def models_page(
        self, doc: Any, params: dict[str, str] | None
    ) -> tuple[list[str], dict[str, str] | None]:
        ids = gemini_ids(doc)
        token = doc.get("nextPageToken") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            return ids, None
        return ids, {"pageSize": "1000", "pageToken": token}


TYPE = GeminiType("gemini", protocol="gemini", base_url_suffixes=("/v1beta", "/v1"))
