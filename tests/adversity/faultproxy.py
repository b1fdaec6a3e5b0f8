"""A fault-injecting TCP proxy, to put between fastgate and a fake upstream.

`FaultProxy(target_port)` listens on 127.0.0.1:0 and relays each connection it
accepts to the target. What it does to a connection is that connection's
`Fault`, scripted per accepted connection: `proxy.script(Fault(...), ...)`
queues one per connection (FIFO); a connection with none scripted gets a clean
relay. The faults act on the response direction (target -> gateway), the one
the gateway has to survive:

- `connect_delay`: wait before dialing the target (the gateway's request waits);
- `first_byte_delay`: wait before relaying the first response byte;
- `chunk_size` / `chunk_delay`: cut the response into pieces of that many
  bytes, with a pause before each piece after the first;
- `reset_at`: after that many response bytes, a RST (SO_LINGER 0) to the gateway;
- `close_at`: after that many bytes, a clean FIN (a truncated response);
- `stall_at`: after that many bytes, silence, with the connection left open,
  until the gateway hangs up;
- `corrupt_at` / `corrupt_with`: overwrite the response bytes at that offset;
- `hold`: a pause before the reset / close / stall or the corrupted byte, so
  the bytes relayed before it surely reached the gateway (and its client) first.

A position is a byte offset into the connection's response stream as the
target wrote it, HTTP head included: an int, or `At(marker, offset, nth)`,
`offset` bytes after the start of the `nth` occurrence of `marker` (`BODY` is
the end of the first head: `At(BODY, 4)` is the first body byte). The relay
holds back a marker's length of bytes until every marker is resolved, so a
position is never reached before it is known. A reset, close or stall at 0
waits for the first response bytes: "the upstream died before its head".

Every accepted connection is logged (`proxy.conns`): its fault, the request
bytes the gateway sent, the response bytes relayed, how it ended and when the
gateway hung up. The proxy runs its own asyncio loop in a daemon thread, like
the fakes in `tests/fakes/`.

`Blackhole` is the one fault a proxy cannot play, because the kernel completes
a TCP handshake before any accept: a listening socket whose accept queue is
full, so that a connect to it hangs until the caller's connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

BODY = b"\r\n\r\n"


@dataclass(frozen=True)
class At:
    """`offset` bytes after the start of the `nth` occurrence of `marker`."""

    marker: bytes
    offset: int = 0
    nth: int = 1

    def resolve(self, seen: bytes | bytearray) -> int | None:
        pos = -1
        for _ in range(self.nth):
            pos = seen.find(self.marker, pos + 1)
            if pos < 0:
                return None
        return pos + self.offset


Pos = int | At | None


@dataclass
class Fault:
    connect_delay: float = 0.0
    first_byte_delay: float = 0.0
    chunk_size: int = 0
    chunk_delay: float = 0.0
    reset_at: Pos = None
    close_at: Pos = None
    stall_at: Pos = None
    corrupt_at: Pos = None
    corrupt_with: bytes = b"\x00"
    hold: float = 0.0


@dataclass
class ConnLog:
    """One accepted connection, as the proxy saw it."""

    fault: Fault
    accepted: float  # time.monotonic()
    request: bytearray = field(default_factory=bytearray)  # what the gateway sent
    relayed: int = 0  # response bytes relayed to the gateway
    outcome: str = ""  # "relayed" | "reset" | "closed" | "stalled" | "gateway_left" | "error"
    gateway_left: float = 0.0  # time.monotonic() when the gateway hung up (0: not yet)
    done: bool = False


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """The target side of a relay: request bytes wait here until it is dialed."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pending = bytearray()

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        if self.pending:
            writer.write(bytes(self.pending))
            self.pending.clear()

    async def write(self, data: bytes) -> None:
        if self.writer is None:
            self.pending += data
        else:
            self.writer.write(data)
            await self.writer.drain()


