"""A TCP proxy in front of Postgres (or any TCP service) that a test can cut.

`PgProxy(5432)` picks a free loopback port and, unless `up=False`, listens on it
and relays every connection to 127.0.0.1:5432. `cut()` closes the listener and
aborts every relayed connection (clients see resets, then refused connections:
the database is gone); `restore()` listens again on the same port;
`cut_for(seconds)` cuts now and restores in the background. `PgProxy(5432,
up=False)` reserves the port without listening (a database that is down when
the gateway starts). Runs its own event loop on a daemon thread, so it works
from synchronous and asynchronous tests alike.

Used by tests/functional/test_store_at_boot.py and bench/store_cut.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

__all__ = ["PgProxy"]


class PgProxy:
    """A cuttable TCP relay on 127.0.0.1 (see the module docs)."""

    def __init__(
        self, target_port: int = 5432, *, target_host: str = "127.0.0.1", up: bool = True
    ) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0  # connections relayed so far
        self.delay = 0.0  # seconds each chunk waits before it is relayed (a slow link)
        self.cuts = 0
        self._timer: threading.Timer | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        if up:
            self.restore()

    def url(self, pg_url: str) -> str:
        """`pg_url` (postgresql://user@127.0.0.1:5432/db) pointed at the proxy instead."""
        host, port = self.target
        return pg_url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    @property
    def is_up(self) -> bool:
        return self.server is not None

    # -- relaying -----------------------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                w.write(data)
                await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.server is None:  # accepted just before a cut
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.transport.abort()
            return
        self.accepted += 1
        self.writers |= {w, uw}
        try:
            await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
        finally:
            self.writers -= {w, uw}

    async def _start(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self._client, "127.0.0.1", self.port, reuse_address=True
            )

    async def _stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()

    # -- control ------------------------------------------------------------------------

    def restore(self) -> None:
        """Listen (again) on the same port."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._run(self._start())

    def cut(self) -> None:
        """Close the listener and abort every relayed connection."""
        self.cuts += 1
        self._run(self._stop())

    def cut_for(self, seconds: float) -> threading.Timer:
        """Cut now; restore after `seconds` (in the background). Returns the timer."""
        self.cut()
        timer = self._timer = threading.Timer(seconds, self._restore_from_timer)
        timer.daemon = True
        timer.start()
        return timer

    def _restore_from_timer(self) -> None:
        self._timer = None
        self._run(self._start())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
