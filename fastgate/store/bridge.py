"""The store's thread bridge: one background thread running its own event loop.

Why: the data plane must never await a database. Blocking drivers (sqlite3) and
asyncpg alike run on this thread's loop, and callers elsewhere use one of three
bridges:

- `submit(coro) -> concurrent.futures.Future`: from any thread, never blocks.
- `await call(coro)`: from another event loop (data plane, admin API); the
  awaiting loop is free while the store works.
- `run(coro, timeout=None)`: blocking, for threads and the CLI (never from the
  bridge's own thread). `sync.<method>(...)` is the same as `run(<method>(...))`.

`ThreadBridge` knows nothing about databases: `Store` (base.py) adds open,
migrate and close around `start_thread()` / `stop_thread()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastgate.store.errors import StoreError

__all__ = ["ThreadBridge"]

T = TypeVar("T")


class _SyncFacade:
    """`bridge.sync.list_tokens()` == `bridge.run(bridge.list_tokens())` (for the CLI)."""

    __slots__ = ("_bridge",)

    def __init__(self, bridge: ThreadBridge) -> None:
        self._bridge = bridge

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._bridge, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._bridge.run(method(*args, **kwargs))

        call.__name__ = name
        return call


class ThreadBridge:
    """A thread with its own (uv)loop, and the ways to run coroutines on it."""

    thread_name = "fastgate-store"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise StoreError("store is not started")
        return self._loop

    @property
    def started(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_thread(self) -> None:
        """Start the thread and its loop; returns once the loop runs."""
        if self._thread is not None:
            raise StoreError("store already started")
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=main, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()

    def stop_thread(self, timeout: float) -> None:
        """Cancel what still runs on the loop, stop it and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        self._thread = None
        self._loop = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the bridge's loop from any thread; never blocks."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise StoreError("store is not started")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` from another event loop (it runs on the bridge's loop)."""
        return await asyncio.wrap_future(self.submit(coro))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the bridge's loop and wait for it (threads and CLI only).

        On timeout the operation is cancelled and TimeoutError raised.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Store.run() called on the store thread: await it instead")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"store operation timed out after {timeout} s") from None
        finally:
            # An exception's traceback holds this frame, which holds fut, which holds
            # the exception: a cycle that kept the coroutine's arguments (a batch of
            # usage records) alive until the next full gc, after every failed write.
            del fut

    @property
    def sync(self) -> Any:
        return _SyncFacade(self)
