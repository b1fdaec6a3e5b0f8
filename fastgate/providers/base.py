"""What a channel type is: one object that knows everything type-specific.

Before this, a channel type was a string compared in nine files (`== "azure"`,
`== "mock"`...). Now each type is one `ChannelType` instance, registered once in
`fastgate.providers.registry`, and callers ask it instead of comparing names:

- `protocol`: the wire protocol it speaks upstream; conversion of its requests,
  answers and streams follows from it (`fastgate.convert.chain`).
- auth: `auth_headers(cfg)` (static headers; Bedrock signs each request instead).
- request building: `openai_target` (an OpenAI-protocol passthrough's target, Azure
  rewrites it), `converted_request` (target, body and signed headers of a request
  converted from the hub) and `embed_request` / `embed_response` (OpenAI
  embeddings to and from the type's own embedding API, where it has one).
- probe: `probe_request` (a one-token request) and `probe_problem` (reading its answer).
- discovery: `models_listing` / `models_page` (where models are listed and how a page
  is read), `canonical_model` (how a listed name compares with a configured one).
- config facts: `base_url_suffixes`, `needs_base_url`, `needs_region`,
  `default_base_url`, `default_models`, `protocols` (the mock's `protocol` key).

The defaults are the OpenAI wire protocol with a Bearer key; a type overrides what
differs. Methods take the channel object: a data-plane `Channel` (snapshot) for
request building, a `ChannelConfig` for auth, probe and discovery. Instances are
immutable and hold no per-request state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from fastgate.convert.chain import convert_request
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.vocab.usage import Usage

__all__ = [
    "PROBE_PROMPT",
    "ChannelType",
    "ProbeSetupError",
    "error_text",
    "openai_ids",
    "origin",
    "probe_message",
]

PROBE_PROMPT = "ping"
_MAX_ERROR = 300


class ProbeSetupError(Exception):
    """The channel cannot be probed as configured (no credentials, bad model id)."""


def probe_message() -> dict[str, str]:
    """The one user message every probe sends."""
    return {"role": "user", "content": PROBE_PROMPT}


def error_text(body: bytes) -> str:
    """The provider's error message if the body is an error document, else the text.

    Knows OpenAI/Anthropic/Gemini (`error.message`), Ollama (`error` as a string)
    and AWS (`message` / `Message`) shapes; the result is cut to 300 characters.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:_MAX_ERROR]
        if isinstance(err, str):
            return err[:_MAX_ERROR]
        for k in ("message", "Message"):
            if isinstance(doc.get(k), str):
                return doc[k][:_MAX_ERROR]
    text = body.decode("utf-8", "replace").strip()
    return text[:_MAX_ERROR] or "(empty body)"


def origin(base_url: str) -> str:
    """`scheme://host[:port]` of a base URL (its path dropped)."""
    u = urlsplit(base_url)
    return f"{u.scheme}://{u.netloc}"


