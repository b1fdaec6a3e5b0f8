"""Fake IO for in-process protocol tests: a real App, fake transports, no sockets.

In the style of uvicorn's `tests/protocols/test_http.py` (MockTransport,
MockLoop): the gateway's own `ClientProtocol` and `UpstreamProtocol` are driven
by calling their asyncio callbacks directly, so a test decides exactly which
bytes arrive in which read, and sees exactly which bytes were written, on both
sides.

The surface this kit touches in fastgate is kept in ONE place, `make_app` and
`connect_client` below (plus `UpstreamProtocol`'s callbacks, reached only
through the factory the pool hands to `create_connection`):

- `App(cfg, snapshot, loop, sink)`, `ClientProtocol(app)`;
- `ClientProtocol.connection_made/data_received/eof_received/connection_lost`;
- `UpstreamProtocol.connection_made/data_received/eof_received/connection_lost`.

`FakeLoop` is what the App gets as its loop: a settable clock, `call_soon` /
`call_later` handles that the test runs (`run_ready`, `advance`), and
`create_task`, which runs the pool's connection-opening coroutine on a private
real asyncio loop (so `asyncio.timeout` and cancellation behave as in
production) whose `create_connection` is ours: it builds the protocol from the
factory and connects it to a `FakeTransport`. Every request the gateway writes
upstream is queued in `FakeLoop.requests` for the test to answer.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastgate.vocab.record import record_dict

CLIENT_PEER = ("203.0.113.7", 50123)

# --------------------------------------------------------------------------- the loop


class FakeHandle:
    """What call_soon / call_later return: cancellable, run by the test."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...], when: float) -> None:
        self.callback = callback
        self.args = args
        self.when = when
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        if not self.cancelled:
            self.cancelled = True  # a handle runs once
            self.callback(*self.args)


_task_loop: asyncio.AbstractEventLoop | None = None


def _real_loop() -> asyncio.AbstractEventLoop:
    """One private asyncio loop that runs the coroutines the code under test starts."""
    global _task_loop
    if _task_loop is None or _task_loop.is_closed():
        _task_loop = asyncio.new_event_loop()
        atexit.register(_task_loop.close)
    return _task_loop


class FakeLoop:
    """Enough of an event loop for App, ClientProtocol, UpstreamProtocol and Pool."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.ready: deque[FakeHandle] = deque()
        self.timers: list[FakeHandle] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.upstreams: list[FakeTransport] = []  # every connection opened, in order
        self.requests: deque[tuple[FakeTransport, bytes]] = deque()  # written upstream
        self.refuse: set[tuple[str, int]] = set()  # (host, port) that refuse connections

    # -- the loop API the code under test calls ------------------------------------

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[..., Any], *args: Any, **_: Any) -> FakeHandle:
        handle = FakeHandle(callback, args, self.now)
        self.ready.append(handle)
        return handle

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any, **_: Any
    ) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def call_at(
        self, when: float, callback: Callable[..., Any], *args: Any, **_: Any
    ) -> FakeHandle:
        handle = FakeHandle(callback, args, when)
        self.timers.append(handle)
        return handle

    def create_task(self, coro: Any, **_: Any) -> asyncio.Task[Any]:
        task = _real_loop().create_task(coro)
        self.tasks.append(task)
        return task

    async def create_connection(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, **kw: Any
    ) -> tuple[FakeTransport, asyncio.Protocol]:
        if (host, port) in self.refuse:
            raise ConnectionRefusedError(111, f"fake: {host}:{port} refuses connections")
        protocol = factory()
        transport = FakeTransport(self, protocol, peer=(host, port), upstream=True)
        transport.tls = "ssl" in kw
        protocol.connection_made(transport)
        self.upstreams.append(transport)
        return transport, protocol

    # -- the test's side -----------------------------------------------------------------

    def run_ready(self) -> None:
        """Run ready callbacks and started tasks until nothing is left to run."""
        while True:
            if self.ready:
                self.ready.popleft().run()
                continue
            pending = [t for t in self.tasks if not t.done()]
            if pending:
                _real_loop().run_until_complete(asyncio.wait(pending))
                continue
            for t in self.tasks:  # retrieve outcomes so asyncio logs nothing
                if not t.cancelled():
                    t.exception()
            self.tasks.clear()
            return

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer that falls due (and what they start)."""
        self.now += seconds
        self.run_ready()
        while True:
            due = [h for h in self.timers if not h.cancelled and h.when <= self.now]
            if not due:
                break
            for h in sorted(due, key=lambda h: h.when):
                h.run()
            self.run_ready()
        self.timers = [h for h in self.timers if not h.cancelled]

    def next_request(self) -> tuple[FakeTransport, bytes]:
        assert self.requests, "the gateway wrote no (further) request upstream"
        return self.requests.popleft()


