"""Header name sets (`fastgate.vocab.headers`) and protocol names, and that http/ uses them."""

from __future__ import annotations

import pytest

from fastgate.gateway import protocols as gw_protocols
from fastgate.http import client, upstream
from fastgate.vocab import headers, protocols


def test_http_uses_the_vocabulary_sets() -> None:
    assert client.REQUEST_ROLES is headers.REQUEST_ROLES
    assert client.request_role is headers.request_role
    assert upstream._KIND_OF is headers.RESPONSE_KIND_OF
    assert upstream.response_kind is headers.response_kind


def spellings(name: bytes) -> list[bytes]:
    return [
        name,
        name.upper(),
        b"-".join(p.capitalize() for p in name.split(b"-")),
        bytes(c ^ 32 if 97 <= c <= 122 and i % 2 else c for i, c in enumerate(name)),
    ]


def test_every_spelling_of_a_name_has_the_lower_case_role() -> None:
    for name in [*headers.DROP_UPSTREAM, *headers.REQUEST_SLOTS, b"x-custom", b"accept"]:
        want = headers.REQUEST_SLOTS.get(
            name, headers.REQUEST_DROP if name in headers.DROP_UPSTREAM else headers.REQUEST_FORWARD
        )
        for spelling in spellings(name):
            assert headers.request_role(spelling) == want, spelling
            assert headers.REQUEST_ROLES.get(spelling, want) == want
    for name in [*headers.RESPONSE_KINDS, b"x-custom", b"date"]:
        want = headers.RESPONSE_KINDS.get(name, headers.DOWN_FORWARD)
        for spelling in spellings(name):
            assert headers.response_kind(spelling) == want, spelling
            assert headers.RESPONSE_KIND_OF.get(spelling, want) == want


def test_the_memos_of_spellings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(headers, "REQUEST_ROLES", dict(headers.REQUEST_ROLES))
    monkeypatch.setattr(headers, "RESPONSE_KIND_OF", dict(headers.RESPONSE_KIND_OF))
    for i in range(headers.NAME_MEMO + 100):
        assert headers.request_role(b"X-Junk-%d" % i) == headers.REQUEST_FORWARD
        assert headers.response_kind(b"X-Junk-%d" % i) == headers.DOWN_FORWARD
    assert len(headers.REQUEST_ROLES) == len(headers.RESPONSE_KIND_OF) == headers.NAME_MEMO
    # once full, a new spelling is still classified, only not remembered
    assert headers.request_role(b"AUTHORIZATION") == "authorization"
    assert headers.response_kind(b"CONTENT-LENGTH") == headers.DOWN_CONTENT_LENGTH


def test_hop_by_hop_never_crosses_either_way() -> None:
    assert headers.HOP_BY_HOP <= headers.DROP_UPSTREAM
    for name in headers.HOP_BY_HOP:
        assert headers.RESPONSE_KINDS[name] in (headers.DOWN_DROP, headers.DOWN_TRANSFER_ENCODING)


def test_credentials_do_not_travel() -> None:
    # the client's gateway key never reaches a provider (authorization and
    # x-api-key are slots the gateway rewrites), the provider's account headers
    # never reach the client
    for name in (b"x-fastgate-key", b"api-key", b"cookie", b"proxy-authorization"):
        assert name in headers.DROP_UPSTREAM
    for name in (b"authorization", b"x-api-key", b"x-goog-api-key"):
        assert name in headers.REQUEST_SLOTS
    for name in (b"openai-organization", b"openai-project", b"server"):
        assert headers.RESPONSE_KINDS[name] == headers.DOWN_DROP


def test_names_are_lower_case_bytes() -> None:
    for name in [*headers.DROP_UPSTREAM, *headers.REQUEST_SLOTS, *headers.RESPONSE_KINDS]:
        assert isinstance(name, bytes) and name == name.lower()


def test_protocol_names_are_re_exported() -> None:
    assert (gw_protocols.OPENAI, gw_protocols.ANTHROPIC, gw_protocols.GEMINI) == (
        protocols.OPENAI,
        protocols.ANTHROPIC,
        protocols.GEMINI,
    )
    assert protocols.INGRESS_PROTOCOLS == ("openai", "anthropic", "gemini")
