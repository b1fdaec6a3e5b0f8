"""A one-token probe of a channel: does its base URL answer, with its key, for a model?

Shared by `POST /admin/channels/{id}/test` and `fastgate channel test`. It is a
control-plane tool, not the hot path, so it uses a plain aiohttp ClientSession.
Each channel type is probed in its own protocol (its registry entry's
`probe_request`, `fastgate.providers`), with the credentials and extra headers the
data plane would send, asking for at most one output token:

- openai, openrouter: `POST {base}/v1/chat/completions`, `max_tokens: 1`, Bearer key
- azure: the deployment path from `azure_target` (or `/openai/v1/...`), `api-key`
- anthropic: `POST {base}/v1/messages`, `max_tokens: 1`, `x-api-key` + version
- gemini: `POST {base}/v1beta/models/{model}:generateContent`, `maxOutputTokens: 1`
- ollama: `POST {base}/api/chat`, `stream: false`, `options.num_predict: 1`
- bedrock: Converse, `inferenceConfig.maxTokens: 1`, signed with SigV4
- mock: ok without any network (it is served in-process).

Result: {"ok": bool, "status": HTTP status (0 when no response), "latency_ms":
float, "error": str | None, "model": the model asked for}. The channel's key
never appears in it.
"""

from __future__ import annotations

import time
from typing import Any

from fastgate.config import ChannelConfig
from fastgate.providers import registry
from fastgate.providers.base import PROBE_PROMPT, ProbeSetupError, error_text, origin

__all__ = [
    "PROBE_PROMPT",
    "ProbeSetupError",
    "channel_headers",
    "error_text",
    "origin",
    "probe_channel",
    "probe_request",
]


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any spelling of the same name (no duplicates on the wire)."""
    for k in [k for k in headers if k.lower() == name.lower()]:
        del headers[k]
    headers[name] = value


def channel_headers(channel: ChannelConfig) -> dict[str, str]:
    """The channel's extra headers plus its authentication, as the data plane sends them
    (the channel type's `auth_headers`: bedrock signs instead, mock has none)."""
    headers = {"Accept": "application/json"}
    for name, value in channel.headers.items():
        _put(headers, name, value)
    for name, value in registry.get(channel.type).auth_headers(channel):
        _put(headers, name, value)
    return headers


def probe_request(channel: ChannelConfig, model: str) -> tuple[str, dict[str, str], bytes, bool]:
    """(url, headers, body, url_is_encoded) of the one-token request for `model` (a
    public name: model_map is applied here). Raises ProbeSetupError when the channel
    cannot be probed as configured."""
    kind = registry.get(channel.type)
    headers = channel_headers(channel)
    headers["Content-Type"] = "application/json"
    return kind.probe_request(channel, model, channel.upstream_model(model), headers)


async def probe_channel(
    channel: ChannelConfig, *, model: str | None = None, timeout: float = 15.0
) -> dict[str, Any]:
    """Send one tiny request through `channel` in its protocol; never raises for
    upstream trouble (the result says what went wrong)."""
    model = model or (channel.models[0] if channel.models else "")
    result: dict[str, Any] = {
        "ok": False,
        "status": 0,
        "latency_ms": 0.0,
        "error": None,
        "model": model,
    }
    kind = registry.get(channel.type)
    if kind.in_process:
        result.update(ok=True, status=200)
        return result
    if not model:
        result["error"] = "the channel lists no model to probe"
        return result
    try:
        url, headers, body, encoded = probe_request(channel, model)
    except ProbeSetupError as exc:
        result["error"] = str(exc)
        return result

    import aiohttp
    from yarl import URL

    t0 = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(
                URL(url, encoded=encoded), data=body, headers=headers, allow_redirects=False
            ) as resp,
        ):
            payload = await resp.read()
            status = resp.status
    except TimeoutError:
        result["latency_ms"] = _since(t0)
        result["error"] = f"no answer within {timeout:g} s"
        return result
    except (aiohttp.ClientError, ValueError) as exc:
        result["latency_ms"] = _since(t0)
        result["error"] = f"cannot reach {url}: {exc or exc.__class__.__name__}"
        return result
    result["latency_ms"] = _since(t0)
    result["status"] = status
    if not 200 <= status < 300:
        result["error"] = error_text(payload)
        return result
    problem = kind.probe_problem(payload)
    if problem is not None:
        result["error"] = problem
        return result
    result["ok"] = True
    return result


def _since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
