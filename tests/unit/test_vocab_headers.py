"""Header name sets (`fastgate.vocab.headers`) and protocol names, and that http/ uses them."""

from __future__ import annotations

from fastgate.gateway import protocols as gw_protocols
from fastgate.http import head, upstream
from fastgate.vocab import headers, protocols


def test_http_uses_the_vocabulary_sets() -> None:
    assert head.DROP_UPSTREAM is headers.DROP_UPSTREAM
    assert head.SPECIAL is headers.REQUEST_SLOTS
    assert upstream._DOWN is headers.RESPONSE_KINDS


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
