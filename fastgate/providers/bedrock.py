"""The `bedrock` channel type: Amazon Bedrock Runtime's Converse API, SigV4-signed.

Conversion is `fastgate.convert.bedrock` (requests, answers) and
`fastgate.convert.bedrock_stream` (ConverseStream); signing is `fastgate.wire.sigv4`
and the stream framing `fastgate.wire.eventstream`. What is left here is the glue:
where a Converse call goes (`request_target`), embeddings through InvokeModel
(Titan and Cohere bodies, `fastgate.convert.embeddings`), signing each request with the channel's
AWS credentials (there is no static key header), the probe, and the fact that the
runtime API lists no models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from fastgate.convert.bedrock import openai_request_to_converse
from fastgate.convert.embeddings import bedrock_embed_request, bedrock_embed_response
from fastgate.convert.errors import ConversionError
from fastgate.providers.base import ChannelType, ProbeSetupError, probe_message
from fastgate.vocab.usage import Usage, count
from fastgate.wire.sigv4 import host_of, sign

__all__ = ["TYPE", "BedrockType", "default_base_url", "request_target", "signed_headers"]


def default_base_url(region: str) -> str:
    """`https://bedrock-runtime.{region}.amazonaws.com`."""
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def request_target(
    base_url: str, model_id: str, stream: bool, region: str = "", op: str = ""
) -> tuple[str, str]:
    """(host header, request path) for Converse / ConverseStream on `model_id`, or
    for the runtime operation `op` ("invoke": InvokeModel, which embeddings use).

    The model id (which may be an ARN with ':' and '/') is percent-encoded as one path
    segment, as botocore sends it. The host carries the port only when it is not the
    scheme's default. An empty `base_url` means the regional AWS endpoint.
    """
    if not base_url:
        if not region:
            raise ValueError("bedrock needs a base_url or a region")
        base_url = default_base_url(region)
    u = urlsplit(base_url)
    op = op or ("converse-stream" if stream else "converse")
    return host_of(u), f"{u.path.rstrip('/')}/model/{quote(model_id, safe='')}/{op}"


def signed_headers(cfg: Any, url: str, body: bytes) -> dict[str, str]:
    """SigV4 headers for a JSON POST of `body` to `url` with the channel's credentials.

    Only what no proxy rewrites is signed (content-type, host); the channel's extra
    headers travel unsigned.
    """
    return sign(
        "POST",
        url,
        {"content-type": "application/json"},
        body,
        cfg.region,
        access_key=cfg.resolve_access_key_id(),
        secret_key=cfg.resolve_secret_access_key(),
        session_token=cfg.resolve_session_token() or None,
        now=dt.datetime.now(dt.UTC),
    )


class BedrockType(ChannelType):
    """Converse over HTTPS, every request signed (no static auth header)."""

    __slots__ = ()

    def default_base_url(self, region: str) -> str:
        return default_base_url(region)

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        return []  # signed per request: converted_request

    def converted_request(
        self, ch: Any, hub: dict[str, Any], model: str, upstream_model: str, stream: bool
    ) -> tuple[bytes, bytes, list[bytes]]:
        cfg = ch.config
        body = orjson.dumps(openai_request_to_converse(hub, ch.default_max_tokens))
        host, path = request_target(cfg.base_url, upstream_model, stream, cfg.region)
        signed = signed_headers(cfg, f"https://{host}{path}", body)
        extra = [f"{k}: {v}\r\n".encode("latin-1") for k, v in signed.items()]
        return path.encode("latin-1"), body, extra

    def embed_request(
        self, ch: Any, req: dict[str, Any], upstream_model: str
    ) -> tuple[bytes, bytes, list[bytes]]:
        """InvokeModel with a Titan or Cohere embeddings body, signed."""
        cfg = ch.config
        body = orjson.dumps(bedrock_embed_request(req, upstream_model))
        host, path = request_target(cfg.base_url, upstream_model, False, cfg.region, "invoke")
        signed = signed_headers(cfg, f"https://{host}{path}", body)
        extra = [f"{k}: {v}\r\n".encode("latin-1") for k, v in signed.items()]
        return path.encode("latin-1"), body, [*extra, b"accept: application/json\r\n"]

    def embed_response(
        self, ch: Any, resp: Any, upstream_model: str, headers: list[bytes]
    ) -> tuple[list[list[float]], Usage]:
        tokens = None
        for i in range(0, len(headers), 4):
            if headers[i].lower() == b"x-amzn-bedrock-input-token-count":
                tokens = count(int(headers[i + 2])) if headers[i + 2].isdigit() else None
        return bedrock_embed_response(resp, upstream_model, tokens)

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        """A Converse request signed with SigV4 exactly as the data plane signs it."""
        access_key = cfg.resolve_access_key_id()
        secret_key = cfg.resolve_secret_access_key()
        if not access_key or not secret_key:
            missing = [
                f
                for f, v in (("access_key_id", access_key), ("secret_access_key", secret_key))
                if not v
            ]
            raise ProbeSetupError(
                "the bedrock channel has no AWS credentials: set "
                + " and ".join(missing)
                + " (or their *_env variables)"
            )
        try:
            doc = openai_request_to_converse(
                {"model": upstream, "messages": [probe_message()], "max_tokens": 1}
            )
            host, path = request_target(cfg.base_url, upstream, False, cfg.region)
        except (ConversionError, ValueError) as exc:
            raise ProbeSetupError(str(exc)) from None
        body = orjson.dumps(doc)
        scheme = urlsplit(cfg.base_url).scheme or "https"
        url = f"{scheme}://{host}{path}"
        signed = signed_headers(cfg, url, body)
        for k in [k for k in headers if k.lower() == "content-type"]:
            del headers[k]
        headers["content-type"] = "application/json"
        for k, v in signed.items():
            for old in [h for h in headers if h.lower() == k]:
                del headers[old]
            headers[k] = v
        return url, headers, body, True


TYPE = BedrockType(
    "bedrock",
    protocol="bedrock",
    base_url_suffixes=(),
    needs_base_url=False,  # from the region
    needs_region=True,
    own_keys=frozenset(
        {"region", "default_max_tokens"}
        | {
            k + s
            for k in ("access_key_id", "secret_access_key", "session_token")
            for s in ("", "_env")
        }
    ),
    discoverable=False,
    not_discoverable_reason=(
        "bedrock channels cannot be discovered: the Bedrock Runtime API that fastgate "
        "calls (Converse) has no model listing (ListFoundationModels belongs to the "
        "separate bedrock control-plane API); put the model ids in the channel's "
        "models yourself"
    ),
)
