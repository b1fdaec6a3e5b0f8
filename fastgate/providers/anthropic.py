"""The `anthropic` channel type: Anthropic Messages with `x-api-key`.

Conversion to and from the hub is `fastgate.convert.anthropic`; this is what is
specific to talking to the service: headers, paths, the probe and the model list
(paged with `after_id`).
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.providers.base import ChannelType, openai_ids, probe_message

__all__ = ["TYPE", "AnthropicType"]


class AnthropicType(ChannelType):
    """Anthropic's Messages API."""

    __slots__ = ()

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        key = cfg.resolve_api_key()
        out = [("x-api-key", key)] if key else []
        out.append(("anthropic-version", cfg.anthropic_version))
        return out

    def converted_target(self, ch: Any, model: str, upstream_model: str, stream: bool) -> bytes:
        return b"/v1/messages"

    def converted_body(
        self, ch: Any, hub: dict[str, Any], upstream_model: str, stream: bool
    ) -> bytes:
        req = dict(self._hub_to_protocol(ch, hub), model=upstream_model)
        if stream:
            req["stream"] = True
        return orjson.dumps(req)

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        doc = {"model": upstream, "max_tokens": 1, "messages": [probe_message()]}
        return cfg.base_url + "/v1/messages", headers, orjson.dumps(doc), False

    def models_listing(self, cfg: Any) -> tuple[str, dict[str, str] | None]:
        return cfg.base_url + "/v1/models", {"limit": "1000"}

    def models_page(
        self, doc: Any, params: dict[str, str] | None
    ) -> tuple[list[str], dict[str, str] | None]:
        ids = openai_ids(doc)
        last = doc.get("last_id")
        if not doc.get("has_more") or not isinstance(last, str) or not last:
            return ids, None
        return ids, {"limit": "1000", "after_id": last}


TYPE = AnthropicType(
    "anthropic",
    protocol="anthropic",
    dropped_client_headers=frozenset({b"anthropic-version"}),
    own_keys=frozenset({"anthropic_version", "default_max_tokens"}),
)
