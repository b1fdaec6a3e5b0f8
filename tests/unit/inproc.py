"""A real App, ClientProtocol and UpstreamProtocol wired to fake transports.

No sockets: the test writes request bytes into the client protocol and response
bytes into an upstream protocol, and reads what fastgate wrote to each fake
transport. Only the transports (C code in production) are fakes; every part of
fastgate is the real one. Upstream connections are opened through the real
pool with a fake `loop.create_connection`.
"""

from __future__ import annotations

import tomllib
from collections import deque
from typing import Any

import uvloop

from fastgate.app import App
from fastgate.config import parse_config
from fastgate.gateway.handler import Exchange
from fastgate.http.client import ClientProtocol
from fastgate.snapshot import build_snapshot
from fastgate.vocab.record import record_dict


class FakeTransport:
    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 5000)) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int = 0, low: int = 0) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def data(self) -> bytes:
        return b"".join(self.written)


class ListSink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, record: Any) -> None:
        self.records.append(record)

    def dicts(self) -> list[dict[str, Any]]:
        return [record_dict(r) for r in self.records]


class Wired:
    """One App with one client connection; upstream connections made on demand."""

    def __init__(self, config_toml: str, *, general_only: bool = False) -> None:
        cfg = parse_config(tomllib.loads(config_toml))
        self.loop = uvloop.new_event_loop()
        self.sink = ListSink()
        self.app = App(cfg, build_snapshot(cfg), self.loop, self.sink)
        if general_only:  # every request through the general exchange
            app = self.app
            app.dispatch = lambda client, head: Exchange(app, client, head).start()
        self.upstreams: deque[tuple[Any, FakeTransport]] = deque()  # opened, in order
        self.loop.create_connection = self._create_connection  # type: ignore[method-assign]
        self.client = ClientProtocol(self.app)
        self.client_tr = FakeTransport()
        self.client.connection_made(self.client_tr)

    async def _create_connection(self, factory: Any, host: str, port: int, **kw: Any) -> Any:
        proto = factory()
        tr = FakeTransport((host, port))
        proto.connection_made(tr)
        self.upstreams.append((proto, tr))
        return tr, proto

    def run(self) -> None:
        """Run what the loop has scheduled (connection opening) until idle."""
        for _ in range(5):
            self.loop.run_until_complete(_yield())

    def send(self, data: bytes) -> None:
        self.client.data_received(data)
        self.run()

    def tick(self) -> None:
        """One turn of the loop: what the callbacks queued is written (http/cork.py)."""
        self.loop.run_until_complete(_yield())

    def close(self) -> None:
        self.app.pool.close_all()
        self.loop.close()


async def _yield() -> None:
    import asyncio

    await asyncio.sleep(0)
