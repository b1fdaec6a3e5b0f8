"""A one-token probe of a channel: does its base URL answer, with its key, for a model?

Shared by `POST /admin/channels/{id}/test` and `fastgate channel test`. It is a
control-plane tool, not the hot path, so it uses a plain aiohttp ClientSession.
Each channel type is probed in its own protocol, with the credentials and extra
headers the data plane would send, asking for at most one output token:

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
from urllib.parse import quote, urlsplit

import orjson

from fastgate.config import ChannelConfig

__all__ = [
    "OPENAI_COMPATIBLE",
    "PROBE_PROMPT",
    "ProbeSetupError",
    "channel_headers",
    "error_text",
    "origin",
    "probe_channel",
    "probe_request",
]

OPENAI_COMPATIBLE = frozenset({"openai", "openrouter"})
PROBE_PROMPT = "ping"
_MAX_ERROR = 300


class ProbeSetupError(Exception):
    """The channel cannot be probed as configured (no credentials, bad model id)."""


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


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any spelling of the same name (no duplicates on the wire)."""
    for k in [k for k in headers if k.lower() == name.lower()]:
        del headers[k]
    headers[name] = value


def channel_headers(channel: ChannelConfig) -> dict[str, str]:
    """The channel's extra headers plus its authentication, as the data plane sends them:
    azure `api-key`, anthropic `x-api-key` + `anthropic-version`, gemini
    `x-goog-api-key`, every other type `Authorization: Bearer` (bedrock signs instead)."""
    headers = {"Accept": "application/json"}
    for name, value in channel.headers.items():
        _put(headers, name, value)
    key = channel.resolve_api_key()
    ctype = channel.type
    if ctype == "anthropic":
        if key:
            _put(headers, "x-api-key", key)
        _put(headers, "anthropic-version", channel.anthropic_version)
    elif ctype == "azure":
        if key:
            _put(headers, "api-key", key)
    elif ctype == "gemini":
        if key:
            _put(headers, "x-goog-api-key", key)
    elif ctype not in ("bedrock", "mock") and key:
        _put(headers, "Authorization", f"Bearer {key}")
    return headers


def origin(base_url: str) -> str:
    """`scheme://host[:port]` of a base URL (its path dropped)."""
    u = urlsplit(base_url)
    return f"{u.scheme}://{u.netloc}"


def _user_message() -> dict[str, str]:
    return {"role": "user", "content": PROBE_PROMPT}


def probe_request(channel: ChannelConfig, model: str) -> tuple[str, dict[str, str], bytes, bool]:
    """(url, headers, body, url_is_encoded) of the one-token request for `model` (a
    public name: model_map is applied here). Raises ProbeSetupError when the channel
    cannot be probed as configured."""
    from fastgate.providers.azure import azure_deployment, azure_target

    ctype = channel.type
    upstream = channel.upstream_model(model)
    headers = channel_headers(channel)
    headers["Content-Type"] = "application/json"
    base = channel.base_url
    doc: dict[str, Any]
    if ctype in OPENAI_COMPATIBLE or ctype == "azure":
        doc = {
            "model": upstream,
            "messages": [_user_message()],
            "max_tokens": 1,
            "stream": False,
        }
        if ctype == "azure":
            # `deployments` is keyed by public name (config validation) or by the
            # model_map'ed name (azure.py): either finds the deployment.
            deployment = channel.deployments.get(model) or azure_deployment(
                channel.deployments, upstream
            )
            doc["model"] = deployment
            target = azure_target(
                base, channel.api_version, {upstream: deployment}, upstream, "/v1/chat/completions"
            )
            return origin(base) + target, headers, orjson.dumps(doc), False
        return base + "/v1/chat/completions", headers, orjson.dumps(doc), False
    if ctype == "anthropic":
        doc = {"model": upstream, "max_tokens": 1, "messages": [_user_message()]}
        return base + "/v1/messages", headers, orjson.dumps(doc), False
    if ctype == "gemini":
        doc = {
            "contents": [{"role": "user", "parts": [{"text": PROBE_PROMPT}]}],
            "generationConfig": {"maxOutputTokens": 1},
        }
        url = f"{base}/v1beta/models/{quote(upstream, safe='')}:generateContent"
        return url, headers, orjson.dumps(doc), False
    if ctype == "ollama":
        doc = {
            "model": upstream,
            "messages": [_user_message()],
            "stream": False,
            "options": {"num_predict": 1},
        }
        return base + "/api/chat", headers, orjson.dumps(doc), False
    if ctype == "bedrock":
        return _bedrock_request(channel, upstream, headers)
    raise ProbeSetupError(f'channel type "{ctype}" cannot be probed')


def _bedrock_request(
    channel: ChannelConfig, upstream: str, headers: dict[str, str]
) -> tuple[str, dict[str, str], bytes, bool]:
    """A Converse request signed with SigV4 exactly as the data plane signs it."""
    import datetime as dt

    from fastgate.convert.errors import ConversionError
    from fastgate.providers.bedrock import openai_request_to_converse, request_target, sign

    access_key = channel.resolve_access_key_id()
    secret_key = channel.resolve_secret_access_key()
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
            {"model": upstream, "messages": [_user_message()], "max_tokens": 1}
        )
        host, path = request_target(channel.base_url, upstream, False, channel.region)
    except (ConversionError, ValueError) as exc:
        raise ProbeSetupError(str(exc)) from None
    body = orjson.dumps(doc)
    scheme = urlsplit(channel.base_url).scheme or "https"
    url = f"{scheme}://{host}{path}"
    # Sign only what no proxy rewrites (content-type, host); the channel's extra
    # headers travel unsigned, as on the data plane.
    signed = sign(
        "POST",
        url,
        {"content-type": "application/json"},
        body,
        channel.region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=channel.resolve_session_token() or None,
        now=dt.datetime.now(dt.UTC),
    )
    for k in [k for k in headers if k.lower() == "content-type"]:
        del headers[k]
    headers["content-type"] = "application/json"
    for k, v in signed.items():
        _put(headers, k, v)
    return url, headers, body, True


def _answer_problem(payload: bytes) -> str | None:
    """Why a 2xx answer is not a usable answer, or None."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "the answer is not JSON"
    if not isinstance(doc, dict):
        return "the answer is not a JSON object"
    if "error" in doc or doc.get("type") == "error":
        return error_text(payload)
    return None


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
    if channel.type == "mock":
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
    problem = _answer_problem(payload)
    if problem is not None:
        result["error"] = problem
        return result
    result["ok"] = True
    return result


def _since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
