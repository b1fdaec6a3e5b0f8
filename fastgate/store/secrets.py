"""Encryption at rest for provider credentials stored in the database.

Why: a database dump or a backup must not hand out provider API keys. Channel
credentials created through the store (admin API, CLI) are sealed with AES-GCM
under a key that lives only in the environment, `FASTGATE_SECRET_KEY`, and are
opened only when the store builds the in-memory config (`Store.load`).

Key format: 32 random bytes, written as 64 hex characters or as base64
(standard or URL-safe alphabet, padding optional). Generate one with
`python -c "import os,base64; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"`
(or `openssl rand -hex 32`).

Sealed format (bytes): `b"\\x01"` (format version) + 12-byte random nonce +
ciphertext with its 16-byte tag. The associated data names the purpose (and the
row it belongs to), so a sealed value cannot be moved to another column or row
and still open.

Without `FASTGATE_SECRET_KEY`, sealing is refused with `SecretKeyMissing`: a
credential is never written in plaintext by accident. Naming an environment
variable instead (`api_key_env`) needs no key at all.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

__all__ = [
    "ENV_VAR",
    "SecretBox",
    "SecretDecryptError",
    "SecretKeyInvalid",
    "SecretKeyMissing",
    "load_secret_box",
    "parse_secret_key",
]

ENV_VAR = "FASTGATE_SECRET_KEY"
_VERSION = b"\x01"
_NONCE = 12
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class SecretKeyMissing(RuntimeError):
    """Storing a credential in the database needs FASTGATE_SECRET_KEY, and it is not set."""

    def __init__(self, what: str = "a provider API key") -> None:
        super().__init__(
            f"refusing to store {what} in the database: {ENV_VAR} is not set. "
            f"Set {ENV_VAR} to 32 random bytes (64 hex characters or base64) so that "
            "secrets are encrypted at rest, or reference an environment variable "
            "instead (api_key_env)."
        )


class SecretKeyInvalid(ValueError):
    """FASTGATE_SECRET_KEY is set but is not 32 bytes in hex or base64."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"{ENV_VAR} is invalid: {detail}; expected 32 random bytes as 64 hex "
            "characters or as base64 (standard or URL-safe)"
        )


class SecretDecryptError(ValueError):
    """A sealed value could not be opened (wrong key, or the value was tampered with)."""


def parse_secret_key(text: str) -> bytes:
    """Decode a 32-byte key from hex or (URL-safe) base64; raise SecretKeyInvalid.

    The key text itself never appears in the error message.
    """
    s = text.strip()
    if not s:
        raise SecretKeyInvalid("it is empty")
    if _HEX64.fullmatch(s):
        return bytes.fromhex(s)
    compact = s.rstrip("=")
    padded = compact + "=" * (-len(compact) % 4)
    for decode in (base64.urlsafe_b64decode, base64.standard_b64decode):
        try:
            raw = decode(padded.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
        # b64decode ignores stray characters: insist on a clean round trip.
        if len(raw) == 32 and _b64_matches(raw, compact):
            return raw
        if len(raw) != 32 and _b64_matches(raw, compact):
            raise SecretKeyInvalid(f"it decodes to {len(raw)} bytes, not 32")
    raise SecretKeyInvalid("it is neither 64 hex characters nor base64")


def _b64_matches(raw: bytes, compact: str) -> bool:
    enc = base64.b64encode(raw).decode().rstrip("=")
    url = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return compact in (enc, url)


class SecretBox:
    """AES-256-GCM sealing of small secrets (provider credentials)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyInvalid(f"the key is {len(key)} bytes, not 32")
        # imported here: the usage writer process loads the store but never a secret,
        # and cryptography is ~10 MB of resident memory
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt `plaintext`; `context` (e.g. b"channel:7") must be given again to open."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _VERSION + context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """Decrypt a value made by `seal` with the same context; raise SecretDecryptError."""
        if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
            raise SecretDecryptError("not a sealed value of a known format")
        nonce = sealed[1 : 1 + _NONCE]
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE :], _VERSION + context)
        except InvalidTag:
            raise SecretDecryptError(
                f"cannot decrypt: {ENV_VAR} is not the key this value was encrypted with, "
                "or the stored value was altered"
            ) from None


def load_secret_box(environ: Mapping[str, str] | None = None) -> SecretBox | None:
    """The SecretBox for FASTGATE_SECRET_KEY, or None when the variable is unset or empty.

    Raises SecretKeyInvalid when it is set to something that is not a 32-byte key.
    """
    env = os.environ if environ is None else environ
    text = env.get(ENV_VAR, "")
    if not text.strip():
        return None
    return SecretBox(parse_secret_key(text))
