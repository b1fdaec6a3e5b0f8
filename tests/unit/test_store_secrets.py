"""Secrets at rest: FASTGATE_SECRET_KEY parsing and AES-GCM sealing."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastgate.store.secrets import (
    ENV_VAR,
    SecretBox,
    SecretDecryptError,
    SecretKeyInvalid,
    SecretKeyMissing,
    load_secret_box,
    parse_secret_key,
)

RAW = bytes(range(32))


@pytest.mark.parametrize(
    "text",
    [
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "  " + RAW.hex() + "\n",
    ],
)
def test_key_forms_accepted(text: str) -> None:
    assert parse_secret_key(text) == RAW


def test_key_with_plus_and_slash_in_standard_base64() -> None:
    raw = b"\xfb\xff" * 16  # standard base64 of this uses "+" and "/"
    std = base64.b64encode(raw).decode()
    assert "+" in std or "/" in std
    assert parse_secret_key(std) == raw
    assert parse_secret_key(base64.urlsafe_b64encode(raw).decode()) == raw


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        (RAW.hex()[:-2], "neither"),  # 62 hex digits: not hex-32, not base64 of 32 bytes
        (base64.b64encode(RAW[:16]).decode(), "16 bytes"),
        ("not a key at all!", "neither"),
    ],
)
def test_bad_keys_rejected_without_echo(text: str, fragment: str) -> None:
    with pytest.raises(SecretKeyInvalid) as info:
        parse_secret_key(text)
    msg = str(info.value)
    assert ENV_VAR in msg
    assert fragment in msg or "not 32" in msg or "neither" in msg
    if text.strip():
        assert text.strip() not in msg


def test_seal_is_standard_aes_gcm() -> None:
    """The format is version byte + 12-byte nonce + AES-GCM(ciphertext+tag); any
    AES-GCM implementation with the same key and AAD opens it."""
    box = SecretBox(RAW)
    sealed = box.seal(b"sk-very-secret", b"channel:7")
    assert sealed[0] == 1
    assert b"sk-very-secret" not in sealed
    assert len(sealed) == 1 + 12 + len(b"sk-very-secret") + 16
    nonce, body = sealed[1:13], sealed[13:]
    assert AESGCM(RAW).decrypt(nonce, body, b"\x01channel:7") == b"sk-very-secret"
    assert box.open(sealed, b"channel:7") == b"sk-very-secret"


def test_nonces_differ() -> None:
    box = SecretBox(RAW)
    a = box.seal(b"x", b"c")
    b = box.seal(b"x", b"c")
    assert a != b and a[1:13] != b[1:13]


def test_wrong_key_context_or_tampering_fails() -> None:
    box = SecretBox(RAW)
    sealed = box.seal(b"secret", b"channel:1")
    with pytest.raises(SecretDecryptError, match=ENV_VAR):
        SecretBox(os.urandom(32)).open(sealed, b"channel:1")
    with pytest.raises(SecretDecryptError):
        box.open(sealed, b"channel:2")  # moved to another row
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(SecretDecryptError):
        box.open(bytes(flipped), b"channel:1")
    with pytest.raises(SecretDecryptError):
        box.open(b"\x02" + sealed[1:], b"channel:1")
    with pytest.raises(SecretDecryptError):
        box.open(b"short", b"channel:1")


def test_load_secret_box_from_environment() -> None:
    assert load_secret_box({}) is None
    assert load_secret_box({ENV_VAR: "  "}) is None
    box = load_secret_box({ENV_VAR: RAW.hex()})
    assert box is not None
    assert SecretBox(RAW).open(box.seal(b"v", b"c"), b"c") == b"v"
    with pytest.raises(SecretKeyInvalid):
        load_secret_box({ENV_VAR: "abc"})
    assert RAW.hex() not in repr(box)


def test_missing_key_message_is_actionable() -> None:
    msg = str(SecretKeyMissing("api_key"))
    assert ENV_VAR in msg and "api_key_env" in msg and "refusing" in msg
