"""One instance, one picture: what the workers of `--workers N` tell each other.

The supervisor makes a private run directory (mode 0700) before it forks and
gives every worker its path, the number of workers and the worker's slot index.
Each worker binds two Unix sockets there (a respawned worker re-binds its
slot's):

- `w{i}.sock` (stream): one request line, one JSON answer, then close.
  `report` -> the worker's metrics report (metrics.Metrics.report; written to
  `w{i}.json` first), `status` -> its status (server.Worker.status), `breakers`
  -> its breakers that are not closed.
- `w{i}.brk` (datagram): breaker news. A worker whose breaker for (channel,
  model) opens or closes sends one datagram to each sibling (a non-blocking
  `sendto`, before the client gets its answer; lost if a sibling is gone or its
  buffer is full) and the sibling applies it (`Breakers.apply`). Nothing is sent
  while no breaker changes state, so the data plane pays nothing for it.

A scrape of `/metrics` on any worker asks every sibling for its report (all at
once, `ASK_TIMEOUT` each) and renders the instance: counters summed over every
worker slot, gauges summed over the workers that answered. A slot whose worker
does not answer (dead, being respawned, its loop blocked) counts with the last
report it published (`w{i}.json`), and `fastgate_workers_reporting` says how
many answered. Every report is written to its file before it is sent, and a
respawned worker starts its counters from its slot's file: a counter never goes
down between two scrapes (what a dying worker counted after the last scrape is
lost, never counted twice). The admin `status` gathers `status` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from fastgate.gateway.breaker import Breaker, Breakers
from fastgate.metrics import Metrics, render_reports

log = logging.getLogger("fastgate.siblings")

ASK_TIMEOUT = 0.5  # seconds a scrape waits for a sibling
METRICS_TYPE = b"text/plain; version=0.0.4"
OPS = (b"report", b"status", b"breakers")


class Siblings:
    """A worker's link to its siblings (one per worker process, made by server.Worker)."""

    def __init__(
        self,
        run_dir: str,
        index: int,
        count: int,
        app: Any,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.dir = Path(run_dir)
        self.index = index
        self.count = count
        self.app = app
        self.status = status
        self.siblings = [i for i in range(count) if i != index]
        self._server: asyncio.AbstractServer | None = None
        self._inbox: socket.socket | None = None
        self._outbox: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def path(self, index: int, kind: str) -> str:
        return str(self.dir / f"w{index}.{kind}")

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Continue the slot's counters, bind both sockets, take over the
        siblings' open breakers, and send this worker's breaker changes on."""
        app = self.app
        last = self._published(self.index)
        if last is not None:
            app.metrics.seed(last)
        sock_path = self.path(self.index, "sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        self._server = await asyncio.start_unix_server(self._serve, sock_path)
        brk = self.path(self.index, "brk")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(brk)
        inbox = self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(brk)
        inbox.setblocking(False)
        app.loop.add_reader(inbox.fileno(), self._on_news)
        out = self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        out.setblocking(False)
        breakers: Breakers = app.breakers
        for answer in await asyncio.gather(*(self._ask(i, b"breakers") for i in self.siblings)):
            for channel, model, state, opened_at, failures in answer or ():
                breakers.apply(channel, model, state, opened_at, failures)
        breakers.on_change = self.breaker_changed

    async def close(self) -> None:
        app = self.app
        app.breakers.on_change = None
        if self._inbox is not None:
            app.loop.remove_reader(self._inbox.fileno())
            self._inbox.close()
            self._inbox = None
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()

    # -- answering siblings -----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            op = (await asyncio.wait_for(reader.readline(), ASK_TIMEOUT)).strip()
            if op == b"report":
                body = orjson.dumps(self.report())
            elif op == b"status":
                body = orjson.dumps(self.status())
            elif op == b"breakers":
                body = orjson.dumps(self.app.breakers.export())
            else:
                body = b"null"
            writer.write(body)
            await writer.drain()
        except Exception as exc:  # a sibling gave up, or a bug: never the loop
            log.debug("sibling request failed: %r", exc)
        finally:
            writer.close()

    def report(self) -> dict[str, Any]:
        """This worker's metrics report, written to its slot's file before it is
        shown to anyone (the floor a respawned worker starts from)."""
        app = self.app
        metrics: Metrics = app.metrics
        rep = metrics.report(app)
        rep["index"], rep["pid"] = self.index, app.pid
        data = orjson.dumps(rep)
        tmp = self.path(self.index, "json.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path(self.index, "json"))
        except OSError as exc:
            log.warning("cannot publish worker %d's counters: %s", self.index, exc)
        return rep

    def _published(self, index: int) -> dict[str, Any] | None:
        try:
            data = Path(self.path(index, "json")).read_bytes()
            rep = orjson.loads(data)
        except (OSError, orjson.JSONDecodeError):
            return None
        return rep if isinstance(rep, dict) else None

    # -- asking siblings -------------------------------------------------------------

    async def _ask(self, index: int, op: bytes) -> Any:
        """A sibling's answer to `op`, or None (not there, too slow, garbled)."""
        writer = None
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(self.path(index, "sock"))
                writer.write(op + b"\n")
                data = await reader.read()
            return orjson.loads(data)
        except (OSError, TimeoutError, orjson.JSONDecodeError):
            return None
        finally:
            if writer is not None:
                writer.close()

    async def gather(self, op: bytes) -> list[tuple[int, Any]]:
        """(index, answer or None) for every sibling, asked at once."""
        answers = await asyncio.gather(*(self._ask(i, op) for i in self.siblings))
        return list(zip(self.siblings, answers, strict=True))

    async def scrape(self) -> bytes:
        """The whole instance's Prometheus text."""
        own = self.report()
        live, stale = [own], []
        for index, rep in await self.gather(b"report"):
            if isinstance(rep, dict):
                live.append(rep)
            else:
                last = self._published(index)
                if last is not None:
                    stale.append(last)
        live.sort(key=lambda rep: rep["index"])
        workers = [(rep["index"], rep["pid"]) for rep in live]
        return render_reports(live, stale, workers, self.count)

    def metrics(self, answer: Callable[[int, bytes, bytes], None]) -> None:
        """Answer a `/metrics` GET (the exchange's `answer`) once the siblings replied."""
        self._spawn(self.scrape(), lambda body: answer(200, body, METRICS_TYPE))

    def _spawn(self, coro: Awaitable[Any], then: Callable[[Any], None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.error("gathering the workers' numbers failed", exc_info=exc)
                then(render_reports([self.app.metrics.report(self.app)]))
                return
            then(t.result())

        task.add_done_callback(done)

    # -- breakers ---------------------------------------------------------------------

    def breaker_changed(self, b: Breaker) -> None:
        """Tell every sibling (one datagram each, no waiting) that `b` opened or closed."""
        out = self._outbox
        if out is None:
            return
        msg = orjson.dumps([b.key[0], b.key[1], b.state, b.opened_at, b.failures])
        for i in self.siblings:
            try:
                out.sendto(msg, self.path(i, "brk"))
            except OSError as exc:  # gone, not yet bound, or its buffer is full
                log.debug("breaker news to worker %d lost: %r", i, exc)

    def _on_news(self) -> None:
        inbox = self._inbox
        breakers = self.app.breakers
        while inbox is not None:
            try:
                data = inbox.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                channel, model, state, opened_at, failures = orjson.loads(data)
                breakers.apply(channel, model, state, float(opened_at), int(failures))
            except Exception as exc:
                log.warning("unreadable breaker news from a sibling: %r", exc)
