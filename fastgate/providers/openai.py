"""The OpenAI wire protocol: building the upstream request for a passthrough, and
the `openai` and `openrouter` channel types (the registry's defaults, unchanged).

The body goes upstream as the client sent it, except the two edits
docs/contract.md section 3 allows: the model name when the channel renames it, and
`stream_options.include_usage = true` for chat/completions streams. Both are
done as byte edits when the body's shape allows it, by re-encoding otherwise.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgate.providers.base import ChannelType

# Paths whose streams carry usage only when include_usage is asked for.
INCLUDE_USAGE_PATHS = frozenset({b"/v1/chat/completions", b"/v1/completions"})

_INJECT = b'{"stream_options":{"include_usage":true},'


def client_asked_usage(obj: dict[str, Any]) -> bool:
    """The client set `stream_options.include_usage` itself."""
    so = obj.get("stream_options")
    return isinstance(so, dict) and so.get("include_usage") is True


def needs_include_usage(path: bytes, obj: dict[str, Any], asked: bool) -> bool:
    """True when the gateway must ask for usage the client did not ask for."""
    return not asked and path in INCLUDE_USAGE_PATHS and obj.get("stream") is True


def edit_body(
    body: bytes, obj: dict[str, Any], requested: str, upstream_model: str, inject: bool
) -> bytes:
    """The body to send upstream: `body` itself when nothing changes."""
    rename = upstream_model != requested
    if not rename and not inject:
        return body
    if rename:
        edited = _rename_bytes(body, requested, upstream_model)
        if edited is None:
            return _reencode(obj, upstream_model, inject)
        body = edited
    if inject:
        if "stream_options" in obj:
            return _reencode(obj, upstream_model, inject)
        start = body.find(b"{")
        if start < 0:
            return _reencode(obj, upstream_model, inject)
        body = _INJECT + body[start + 1 :]
    return body


def _rename_bytes(body: bytes, old: str, new: str) -> bytes | None:
    """Replace the value of the one "model" key, or None if that is not certain."""
    i = body.find(b'"model"')
    if i < 0 or body.find(b'"model"', i + 7) >= 0:
        return None  # absent or ambiguous (a nested "model" key): re-encode
    j = i + 7
    n = len(body)
    while j < n and body[j] in b" \t\r\n":
        j += 1
    if j >= n or body[j] != 0x3A:  # ':'
        return None
    j += 1
    while j < n and body[j] in b" \t\r\n":
        j += 1
    old_enc = orjson.dumps(old)
    if body[j : j + len(old_enc)] != old_enc:
        return None
    return body[:j] + orjson.dumps(new) + body[j + len(old_enc) :]


def _reencode(obj: dict[str, Any], model: str, inject: bool) -> bytes:
    obj = dict(obj)
    obj["model"] = model
    if inject:
        so = obj.get("stream_options")
        obj["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
    return orjson.dumps(obj)


def request_bytes(
    channel: Any,
    path: bytes,
    query: bytes,
    forward: list[bytes],
    body: bytes,
    content_type: bytes = b"",
) -> bytes:
    """The whole upstream request, head and body, as one bytes object."""
    target = channel.path_prefix + path
    if query:
        target += b"?" + query
    return b"".join(
        (
            b"POST ",
            target,
            b" HTTP/1.1\r\n",
            channel.static_headers,
            b"content-type: ",
            content_type or b"application/json",
            b"\r\n",
            *forward,
            b"content-length: %d\r\n\r\n" % len(body),
            body,
        )
    )


# The channel types that speak this protocol as it is: the base entry's defaults.
TYPE = ChannelType("openai", fast_path=True)
OPENROUTER = ChannelType("openrouter", fast_path=True)
