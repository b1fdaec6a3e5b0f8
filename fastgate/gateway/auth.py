"""Authentication: a key from the request head -> a Token of the snapshot.

Only the key's SHA-256 is ever stored; a lookup is one hash and one dict access.
"""

from __future__ import annotations

import hashlib
import time

from fastgate import errors
from fastgate.http.head import RequestHead
from fastgate.snapshot import Snapshot, Token

_sha256 = hashlib.sha256


def presented_key(head: RequestHead, ingress: str) -> bytes:
    """The key the client presented, in the header its protocol uses."""
    auth = head.authorization
    if auth[:7].lower() == b"bearer ":
        key = auth[7:].strip()
        if key:
            return key
    if ingress == "anthropic" and head.x_api_key:
        return head.x_api_key
    if ingress == "gemini" and head.goog_api_key:
        return head.goog_api_key
    return b""


def authenticate(snapshot: Snapshot, key: bytes) -> Token:
    """The token for a key, or the 401/403 the request deserves."""
    if not key:
        raise errors.InvalidToken("missing API key: send it as 'Authorization: Bearer fg-...'")
    token = snapshot.tokens.get(_sha256(key).hexdigest())
    if token is None:
        raise errors.InvalidToken("invalid API key")
    if not token.enabled:
        raise errors.PermissionDenied("this API key is disabled")
    if token.expires_at is not None and time.time() >= token.expires_at:
        raise errors.TokenExpired("this API key has expired")
    return token


def check_model(token: Token, public: str, requested: str) -> None:
    """403 unless the key's allow-list (if any) names the model or its alias."""
    allowed = token.models
    if allowed is not None and public not in allowed and requested not in allowed:
        raise errors.PermissionDenied(f"this API key may not use model '{requested}'")
