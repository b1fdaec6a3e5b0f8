"""The attempts of one request: which candidate is tried, on which connection.

`Attempts` walks the route's attempt plan (skipping channels cooling down,
over their rpm, or with an open breaker), counts attempts and remembers each
failure for the final error, and holds what belongs to the current attempt:
the channel, its breaker, the model (a router's candidate serves its member
model: `Channel.member`) and its upstream name, the pool's pending acquire
or the connection, and when the attempt started (latency routes only). A stale kept-alive connection is retried once, on the same
channel, without counting as a failure (`stale_retry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastgate import errors
from fastgate.gateway.breaker import OPEN
from fastgate.http import upstream as up

log = logging.getLogger("fastgate.upstream")

WAIT = object()  # pick's answer when a channel's shared rpm window needs a round trip


class Attempts:
    __slots__ = (
        "breaker",
        "cancel_acquire",
        "channel",
        "conn",
        "convert",
        "count",
        "failures",
        "last_channel",
        "model",
        "order",
        "plan",
        "sent",
        "skipped_open",
        "stale_retry",
        "upstream_model",
        "waiting",
    )

    def __init__(
        self,
        order: list[Any] | None = None,
        plan: Iterator[Any] | None = None,
        channel: Any = None,
        breaker: Any = None,
        upstream_model: str = "",
        conn: Any = None,
        cancel_acquire: Any = None,
        model: str = "",
    ) -> None:
        self.order = order  # candidates already drawn from the route (by the fast path)
        self.plan = plan
        self.count = 1 if channel is not None else 0
        self.channel = channel
        self.last_channel = channel
        self.breaker = breaker
        self.upstream_model = upstream_model
        self.model = model  # the current attempt's model ("" before the first)
        self.sent = 0.0  # time.time() the current attempt started (latency routes)
        self.conn = conn
        self.cancel_acquire = cancel_acquire
        self.failures: list[tuple[str, str]] = []
        self.skipped_open = 0
        self.stale_retry = False
        self.convert = False  # the current channel speaks another protocol
        self.waiting: Any = None  # (channel, awaitable) when pick returned WAIT

    def pick(self, app: Any, model: str) -> Any:
        """The next candidate that may be tried now (made current), or None."""
        now = time.monotonic()
        for ch in self.plan:
            if ch is self.last_channel:
                continue
            until = app.channel_cooldown.get(ch.name)
            if until is not None:
                if now < until:
                    self.skipped_open += 1
                    continue
                del app.channel_cooldown[ch.name]  # over (the fast path tests membership)
            if ch.rpm:
                allowed = app.limits.channel_allows(ch)
                if allowed is False:
                    self.skipped_open += 1
                    continue
                if allowed is not True:  # the shared window's answer is a round trip away
                    self.waiting = (ch, allowed)
                    return WAIT
            ch = self.use(app, ch, model, now)
            if ch is not None:
                return ch
        return None

    def use(self, app: Any, ch: Any, model: str, now: float) -> Any:
        """Make `ch` current if its breaker lets a request through (else None)."""
        model = ch.member or model  # a router's candidate serves its member model
        br = app.breakers.get(ch.name, model)
        if not br.allow(now):
            self.skipped_open += 1
            return None
        self.count += 1
        self.channel = self.last_channel = ch
        self.breaker = br
        self.model = model
        self.upstream_model = ch.model_map.get(model, model)
        return ch

    def failed(self, app: Any, kind: str, request_id: bytes = b"") -> None:
        """The current attempt failed before any byte reached the client."""
        name = self.channel.name
        self.failures.append((name, kind))
        app.metrics.attempt(name, kind)
        rid = request_id.decode("latin-1")
        log.warning(
            "request %s: attempt %d on channel %s failed: %s",
            rid,
            self.count,
            name,
            kind,
            extra={"request_id": rid, "channel": name, "kind": kind, "attempt": self.count},
        )
        self._breaker_failure(rid, kind)

    def failed_mid_response(self, app: Any, kind: str, request_id: bytes) -> None:
        """The upstream failed after bytes reached the client (no failover)."""
        name = self.channel.name
        app.metrics.upstream_error(name, kind)
        rid = request_id.decode("latin-1")
        log.warning(
            "request %s: channel %s failed mid-response: %s",
            rid,
            name,
            kind,
            extra={"request_id": rid, "channel": name, "kind": kind},
        )
        self._breaker_failure(rid, kind)

    def _breaker_failure(self, rid: str, kind: str) -> None:
        br = self.breaker
        was = br.state
        br.failure(None, kind)
        if br.state == OPEN and was != OPEN:
            channel, model = br.key
            log.warning(
                "request %s: circuit breaker for channel %s, model %s opened (%d failures)",
                rid,
                channel,
                model,
                br.failures,
                extra={"request_id": rid, "channel": channel, "model": model},
            )

    def log_failover(self, request_id: bytes) -> None:
        """The request moves on to its next candidate (the current channel)."""
        rid = request_id.decode("latin-1")
        name = self.channel.name
        log.info(
            "request %s: failing over to channel %s (attempt %d)",
            rid,
            name,
            self.count,
            extra={"request_id": rid, "channel": name, "attempt": self.count},
        )

    def give_up_error(self, model: str, request_id: bytes = b"") -> errors.FastgateError:
        """The error for a request whose every candidate failed or was skipped."""
        failures = self.failures
        if self.count == 0 and self.skipped_open:
            err: errors.FastgateError = errors.ServiceUnavailable(
                f"every channel for '{model}' is temporarily unavailable (circuit open)"
            )
        else:
            listed = "; ".join(f"{c}: {k}" for c, k in failures)
            if failures and all(k in up.TIMEOUT_KINDS for _, k in failures):
                err = errors.UpstreamTimeout("upstream timed out: " + listed)
            else:
                err = errors.UpstreamError(f"all {self.count} attempt(s) failed: " + listed)
        rid = request_id.decode("latin-1")
        log.log(
            logging.DEBUG if err.status == 503 else logging.WARNING,  # 503: the breakers said
            "request %s: answered %d: %s",
            rid,
            err.status,
            err.message,
            extra={"request_id": rid, "model": model, "status": err.status},
        )
        return err

    def drop_conn(self, app: Any, conn: Any) -> None:
        """Done with a connection that must not be reused: close it, free its slot."""
        self.conn = None
        conn.abort()
        if conn.key is not None:
            app.pool.discard(conn)

    def cancel(self, app: Any) -> None:
        """Stop whatever the current attempt is waiting on (the client left)."""
        if self.conn is not None:
            self.drop_conn(app, self.conn)
        if self.cancel_acquire is not None:
            self.cancel_acquire()
            self.cancel_acquire = None
