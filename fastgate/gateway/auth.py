"""Authentication: a key from the request head -> a Token of the snapshot.

Only the key's SHA-256 is ever stored; a lookup is one hash and one dict access.
The worker remembers the hash of keys that matched a token (`DIGESTS`): the
SHA-256 and its hex form were ~3 % of a fast request's instructions. Only valid
keys enter (random keys cannot grow it), at most DIGESTS_MAX; the snapshot still
decides, so a key disabled or removed since is refused as before.
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


DIGESTS_MAX = 4096
DIGESTS: dict[bytes, str] = {}  # a presented key -> its SHA-256 hex (keys that matched)


def lookup(snapshot: Snapshot, key: bytes) -> Token | None:
    """The snapshot's token for `key`, or None; a key that matches is remembered
    in `DIGESTS` (the fast path reads that dict itself and calls this on a miss)."""
    digest = DIGESTS.get(key)
    if digest is not None:
        return snapshot.tokens.get(digest)
    digest = _sha256(key).hexdigest()
    token = snapshot.tokens.get(digest)
    if token is not None:
        if len(DIGESTS) >= DIGESTS_MAX:
            DIGESTS.clear()
        DIGESTS[key] = digest
    return token


def authenticate(snapshot: Snapshot, key: bytes) -> Token:
    """The token for a key, or the 401/403 the request deserves."""
    if not key:
        raise errors.InvalidToken("missing API key: send it as 'Authorization: Bearer fg-...'")
    digest = DIGESTS.get(key)  # `lookup`, its hit inlined (hot)
    token = snapshot.tokens.get(digest) if digest is not None else lookup(snapshot, key)
    if token is None:
        raise errors.InvalidToken("invalid API key")
    if not token.enabled:
        raise errors.PermissionDenied("this API key is disabled")
    if expired(token):
        raise errors.TokenExpired("this API key has expired")
    return token


def expired(token: Token) -> bool:
    """Is the key past its `expires_at`? (The fast path asks too.)"""
    return token.expires_at is not None and time.time() >= token.expires_at


def model_allowed(token: Token, public: str, requested: str) -> bool:
    """Does the key's allow-list (if any) name the model or the alias it was asked by?"""
    allowed = token.models
    return allowed is None or public in allowed or requested in allowed


def check_model(token: Token, public: str, requested: str) -> None:
    """403 unless the key's allow-list (if any) names the model or its alias."""
    if not model_allowed(token, public, requested):
        raise errors.PermissionDenied(f"this API key may not use model '{requested}'")
