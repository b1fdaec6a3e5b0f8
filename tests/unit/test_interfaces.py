"""The transport's interfaces (http/interfaces.py) are what both paths implement.

`UpstreamProtocol` calls an `UpstreamConsumer`; `ClientProtocol` calls a
`ClientExchange`; both exchanges call a `ClientSink`. The fast path, the general
exchange and the client protocol must keep every member, with the same
parameters, so a change to one side is a visible test change here.
"""

from __future__ import annotations

import inspect

import pytest

from fastgate.gateway.fast import FastExchange
from fastgate.gateway.handler import Exchange
from fastgate.http.client import ClientProtocol
from fastgate.http.interfaces import ClientExchange, ClientSink, UpstreamConsumer


def members(proto: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(proto).items()
        if not name.startswith("_") and callable(fn)
    }


@pytest.mark.parametrize("impl", [FastExchange, Exchange], ids=["fast", "general"])
@pytest.mark.parametrize("proto", [UpstreamConsumer, ClientExchange])
def test_exchanges_implement_the_transport_interfaces(impl: type, proto: type) -> None:
    wanted = members(proto)
    assert wanted, proto
    for name, sig in wanted.items():
        got = getattr(impl, name, None)
        assert callable(got), f"{impl.__name__} lacks {proto.__name__}.{name}"
        assert list(inspect.signature(got).parameters) == list(sig.parameters), name


def test_client_protocol_is_the_client_sink() -> None:
    for name, sig in members(ClientSink).items():
        got = getattr(ClientProtocol, name)
        assert list(inspect.signature(got).parameters) == list(sig.parameters), name
    for attr in ("gate", "client_ip", "exchange"):
        assert attr in ClientProtocol.__slots__
