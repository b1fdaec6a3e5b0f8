"""Webhooks (`[webhooks]`): events POSTed to an operator's URL, off the hot path.

Events: `channel_down` (a breaker opened, or an upstream's rate limit put a
channel in cooldown), `channel_up` (a breaker closed again), `unpriced_model`
(the first request served for a model without a price) and `budget` (a key's or
group's spend reached 80 % / 100 % of its budget in the current period).

The data plane only calls the hooks below on a *transition* (never per ordinary
request); a hook builds the event's dict and does one `put_nowait` on a bounded
asyncio queue (full: the event is dropped and counted). One background task per
worker takes the events in order and, for each:

1. dedupe: an event that must be told once per fleet (`unpriced_model`, `budget`,
   a cooldown's `channel_down`) takes a Redis key first (`SET NX` with a TTL,
   `[ratelimit] backend = "redis"`); a key already there means another worker or
   instance told it. Without Redis (or while it is unreachable) the worker's own
   memory is the only dedupe.
2. rate limit: a token bucket of `max_per_minute / workers` tokens, refilled at
   that many a minute; no token: dropped and counted.
3. delivery: one aiohttp ClientSession, JSON body, HMAC-SHA256 signature of the
   raw body (`x-fastgate-signature: sha256=<hex>`) when `secret_env` is set; a
   connection error, a timeout or an HTTP 408/429/5xx is retried after 0.5 s,
   1 s, 2 s ... (at most 10 s) up to `max_attempts` attempts; any other answer
   ends it (2xx: sent; else failed).

Metrics: `fastgate_webhooks_sent_total{event}`, `_failed_total{event}` and
`_dropped_total{event,reason}` (reason: "queue", "rate", "shutdown").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson

from fastgate.gateway.breaker import CLOSED, OPEN, Breaker
from fastgate.metrics import declare
from fastgate.vocab.periods import period_bounds

log = logging.getLogger("fastgate.webhooks")

SENT = declare("fastgate_webhooks_sent_total", "Webhook events delivered (a 2xx answer).")
FAILED = declare(
    "fastgate_webhooks_failed_total",
    "Webhook events given up (every attempt failed, or a 4xx answer).",
)
DROPPED = declare(
    "fastgate_webhooks_dropped_total",
    "Webhook events not posted: queue full, over max_per_minute, or left at shutdown.",
)

BACKOFF = 0.5  # seconds before the first retry; doubles, up to MAX_BACKOFF
MAX_BACKOFF = 10.0
UNPRICED_TTL = 86400  # seconds an unpriced model stays announced fleet-wide (Redis)
SHUTDOWN_GRACE = 2.0  # seconds the queue may still be delivered at shutdown
RETRY_STATUSES = (408, 429)  # and every 5xx


class Webhooks:
    """One worker's webhook sender: the hooks the data plane calls, the queue and
    the background task that posts."""

    def __init__(self, cfg: Any, metrics: Any, fleet: Any = None, workers: int = 1) -> None:
        self.metrics = metrics
        self.fleet = fleet  # fleet.redis.FleetRedis (the dedupe), or None
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.unpriced_seen: set[str] = set()  # models announced (or not to announce) here
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], Any]] = asyncio.Queue(cfg.queue_size)
        self.workers = workers
        self._task: asyncio.Task[Any] | None = None
        self._closing = False
        self.configure(cfg)

    def configure(self, cfg: Any) -> None:
        """Take a (re)loaded `[webhooks]` section (a new queue_size: a new Webhooks)."""
        self.cfg = cfg
        self.events = frozenset(cfg.events)
        secret = cfg.resolve_secret()
        if cfg.secret_env and not secret:
            log.error(
                'webhooks.secret_env: environment variable "%s" is not set; events are '
                "not posted unsigned (each is counted as failed)",
                cfg.secret_env,
            )
        self.secret = secret.encode()
        self.instance = cfg.instance or self.host
        self._bucket()

    def _bucket(self) -> None:
        """Each of the instance's workers gets 1/N of max_per_minute."""
        per_worker = self.cfg.max_per_minute / self.workers
        self.rate = per_worker / 60.0  # tokens per second
        self.capacity = max(1.0, per_worker)
        self.tokens = self.capacity
        self.refilled = time.monotonic()

    # -- hooks (the data plane's side; only on transitions) --------------------------------

    def emit(self, event: str, fields: dict[str, Any], once: Any = None) -> None:
        """Queue an event (never blocks; a full queue drops it). `once`: (key, ttl
        seconds) to tell it once per fleet through Redis."""
        if event not in self.events:
            return
        if self._closing:
            self.metrics.inc(DROPPED, (("event", event), ("reason", "shutdown")))
            return
        body = {
            "event": event,
            "id": uuid.uuid4().hex,
            "ts": round(time.time(), 3),
            "instance": self.instance,
            "host": self.host,
            "pid": self.pid,
            **fields,
        }
        try:
            self.queue.put_nowait((event, body, once))
        except asyncio.QueueFull:
            self.metrics.inc(DROPPED, (("event", event), ("reason", "queue")))

    def breaker_changed(self, breaker: Breaker, was: str) -> None:
        """Breakers.on_transition: closed -> open is a channel down, open or
        half-open -> closed a channel up (a failed probe reopening it is neither)."""
        channel, model = breaker.key
        if breaker.state is OPEN and was is CLOSED:
            kind = breaker.last_error
            credential = kind in ("HTTP 401", "HTTP 403")
            self.emit(
                "channel_down",
                {
                    "channel": channel,
                    "model": model,
                    "reason": "credential" if credential else "failures",
                    "error": kind,
                    "failures": breaker.failures,
                    "until": round(time.time() + breaker.cooldown, 3),
                },
            )
        elif breaker.state is CLOSED:
            self.emit("channel_up", {"channel": channel, "model": model, "reason": "recovered"})

    def cooldown(self, channel: str, status: int, seconds: float) -> None:
        """A channel put in cooldown by its upstream's rate limits (App.note_limits,
        when it was not cooling already here)."""
        self.emit(
            "channel_down",
            {
                "channel": channel,
                "model": "",
                "reason": "rate_limited" if status == 429 else "exhausted",
                "status": status,
                "seconds": round(seconds, 3),
                "until": round(time.time() + seconds, 3),
            },
            ("down:" + channel, seconds),
        )

    def unpriced(self, model: str, channel: Any, upstream_model: str) -> None:
        """The first request served here for `model`, which has no price."""
        self.unpriced_seen.add(model)
        self.emit(
            "unpriced_model",
            {
                "model": model,
                "channel": channel.name if channel is not None else "",
                "upstream_model": upstream_model,
            },
            ("unpriced:" + model, UNPRICED_TTL),
        )

    def budget(
        self, kind: str, name: str, period: str, start: int, budget: int, spent: int, pct: int
    ) -> None:
        """Budgets.on_threshold: a budget's spend reached `pct` % this period."""
        end = period_bounds(period, start)[1]
        self.emit(
            "budget",
            {
                "subject": kind,
                "name": name,
                "period": period,
                "period_start": start,
                "period_end": end,
                "threshold": pct,
                "budget_usd": budget / 1_000_000,
                "spent_usd": spent / 1_000_000,
            },
            (f"budget:{kind}:{period}:{start}:{pct}:{name}", max(end - time.time(), 0) + 86400),
        )

    # -- the background task -----------------------------------------------------------------

    def start(self, workers: int = 1) -> None:
        """Start the sender (in the worker's loop); `workers`: the instance's count."""
        if workers != self.workers:
            self.workers = workers
            self._bucket()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop taking events; deliver what is queued for at most `grace` seconds."""
        self._closing = True
        task = self._task
        if task is None:
            return
        deadline = time.monotonic() + grace
        while (self.queue.qsize() or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = self.queue.qsize() + (1 if self._busy else 0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not self.queue.empty():
            event, _, _ = self.queue.get_nowait()
            self.metrics.inc(DROPPED, (("event", event), ("reason", "shutdown")))
        if left:
            log.warning("webhooks: %d event(s) not posted at shutdown", left)

    _busy = False

    async def _run(self) -> None:
        import aiohttp  # only a worker with webhooks pays for the client

        session = aiohttp.ClientSession(trust_env=False)
        try:
            while True:
                event, body, once = await self.queue.get()
                self._busy = True
                try:
                    if once is not None and not await self._first(*once):
                        continue
                    if not self._take_token():
                        self.metrics.inc(DROPPED, (("event", event), ("reason", "rate")))
                        continue
                    await self._deliver(session, event, body)
                except asyncio.CancelledError:
                    self.metrics.inc(DROPPED, (("event", event), ("reason", "shutdown")))
                    raise
                except Exception:
                    log.exception("webhook %s not delivered", event)
                    self.metrics.inc(FAILED, (("event", event),))
                finally:
                    self._busy = False
        finally:
            await session.close()

    async def _first(self, key: str, ttl: float) -> bool:
        """Is this the fleet's first telling of `key`? (SET NX in Redis; True when
        there is no Redis or it cannot be reached: better twice than never.)"""
        fleet = self.fleet
        if fleet is None:
            return True
        full = fleet.key("hook", key)
        ms = max(int(ttl * 1000), 1)
        try:
            return bool(await fleet.run(lambda: fleet.client.set(full, b"1", nx=True, px=ms)))
        except Exception as exc:
            log.debug("webhook dedupe in redis failed (posting anyway): %s", exc)
            return True

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    async def _deliver(self, session: Any, event: str, body: dict[str, Any]) -> None:
        import aiohttp

        cfg = self.cfg
        labels = (("event", event),)
        if cfg.secret_env and not self.secret:
            self.metrics.inc(FAILED, labels)  # never posted unsigned (logged at start)
            return
        data = orjson.dumps(body)
        headers = {
            "content-type": "application/json",
            "user-agent": "fastgate-webhooks",
            "x-fastgate-event": event,
            "x-fastgate-delivery": body["id"],
        }
        if self.secret:
            digest = hmac.new(self.secret, data, hashlib.sha256).hexdigest()
            headers["x-fastgate-signature"] = "sha256=" + digest
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        delay = BACKOFF
        why = ""
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                async with session.post(
                    cfg.url, data=data, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = f"{exc.__class__.__name__} {exc}".strip()
            else:
                if 200 <= status < 300:
                    self.metrics.inc(SENT, labels)
                    return
                why = f"HTTP {status}"
                if status < 500 and status not in RETRY_STATUSES:
                    break  # the receiver refuses it: retrying would not help
            if attempt < cfg.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        self.metrics.inc(FAILED, labels)
        log.warning("webhook %s %s not delivered: %s", event, body["id"], why)


def build_webhooks(app: Any, cfg: Any) -> Webhooks | None:
    """The App's webhooks for `cfg` (`[webhooks]`), bound to its breakers and
    budgets; None (and nothing bound) when no url is configured. Not started."""
    hooks = Webhooks(cfg, app.metrics, app.fleet, app.workers) if cfg.url else None
    _bind(app, hooks)
    return hooks


def _bind(app: Any, hooks: Webhooks | None) -> None:
    app.breakers.on_transition = hooks.breaker_changed if hooks is not None else None
    wants = hooks is not None and "budget" in hooks.events
    app.budgets.on_threshold = hooks.budget if wants else None  # type: ignore[union-attr]


def reconfigure(app: Any, cfg: Any) -> Webhooks | None:
    """A reload changed `[webhooks]`: the App's webhooks for it (started), the old
    ones reconfigured in place, or closed (their queue delivered in the background)."""
    old: Webhooks | None = app.hooks
    if old is not None and cfg.url and cfg.queue_size == old.cfg.queue_size:
        old.configure(cfg)
        _bind(app, old)
        return old
    hooks = build_webhooks(app, cfg)
    if hooks is not None:
        hooks.unpriced_seen = old.unpriced_seen if old is not None else set()
        hooks.start(app.workers)
    if old is not None:
        app.spawn(old.aclose())
    return hooks
