"""The `ollama` channel type: Ollama's native API (`/api/chat`, `/api/tags`).

Conversion to and from the hub is `fastgate.convert.ollama`; this is what is specific
to talking to the service: the chat path, embeddings (`/api/embed`), the probe (`num_predict: 1`), and the model
list (`/api/tags`, where a bare name means `:latest`).
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.convert.embeddings import ollama_embed_request, ollama_embed_response
from fastgate.convert.errors import UpstreamProtocolError
from fastgate.providers.base import ChannelType, probe_message
from fastgate.vocab.usage import Usage

__all__ = ["TYPE", "OllamaType", "ollama_tags_to_models"]


def ollama_tags_to_models(obj: Any) -> list[str]:
    """Model names from a `/api/tags` answer, in the upstream's order."""
    if not isinstance(obj, dict) or not isinstance(obj.get("models"), list):
        raise UpstreamProtocolError("Ollama /api/tags answer has no models list")
    names: list[str] = []
    for m in obj["models"]:
        name = (m.get("name") or m.get("model")) if isinstance(m, dict) else None
        if not isinstance(name, str) or not name:
            raise UpstreamProtocolError("Ollama /api/tags entry without a name")
        names.append(name)
    return names


class OllamaType(ChannelType):
    """Ollama's native chat API (NDJSON streams, which stream unless told not to)."""

    __slots__ = ()

    def converted_target(self, ch: Any, model: str, upstream_model: str, stream: bool) -> bytes:
        return b"/api/chat"

    def converted_body(
        self, ch: Any, hub: dict[str, Any], upstream_model: str, stream: bool
    ) -> bytes:
        req = dict(self._hub_to_protocol(ch, hub), model=upstream_model)
        req["stream"] = stream  # always explicit: Ollama streams by default
        return orjson.dumps(req)

    def embed_request(
        self, ch: Any, req: dict[str, Any], upstream_model: str
    ) -> tuple[bytes, bytes, list[bytes]]:
        return b"/api/embed", orjson.dumps(ollama_embed_request(req, upstream_model)), []

    def embed_response(
        self, ch: Any, resp: Any, upstream_model: str, headers: list[bytes]
    ) -> tuple[list[list[float]], Usage]:
        return ollama_embed_response(resp)

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        doc = {
            "model": upstream,
            "messages": [probe_message()],
            "stream": False,
            "options": {"num_predict": 1},
        }
        return cfg.base_url + "/api/chat", headers, orjson.dumps(doc), False

    def models_listing(self, cfg: Any) -> tuple[str, dict[str, str] | None]:
        return cfg.base_url + "/api/tags", None

    def models_page(
        self, doc: Any, params: dict[str, str] | None
    ) -> tuple[list[str], dict[str, str] | None]:
        return ollama_tags_to_models(doc), None

    def canonical_model(self, name: str) -> str:
        if ":" not in name.rsplit("/", 1)[-1]:
            return name + ":latest"
        return name


TYPE = OllamaType("ollama", protocol="ollama", base_url_suffixes=())