class FaultProxy:
    """See the module docstring."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.conns: list[ConnLog] = []
        self._script: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self.port = 0
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the fault proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ the test's side

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next accepted connections, one each."""
        with self._lock:
            self._script.extend(faults)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.conns)

    def conn(self, i: int = -1) -> ConnLog:
        with self._lock:
            return self.conns[i]

    def wait_done(self, i: int = -1, timeout: float = 5.0) -> ConnLog:
        """Wait until connection `i` has ended; return its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.conns and self.conns[i].done:
                    return self.conns[i]
            time.sleep(0.01)
        raise AssertionError(f"proxy connection {i} did not end within {timeout} s")

    def drop_all(self, timeout: float = 2.0) -> None:
        """Close every open connection (both sides) and wait until they ended."""
        loop = self._loop
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._cancel_all(), loop)
        fut.result(timeout)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._astop(), loop)
        with contextlib.suppress(Exception):
            fut.result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._loop = None

    # ------------------------------------------------------------------ the loop's side

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=512)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _astop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cancel_all()

    async def _cancel_all(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _serve(
        self, gw_reader: asyncio.StreamReader, gw_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            fault = self._script.popleft() if self._script else Fault()
            log = ConnLog(fault, time.monotonic())
            self.conns.append(log)
        _nodelay(gw_writer)
        link = _Link()
        up_task = asyncio.create_task(self._pump_up(gw_reader, link, log, task))
        try:
            if fault.connect_delay:
                await asyncio.sleep(fault.connect_delay)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            _nodelay(up_writer)
            link.attach(up_writer)
            log.outcome = await self._pump_down(up_reader, gw_writer, fault, log)
        except asyncio.CancelledError:
            if not log.outcome:
                log.outcome = "gateway_left" if log.gateway_left else "cancelled"
        except OSError:
            log.outcome = log.outcome or "error"
        finally:
            up_task.cancel()
            if link.writer is not None:
                link.writer.transport.abort()  # the fake sees its client gone at once
            if log.outcome not in ("reset", "closed"):
                gw_writer.transport.close()
            log.done = True
            self._tasks.discard(task)

    async def _pump_up(
        self,
        gw_reader: asyncio.StreamReader,
        link: _Link,
        log: ConnLog,
        down: asyncio.Task[None],
    ) -> None:
        """Gateway -> target, untouched (held while the target is not dialed yet).
        When the gateway hangs up, the relay ends."""
        try:
            while data := await gw_reader.read(65536):
                log.request += data
                await link.write(data)
        except OSError:
            pass
        log.gateway_left = time.monotonic()
        if not down.done():
            down.cancel()

    async def _pump_down(
        self,
        up_reader: asyncio.StreamReader,
        gw_writer: asyncio.StreamWriter,
        fault: Fault,
        log: ConnLog,
    ) -> str:
        """Target -> gateway, with the connection's fault; returns how it ended."""
        seen = bytearray()
        sent = 0
        eof = False
        first = True
        positions: dict[str, Pos] = {
            "reset": fault.reset_at,
            "close": fault.close_at,
            "stall": fault.stall_at,
            "corrupt": fault.corrupt_at,
        }
        resolved: dict[str, int] = {}
        corrupted = False
        while True:
            holdback = 0
            for name, pos in positions.items():
                if name in resolved or pos is None:
                    continue
                if isinstance(pos, int):
                    resolved[name] = pos
                    continue
                p = pos.resolve(seen)
                if p is None:
                    holdback = max(holdback, len(pos.marker) - 1)
                else:
                    resolved[name] = p
            c = resolved.get("corrupt")
            if c is not None and not corrupted and c + len(fault.corrupt_with) <= len(seen):
                if c < sent:
                    raise AssertionError(f"corrupt_at={c}: byte already relayed")
                seen[c : c + len(fault.corrupt_with)] = fault.corrupt_with
                corrupted = True
            limit = len(seen) if eof else len(seen) - holdback
            if c is not None and not corrupted:
                limit = min(limit, c)
            stops = [(resolved[n], n) for n in ("reset", "close", "stall") if n in resolved]
            stop = min(stops) if stops else None
            if stop is not None:
                limit = min(limit, stop[0])
            while sent < limit:
                n = limit - sent
                if fault.chunk_size:
                    n = min(n, fault.chunk_size)
                if c is not None and sent < c < sent + n:
                    n = c - sent  # the corrupted byte starts a piece (see `hold`)
                delay = fault.first_byte_delay if first else fault.chunk_delay
                if sent == c and fault.hold:
                    delay = max(delay, fault.hold)
                if delay:
                    await asyncio.sleep(delay)
                gw_writer.write(bytes(seen[sent : sent + n]))
                await gw_writer.drain()
                sent += n
                log.relayed = sent
                first = False
            if stop is not None and sent >= stop[0] and (seen or eof):
                if fault.hold:
                    await asyncio.sleep(fault.hold)
                if stop[1] == "reset":
                    _reset(gw_writer)
                    return "reset"
                if stop[1] == "close":
                    gw_writer.transport.close()
                    return "closed"
                log.outcome = "stalled"
                await asyncio.Event().wait()  # until the gateway hangs up (cancelled)
            if eof:
                return "relayed"
            data = await up_reader.read(65536)
            if not data:
                eof = True
            seen += data


class Blackhole:
    """A TCP port that never completes a handshake: its listening socket has a
    backlog of 0 and one connection already queued that nobody accepts, so the
    kernel drops every further SYN and a connect hangs until the caller gives up."""

    def __init__(self) -> None:
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fill: list[socket.socket] = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", self.port))
            self._fill.append(s)
        time.sleep(0.05)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", self.port))
        except TimeoutError:
            pass
        else:
            raise RuntimeError("the blackhole accepted a connection: the kernel does not drop SYNs")
        finally:
            probe.close()

    def close(self) -> None:
        for s in self._fill:
            s.close()
        self.lsock.close()
