"""The least a Python reverse proxy on uvloop can do per request: a floor, not a gateway.

    python bench/floor_proxy.py LISTEN_PORT:UPSTREAM_PORT [...] --key KEY

`bench/run.py --only direct,nginx,pyfloor,fastgate` runs it as the `pyfloor`
target, in front of the same stub, under the same wrk load (`--work-us N` adds N µs of busy Python per request, to see
what being the slower side costs the kernel). Per request it does
what nginx's proxy does and nothing else: find the end of the request head and its
Content-Length, rewrite `Authorization`, write the request to an idle keep-alive
upstream connection, and forward the answer's bytes to the client as they come
(the stub answers with Content-Length, the stream included), then put the upstream
connection back. No routing, no key lookup, no usage, no record, no error paths
beyond closing. The same 2 reads + 2 writes per request that nginx and fastgate
make, each through a uvloop Protocol callback.

What it answers: how much CPU per request the platform itself (CPython + uvloop +
the kernel's loopback TCP) costs before any gateway work. fastgate's figure minus
this one is what the gateway's own logic costs. It is a benchmark tool: it assumes
well-formed HTTP/1.1 from wrk and from the stub, and is not part of fastgate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections import deque

import uvloop

_clock = time.perf_counter  # vDSO, no system call (--work-us spins on it)
_AUTH = b"\r\nAuthorization: Bearer "
_CL = b"\r\nContent-Length: "


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the stub; forwards its bytes to the client."""

    __slots__ = ("client", "left", "pool", "transport")

    def __init__(self, pool: deque) -> None:
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.pool = pool
        self.left = -1  # bytes of the answer still to come (-1: head not seen)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        left = self.left
        if left < 0:  # the answer's head is in this first segment (the stub's are small)
            end = data.find(b"\r\n\r\n")
            i = data.find(_CL, 0, end) + len(_CL)
            left = int(data[i : data.find(b"\r", i)]) - (len(data) - end - 4)
        else:
            left -= len(data)
        if client is not None:
            client.transport.write(data)
        if left <= 0:
            self.left = -1
            self.client = None
            self.pool.append(self)
            if client is not None:
                client.busy = False
                if client.pending:
                    client.data_received(b"")
        else:
            self.left = left

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    """One client connection: requests in, each to an idle upstream connection."""

    __slots__ = ("buf", "busy", "pending", "proxy", "transport")

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # an answer is on its way (requests are served in order)
        self.pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.busy:  # pipelined: wait for the answer in flight
            self.buf, self.pending = buf, True
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        i = buf.find(_CL, 0, end)
        n = int(buf[i + len(_CL) : buf.find(b"\r", i + len(_CL))]) if i >= 0 else 0
        total = end + 4 + n
        if len(buf) < total:
            self.buf = buf
            return
        self.buf, self.pending = buf[total:], False
        a = buf.find(_AUTH, 0, end) + len(_AUTH)
        request = buf[:a] + self.proxy.key + buf[buf.find(b"\r", a) : total]
        self.busy = True
        work = self.proxy.work
        if work:  # --work-us: stand-in for a gateway's own per-request CPU
            end_at = _clock() + work
            while _clock() < end_at:
                pass
        pool = self.proxy.pool
        if pool:
            up = pool.pop()
            up.client = self
            up.transport.write(request)
        else:
            task = asyncio.ensure_future(self.proxy.connect(self, request))
            self.proxy.connecting.add(task)  # held until done (the loop keeps weak refs)
            task.add_done_callback(self.proxy.connecting.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Proxy:
    def __init__(self, upstream_port: int, key: bytes, work_us: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.key = key
        self.work = work_us / 1e6
        self.pool: deque[Upstream] = deque()
        self.connecting: set[asyncio.Future] = set()

    async def connect(self, client: Client, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(
            lambda: Upstream(self.pool), "127.0.0.1", self.upstream_port
        )
        up.client = client
        up.transport.write(request)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("routes", nargs="+", help="LISTEN_PORT:UPSTREAM_PORT")
    ap.add_argument("--key", required=True, help="the upstream's bearer key")
    ap.add_argument("--work-us", type=float, default=0.0, help="busy CPU per request (µs)")
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    for route in args.routes:
        listen, upstream = (int(p) for p in route.split(":"))
        proxy = Proxy(upstream, args.key.encode(), args.work_us)
        await loop.create_server(lambda p=proxy: Client(p), "127.0.0.1", listen, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor proxy {os.getpid()} ready", flush=True)
    await stop.wait()


if __name__ == "__main__":
    uvloop.run(main())
