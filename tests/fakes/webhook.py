"""A webhook receiver: the operator's endpoint fastgate posts its events to.

An aiohttp server on 127.0.0.1 (port 0) in a thread of its own. Every POST is
recorded (headers, raw body, parsed JSON, arrival time). What it answers is
decided per request: the next entry queued with `script(...)` (an HTTP status,
or `HANG` to hold the request until the receiver stops), else `status`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

HANG = "hang"


@dataclass
class Delivery:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float
    answered: int | str  # the status answered, or HANG

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self._script: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._got: list[Delivery] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.run_until_complete(self._astart())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            answer: int | str = self._script.popleft() if self._script else self.status
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._got.append(Delivery(headers, body, time.monotonic(), answer))
        if answer == HANG:
            assert self._stopping is not None
            await self._stopping.wait()
            return web.Response(status=503)
        return web.Response(status=int(answer), text="ok")

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def _astop() -> None:
            assert self._stopping is not None and self._runner is not None
            self._stopping.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_astop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    # -- control and inspection ------------------------------------------------------------

    def script(self, *answers: int | str) -> None:
        with self._lock:
            self._script.extend(answers)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._got)

    def events(self, event: str | None = None, answered_ok: bool = True) -> list[dict[str, Any]]:
        """The bodies received (of `event`), those answered 2xx only by default."""
        out = []
        for d in self.deliveries:
            if answered_ok and not (isinstance(d.answered, int) and 200 <= d.answered < 300):
                continue
            body = d.json
            if event is None or body.get("event") == event:
                out.append(body)
        return out

    def wait_for(self, event: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `count` events of that name arrived (2xx); return them all."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.events(event)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)
