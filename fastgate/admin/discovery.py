"""Model discovery: which models does a channel's upstream offer?

Shared by `fastgate channel models NAME` and `GET /admin/channels/{id}/models`
(docs/contract.md section 4). A control-plane tool: one aiohttp ClientSession per
call, the channel's own credentials and extra headers
(`fastgate.admin.probe.channel_headers`). Where each type lists its models and
how a page is read is its registry entry's (`models_listing`, `models_page`,
`fastgate.providers`); this module does the I/O:

- openai, openrouter: `GET {base}/v1/models` (`data[].id`), Bearer key
- azure: `azure_target(..., "/v1/models")`: `/openai/v1/models` for the v1 API,
  `/openai/models?api-version=...` for a dated one, with `api-key`
- anthropic: `GET {base}/v1/models` with `x-api-key` + `anthropic-version`, pages
  followed with `after_id`
- gemini: `GET {base}/v1beta/models` with `x-goog-api-key`, pages followed with
  `pageToken`; the `models/` prefix is stripped
- ollama: `GET {base}/api/tags`
- bedrock: the runtime API has no listing (that is the separate `bedrock` control
  plane service): NotDiscoverable
- mock: its configured models, no network.

Failures are exceptions a front end maps to its own codes: UpstreamUnreachable
(connection refused, DNS, timeout: CLI exit 3), UpstreamError (a non-2xx answer
or an answer without a model list: CLI exit 1, with the upstream's message),
NotDiscoverable (CLI exit 1). No message ever holds the channel's key.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.admin.probe import channel_headers, error_text
from fastgate.config import ChannelConfig
from fastgate.convert.errors import UpstreamProtocolError
from fastgate.providers import registry

__all__ = [
    "MAX_PAGES",
    "DiscoveryError",
    "NotDiscoverable",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "discover_models",
    "models_report",
]

MAX_PAGES = 100  # a paginating upstream that never ends is cut here


class DiscoveryError(Exception):
    """The upstream's models could not be listed."""


class NotDiscoverable(DiscoveryError):
    """The channel type has no model listing (bedrock's runtime API)."""


class UpstreamUnreachable(DiscoveryError):
    """No HTTP answer at all: connection refused, DNS failure, TLS failure."""


class UpstreamTimeout(UpstreamUnreachable):
    """No answer within the timeout."""


class UpstreamError(DiscoveryError):
    """The upstream answered, but not with a model list (`status` 0: bad 2xx body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Client:
    """GETs JSON from one upstream, turning transport trouble into DiscoveryErrors."""

    def __init__(self, session: Any, headers: dict[str, str], timeout: float) -> None:
        self.session = session
        self.headers = headers
        self.timeout = timeout

    async def get(self, url: str, params: dict[str, str] | None = None) -> Any:
        import aiohttp

        try:
            async with self.session.get(
                url, params=params, headers=self.headers, allow_redirects=False
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from {url} within {self.timeout:g} s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            why = str(exc) or exc.__class__.__name__
            raise UpstreamUnreachable(f"cannot reach {url}: {why}") from None
        if not 200 <= status < 300:
            raise UpstreamError(status, error_text(payload))
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(0, f"{url} did not answer JSON") from None


async def _list(channel: ChannelConfig, client: _Client) -> list[str]:
    """Every page of the listing, as the channel type finds and reads them."""
    kind = registry.get(channel.type)
    url, params = kind.models_listing(channel)
    ids: list[str] = []
    for _ in range(MAX_PAGES):
        doc = await client.get(url, params)
        try:
            page, params = kind.models_page(doc, params)
        except UpstreamProtocolError as exc:
            raise UpstreamError(0, str(exc)) from None
        ids += page
        if params is None:
            break
    return ids


async def discover_models(channel: ChannelConfig, timeout: float = 15) -> list[str]:
    """The model ids the channel's upstream offers, in its order, without duplicates.

    Raises NotDiscoverable (bedrock), UpstreamUnreachable / UpstreamTimeout, or
    UpstreamError (non-2xx, with the upstream's own message, or no model list).
    """
    kind = registry.get(channel.type)
    if kind.in_process:
        return list(dict.fromkeys(channel.models))
    if not kind.discoverable:
        raise NotDiscoverable(kind.not_discoverable_reason)
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        ids = await _list(channel, _Client(session, channel_headers(channel), timeout))
    return list(dict.fromkeys(ids))


def _same_model(channel: ChannelConfig, name: str) -> str:
    """The name as the upstream lists it (Ollama: a bare name means `:latest`)."""
    return registry.get(channel.type).canonical_model(name)


def models_report(channel: ChannelConfig, ids: list[str]) -> dict[str, Any]:
    """Discovered ids against the channel's `models` (model_map applied).

    {"channel", "type", "data": [{"id", "in_channel", "served_as": [public names]}],
    "missing": [public names whose upstream model the upstream does not list]}.
    """
    served: dict[str, list[str]] = {}
    for public in channel.models:
        served.setdefault(_same_model(channel, channel.upstream_model(public)), []).append(public)
    listed = {_same_model(channel, i) for i in ids}
    data = []
    for i in ids:
        names = served.get(_same_model(channel, i), [])
        data.append({"id": i, "in_channel": bool(names), "served_as": names})
    missing = [
        public
        for public in channel.models
        if _same_model(channel, channel.upstream_model(public)) not in listed
    ]
    return {"channel": channel.name, "type": channel.type, "data": data, "missing": missing}