# --------------------------------------------------------------------------- transports


class FakeTransport:
    """A transport that records every call; `connection_lost` follows a close soon after,
    as with asyncio's transports."""

    def __init__(
        self, loop: FakeLoop, protocol: Any, *, peer: tuple[str, int], upstream: bool = False
    ) -> None:
        self.loop = loop
        self.protocol = protocol
        self.peer = peer
        self.upstream = upstream
        self.tls = False
        self.writes: list[bytes] = []
        self.events: list[tuple[Any, ...]] = []  # every call, in order
        self.closing = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.limits: tuple[int, int] | None = None
        self.lost = False

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    # -- the transport API ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        data = bytes(data)
        self.events.append(("write", data))
        if self.closing:
            return  # asyncio drops (and logs) writes after close
        self.writes.append(data)
        if self.upstream:
            self.loop.requests.append((self, data))

    def writelines(self, items: Any) -> None:
        self.write(b"".join(items))

    def close(self) -> None:
        self.events.append(("close",))
        self._shut()

    def abort(self) -> None:
        self.events.append(("abort",))
        self.aborted = True
        self._shut()

    def _shut(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self._lost, None)

    def _lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.events.append(("write_eof",))
        self.eof_written = True

    def pause_reading(self) -> None:
        self.events.append(("pause_reading",))
        self.reading = False

    def resume_reading(self) -> None:
        self.events.append(("resume_reading",))
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.events.append(("set_write_buffer_limits", high, low))
        self.limits = (high or 0, low or 0)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        self.events.append(("get_extra_info", name))
        if name == "peername":
            return self.peer
        return default

    # -- the peer's side (the test) ---------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """The peer sends `data` (one read). False, sending nothing, once we closed."""
        if self.closing:
            return False
        self.protocol.data_received(data)
        self.loop.run_ready()
        return True

    def peer_close(self) -> None:
        """The peer closes its side: eof_received, then (unless kept half-open) the end."""
        if self.closing:
            self.loop.run_ready()
            return
        keep_open = self.protocol.eof_received()
        if not keep_open:
            self._shut()
        self.loop.run_ready()


# --------------------------------------------------------------------------- sink


