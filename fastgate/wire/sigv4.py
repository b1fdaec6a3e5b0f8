"""AWS Signature Version 4 (header signing), sans-IO.

Bedrock's runtime API authenticates each request with SigV4 instead of a static key,
so the signature covers the exact body bytes and is computed per request. This is
the only AWS signing code in fastgate; it follows botocore's `SigV4Auth` (the tests
compare against it): the canonical URI is the request path percent-encoded once
more, so a model id such as `anthropic.claude-3-5-sonnet-20240620-v1:0`, sent as
`...v1%3A0`, is signed as `...v1%253A0`; the payload hash is the SHA-256 of the
body (no `x-amz-content-sha256` header is needed for bedrock-runtime); `x-amz-date`
and, with temporary credentials, `x-amz-security-token` are signed along with
`host` and the headers the caller passes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

__all__ = ["host_of", "sign"]

_AMZ_DATE_FMT: Final = "%Y%m%dT%H%M%SZ"
# Headers never signed (botocore's list): hop-by-hop, tracing, and user-agent.
_UNSIGNED: Final = frozenset(
    {
        "authorization",
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
_WS = re.compile(r"\s+")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


@lru_cache(maxsize=64)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The derived key changes once a day per region: cache it off the hot path."""
    k = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _canonical_path(path: str) -> str:
    """Dot segments and empty segments removed, then percent-encoded (again)."""
    if not path:
        return "/"
    parts: list[str] = []
    for seg in path.split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    norm = "/" + "/".join(parts)
    if path.endswith("/") and parts:
        norm += "/"
    return quote(norm, safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        k, _, v = item.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def host_of(u: Any) -> str:
    """The Host header for a split URL: IPv6 in brackets, the port only if not default."""
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if u.scheme == "https" else 80
    if u.port and u.port != default_port:
        host = f"{host}:{u.port}"
    return host


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    region: str,
    service: str = "bedrock",
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, str]:
    """Headers to add to sign the request with AWS Signature Version 4.

    `headers` are the headers that will be sent unchanged (at least `content-type`;
    `host` is taken from `url` when absent, and must be sent as computed). All of them
    are signed except hop-by-hop and tracing headers, so pass only headers no proxy
    rewrites. Returns lower-case names: `x-amz-date`, `authorization`, and
    `x-amz-security-token` when a session token is given. `now` defaults to the
    current UTC time (a naive datetime is taken as UTC).
    """
    when = now or _dt.datetime.now(_dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC)
    amz_date = when.strftime(_AMZ_DATE_FMT)
    day = amz_date[:8]
    u = urlsplit(url)

    signed: dict[str, list[str]] = {}
    for name, value in headers.items():
        lname = name.lower().strip()
        if lname in _UNSIGNED or lname in ("x-amz-date", "x-amz-security-token", "date"):
            continue
        signed.setdefault(lname, []).append(value)
    if "host" not in signed:
        signed["host"] = [host_of(u)]
    added = {"x-amz-date": amz_date}
    if session_token:
        added["x-amz-security-token"] = session_token
    for k, v in added.items():
        signed[k] = [v]

    names = sorted(signed)
    canonical_headers = "".join(
        f"{n}:{','.join(_WS.sub(' ', v).strip() for v in signed[n])}\n" for n in names
    )
    signed_headers = ";".join(names)
    payload_hash = None
    for name, value in headers.items():
        if name.lower() == "x-amz-content-sha256":
            payload_hash = value
    if payload_hash is None:
        payload_hash = hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        (
            method.upper(),
            _canonical_path(u.path),
            _canonical_query(u.query),
            canonical_headers,
            signed_headers,
            payload_hash,
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        )
    )
    key = _signing_key(secret_key, day, region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    added["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