def openai_ids(doc: Any) -> list[str]:
    """Model ids of an OpenAI-shaped listing (`data[].id`; Anthropic's too)."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise UpstreamProtocolError('the answer has no "data" list of models')
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


@dataclass(frozen=True, slots=True)
class ChannelType:
    """One channel type. The base class is the OpenAI wire protocol with a Bearer key."""

    name: str
    protocol: str = "openai"
    in_process: bool = False  # served inside fastgate (mock): no origin, no network
    base_url_suffixes: tuple[str, ...] = ("/v1",)  # config strips one of these
    needs_base_url: bool = True
    needs_region: bool = False
    default_models: tuple[str, ...] = ()  # models when the config names none
    discoverable: bool = True
    not_discoverable_reason: str = ""
    # Client headers never forwarded on a same-protocol passthrough (the channel sets them).
    dropped_client_headers: frozenset[bytes] = frozenset()
    # Wire protocols a channel of this type may be told to speak (`protocol = ...`
    # in its config; the first is the default). Empty: only `protocol` above.
    protocols: tuple[str, ...] = ()
    # An OpenAI request goes to this type with its body as it is (with the allowed
    # edits): the fast path may serve it (gateway/plan.py).
    fast_path: bool = False
    # ... at a target of its own (`openai_target`, Azure's deployment path and
    # api-version), remembered per channel: `Channel.targets`.
    own_target: bool = False
    # Config keys that only some types use (TYPE_KEYS below): the ones this type
    # uses. A channel of another type that sets one is refused at config load.
    own_keys: frozenset[str] = frozenset()

    # -- config ------------------------------------------------------------------------

    def default_base_url(self, region: str) -> str:
        """The base URL when the config gives none ("" when one is required)."""
        return ""

    # -- auth --------------------------------------------------------------------------

    def auth_headers(self, cfg: Any) -> list[tuple[str, str]]:
        """Static authentication headers (lower-case names) for the channel's key."""
        key = cfg.resolve_api_key()
        return [("authorization", f"Bearer {key}")] if key else []

    # -- request building ----------------------------------------------------------------

    def openai_target(
        self, ch: Any, model: str, upstream_model: str, path: bytes, query: bytes
    ) -> tuple[bytes, bytes]:
        """(path, query) of an OpenAI-ingress passthrough (the ingress's by default)."""
        return path, query

    def converted_target(self, ch: Any, model: str, upstream_model: str, stream: bool) -> bytes:
        """Target of a chat request converted from the hub."""
        return b"/v1/chat/completions"

    def converted_body(
        self, ch: Any, hub: dict[str, Any], upstream_model: str, stream: bool
    ) -> bytes:
        """Body of a chat request converted from the hub (may raise ConversionError)."""
        req = dict(hub, model=upstream_model)
        if stream:
            so = req.get("stream_options")
            req["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        return orjson.dumps(req)

    def converted_request(
        self, ch: Any, hub: dict[str, Any], model: str, upstream_model: str, stream: bool
    ) -> tuple[bytes, bytes, list[bytes]]:
        """(target, body, extra header lines) of a chat request converted from the hub.

        `model` is the public name, `upstream_model` the channel's (model_map). Raises
        ConversionError when the request cannot be expressed in the channel's protocol.
        """
        body = self.converted_body(ch, hub, upstream_model, stream)
        return self.converted_target(ch, model, upstream_model, stream), body, []

    def embed_request(
        self, ch: Any, req: dict[str, Any], upstream_model: str
    ) -> tuple[bytes, bytes, list[bytes]]:
        """(target, body, extra header lines) of an OpenAI embeddings request converted
        to the channel's own embedding API (`fastgate.convert.embeddings`)."""
        raise ConversionError(f"{self.name} channels have no embeddings API")

    def embed_response(
        self, ch: Any, resp: Any, upstream_model: str, headers: list[bytes]
    ) -> tuple[list[list[float]], Usage]:
        """Vectors and usage of the channel's embeddings answer (`headers`: the
        response's forwarded header pieces, name, ": ", value, CRLF)."""
        raise UpstreamProtocolError(f"{self.name} channels have no embeddings API")

    def _hub_to_protocol(self, ch: Any, hub: dict[str, Any]) -> dict[str, Any]:
        return convert_request(
            hub, "openai", self.protocol, default_max_tokens=ch.default_max_tokens
        )

    # -- probe -------------------------------------------------------------------------

    def probe_request(
        self, cfg: Any, model: str, upstream: str, headers: dict[str, str]
    ) -> tuple[str, dict[str, str], bytes, bool]:
        """(url, headers, body, url_is_encoded) of a one-token request for `upstream`
        (`model` is the public name); `headers` are the channel's, auth included."""
        doc = {
            "model": upstream,
            "messages": [probe_message()],
            "max_tokens": 1,
            "stream": False,
        }
        return cfg.base_url + "/v1/chat/completions", headers, orjson.dumps(doc), False

    def probe_problem(self, payload: bytes) -> str | None:
        """Why a 2xx answer to the probe is not a usable answer, or None."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return "the answer is not JSON"
        if not isinstance(doc, dict):
            return "the answer is not a JSON object"
        if "error" in doc or doc.get("type") == "error":
            return error_text(payload)
        return None

    # -- discovery ---------------------------------------------------------------------

    def models_listing(self, cfg: Any) -> tuple[str, dict[str, str] | None]:
        """(url, query parameters) of the first page of the upstream's model list."""
        return cfg.base_url + "/v1/models", None

    def models_page(
        self, doc: Any, params: dict[str, str] | None
    ) -> tuple[list[str], dict[str, str] | None]:
        """(model ids, the next page's parameters or None) of one listing page.
        Raises UpstreamProtocolError when the answer holds no model list."""
        return openai_ids(doc), None

    def canonical_model(self, name: str) -> str:
        """The name as the upstream lists it (Ollama: a bare name means `:latest`)."""
        return name