class MemorySink:
    """The usage sink: collects appended records (dicts today, tuples soon)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, record: Any) -> None:
        self.records.append(record)

    def dicts(self) -> list[dict[str, Any]]:
        return [record_dict(r) for r in self.records]


# --------------------------------------------------------------------------- the one place fastgate is built


@dataclass
class Rig:
    app: Any
    loop: FakeLoop
    sink: MemorySink
    clients: list[FakeTransport] = field(default_factory=list)


_configs: dict[tuple[str, str], Any] = {}


def load_config(config_toml: str, tmp_path: Path) -> Any:
    """The TOML text written to tmp_path and loaded as the server would (cached)."""
    from fastgate.config import load_config as _load

    key = (config_toml, str(tmp_path))
    cfg = _configs.get(key)
    if cfg is None:
        tomllib.loads(config_toml)  # a TOML mistake in a test shows here, plainly
        path = tmp_path / "fastgate.toml"
        path.write_text(config_toml)
        cfg = _configs[key] = _load(path)
    return cfg


def make_app(config_toml: str, tmp_path: Path) -> Rig:
    """A real App (config, snapshot, pool, breakers) on a FakeLoop with a MemorySink."""
    from fastgate.app import App
    from fastgate.snapshot import build_snapshot

    cfg = load_config(config_toml, tmp_path)
    loop = FakeLoop()
    sink = MemorySink()
    app = App(cfg, build_snapshot(cfg), loop, sink)  # type: ignore[arg-type]
    return Rig(app, loop, sink)


def connect_client(rig: Rig, peer: tuple[str, int] = CLIENT_PEER) -> FakeTransport:
    """A new downstream connection to the rig's App; feed it with `.feed(bytes)`."""
    from fastgate.http.client import ClientProtocol

    protocol = ClientProtocol(rig.app)
    transport = FakeTransport(rig.loop, protocol, peer=peer)
    protocol.connection_made(transport)
    rig.loop.run_ready()
    rig.clients.append(transport)
    return transport


# --------------------------------------------------------------------------- normalising and parsing output

_GATEWAY_ID = re.compile(rb"fg-[0-9a-f]{16}-[0-9a-f]+")


def normalise(raw: bytes) -> bytes:
    """The ONE place nondeterministic output is masked: request ids the gateway makes up
    itself (only when the client sent no x-request-id, e.g. a 431 answered before the
    head is read) become `fg-<id>`. Everything else is compared byte for byte."""
    return _GATEWAY_ID.sub(b"fg-<id>", raw)


class FramingError(AssertionError):
    pass


def split_responses(raw: bytes, *, eof: bool = True) -> list[tuple[bytes, bytes]]:
    """Parse a stream of HTTP/1.1 responses into (head, decoded body) pairs.

    The head is kept as bytes (status line and headers, up to and including the
    blank line); the body is decoded from its framing (content-length, chunked,
    or until EOF) so that two outputs can be compared independently of where the
    gateway's chunk boundaries fell. Framing mistakes raise FramingError.
    """
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            raise FramingError(f"incomplete response head at byte {pos}: {raw[pos:]!r}")
        head = raw[pos : end + 4]
        pos = end + 4
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = [ln.split(b":", 1) for ln in lines[1:] if ln]
        names = [h[0].strip().lower() for h in headers]
        values = {h[0].strip().lower(): h[1].strip() for h in headers}
        if names.count(b"content-length") + names.count(b"transfer-encoding") > 1:
            raise FramingError(f"more than one framing header: {head!r}")
        if 100 <= status < 200 or status in (204, 304):
            out.append((head, b""))
        elif b"content-length" in values:
            n = int(values[b"content-length"])
            if pos + n > len(raw):
                raise FramingError(f"body shorter than content-length {n}")
            out.append((head, raw[pos : pos + n]))
            pos += n
        elif values.get(b"transfer-encoding") == b"chunked":
            body = bytearray()
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    raise FramingError("incomplete chunk size line")
                size = int(raw[pos:eol], 16)
                pos = eol + 2
                if size == 0:
                    if raw[pos : pos + 2] != b"\r\n":
                        raise FramingError("chunked body not terminated by CRLF after 0")
                    pos += 2
                    break
                if raw[pos + size : pos + size + 2] != b"\r\n":
                    raise FramingError(f"chunk of {size} bytes not followed by CRLF")
                body += raw[pos : pos + size]
                pos += size + 2
            out.append((head, bytes(body)))
        else:
            if not eof:
                raise FramingError("close-delimited body but the connection stayed open")
            out.append((head, raw[pos:]))
            pos = len(raw)
    return out


def chunked(*chunks: bytes) -> bytes:
    """A chunked body from its chunks, with the terminating zero chunk."""
    return b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
