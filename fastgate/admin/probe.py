"""A one-token probe of a channel: does its base URL answer, with its key, for a model?

Shared by `POST /admin/channels/{id}/test` and `fastgate channel test`. It is a
control-plane tool, not the hot path, so it uses a plain aiohttp ClientSession.
The probe is an OpenAI-style chat completion with `max_tokens: 1` sent to the
channel's base URL + /v1/chat/completions with the channel's key and extra
headers. `mock` channels answer ok without any network; other protocols report
"not supported yet" for now.

Result: {"ok": bool, "status": HTTP status (0 when no response), "latency_ms":
float, "error": str | None, "model": the model asked for}. The channel's key
never appears in it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fastgate.config import ChannelConfig

__all__ = ["OPENAI_COMPATIBLE", "probe_channel"]

OPENAI_COMPATIBLE = frozenset({"openai", "openrouter"})
PROBE_PROMPT = "ping"
_MAX_ERROR = 300


def _error_text(body: bytes) -> str:
    """The provider's error message if the body is an error document, else the text."""
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
        if isinstance(doc.get("message"), str):
            return doc["message"][:_MAX_ERROR]
    text = body.decode("utf-8", "replace").strip()
    return text[:_MAX_ERROR] or "(empty body)"


async def probe_channel(
    channel: ChannelConfig, *, model: str | None = None, timeout: float = 15.0
) -> dict[str, Any]:
    """Send one tiny chat request through `channel`; never raises for upstream trouble."""
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
    if channel.type not in OPENAI_COMPATIBLE:
        result["error"] = "not supported yet"
        return result
    if not model:
        result["error"] = "the channel lists no model to probe"
        return result

    import aiohttp

    url = channel.base_url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(channel.headers)
    key = channel.resolve_api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = orjson.dumps(
        {
            "model": channel.upstream_model(model),
            "messages": [{"role": "user", "content": PROBE_PROMPT}],
            "max_tokens": 1,
            "stream": False,
        }
    )
    t0 = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            payload = await resp.read()
            status = resp.status
    except TimeoutError:
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        result["error"] = f"no answer within {timeout:g} s"
        return result
    except aiohttp.ClientError as exc:
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        result["error"] = f"cannot reach {url}: {exc or exc.__class__.__name__}"
        return result
    result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    result["status"] = status
    if not 200 <= status < 300:
        result["error"] = _error_text(payload)
        return result
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or "error" in doc:
        result["error"] = (
            _error_text(payload) if isinstance(doc, dict) else "the answer is not JSON"
        )
        return result
    result["ok"] = True
    return result
