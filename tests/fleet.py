"""Helpers for fleet tests: a Redis key prefix of their own, a Postgres database of
their own, a TCP relay the test can cut (a Redis that goes away and comes back),
and plain HTTP requests on fresh connections (so the kernel spreads them over
every worker)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
from typing import Any

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def redis_url(port: int = REDIS_PORT) -> str:
    return f"redis://{REDIS_HOST}:{port}/0"


def post(
    url: str, key: str, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> tuple[int, dict[str, str], bytes]:
    """One POST on a fresh connection: (status, lower-cased headers, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metric(url: str, name: str) -> float:
    """The sum of every series of metric `name` in one scrape of /metrics."""
    _, body = get(url, "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Relay:
    """A TCP relay on loopback to `target`; `cut()` closes the listener and every
    relayed connection (the service is gone), `restore()` listens again on the
    same port. `delay`: seconds each chunk toward the target waits (a slow link)."""

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.restore()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, delay: float = 0.0
    ) -> None:
        try:
            while data := await r.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                w.write(data)
                await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self.writers |= {w, uw}
        await asyncio.gather(self._pipe(r, uw, self.delay), self._pipe(ur, w))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self._run(self._start())

    def cut(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
