"""Rate limits per key (rpm, tpm, max_concurrency) and per channel (rpm).

`Limits` is the memory backend: in-process and exact. Requests per minute are
a sliding-window log (the times of the admitted requests of the last 60 s),
tokens per minute a log of (time, tokens) pairs summed as they age out,
concurrency a counter. Only admitted requests count. A refusal carries
`Retry-After` in whole seconds (at least 1): when the oldest entry that blocks
leaves the window.

`SharedLimits` is the redis backend (`[ratelimit] backend = "redis"`): the same
limits held for the whole fleet, through an engine (`fleet/limits.py`) whose
windows live in Redis, without a Redis round trip for a request far from its
limit:
- rpm (key and channel): a worker *leases* slots: one take grants up to
  `size` slots (never more than 1/SHARE of what is free, so leases shrink to
  one slot as the window fills), spent locally for HOLD seconds; what is left
  then goes back to Redis. The lease is counted in Redis from the take until
  HOLD + 60 s later, so every slot is counted for a whole window after its use:
  never more admitted than the limit. Near the limit every request takes its
  own slot (one round trip), so no slot sits unspent in another worker.
- tpm: tokens are known only after a response, so they are added to the
  window afterwards (batched every FLUSH seconds; at once near the limit);
  admission reads a cached fleet total, refreshed when older than TPM_STALE or
  at TPM_NEAR of the limit.
- max_concurrency: a slot in Redis per request in flight (one round trip to
  take it, a background one to free it); a lease would hold slots other
  workers need.
A Redis outage (`FleetUnavailable`): `on_redis_error = "open"` admits on this
worker's own `Limits`, `"closed"` answers 503.

`admit` returns (headers, ticket) at once when it can, else an awaitable of
them: `headers` the `x-ratelimit-*` lines for the response, `ticket` what
`done` needs to release (True, or the concurrency slot's id, or LOCAL).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any

from fastgate import errors

WINDOW = 60.0


BUCKET = 0.1  # seconds: admissions this close together share one log entry


class _Log:
    """Admissions (and weights) of the last WINDOW seconds, in BUCKET-wide entries.

    An entry is [end of its bucket, total weight]; it leaves the window WINDOW
    after its bucket's end, so every admission is counted for at least a whole
    window after it (never more admitted than the limit; a refusal can come up
    to one bucket early). A key holds at most WINDOW / BUCKET entries."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[list[float]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        entries = self.entries
        edge = now - WINDOW
        while entries and entries[0][0] <= edge:
            self.total -= int(entries.popleft()[1])

    def wait_for(self, limit: int, now: float) -> float:
        """Seconds until the total drops below `limit` (0 if it is below now)."""
        if self.total < limit:
            return 0.0
        excess = self.total - limit + 1
        for t, w in self.entries:
            excess -= w
            if excess <= 0:
                return t + WINDOW - now
        return WINDOW

    def add(self, now: float, weight: int) -> None:
        entries = self.entries
        if entries and entries[-1][0] > now:
            entries[-1][1] += weight
        else:
            entries.append([now + BUCKET, weight])
        self.total += weight


def _retry_after(seconds: float) -> tuple[tuple[bytes, bytes], ...]:
    """Whole seconds, at least 1 and at most the window."""
    return ((b"retry-after", b"%d" % min(max(1, math.ceil(seconds)), int(WINDOW))),)


def duration(seconds: float) -> bytes:
    """OpenAI's reset format: "20ms" under a second, else whole seconds ("7s")."""
    if seconds < 1:
        return b"%dms" % (seconds * 1000 if seconds > 0 else 0)
    return b"%ds" % -(-seconds // 1)


_REQ = (
    b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: %d\r\n"
    b"x-ratelimit-reset-requests: %b\r\n"
)
_TOK = (
    b"x-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: %d\r\n"
    b"x-ratelimit-reset-tokens: %b\r\n"
)


def rate_headers(
    token: Any, req_left: int, req_reset: float, tok_used: int, tok_reset: float
) -> bytes:
    """The x-ratelimit-* lines for a key's rpm (and tpm) after an admission."""
    out = b""
    if token.rpm:
        out = _REQ % (
            token.rpm,
            req_left if req_left > 0 else 0,
            b"%ds" % -(-req_reset // 1) if req_reset >= 1 else duration(req_reset),
        )
    if token.tpm:
        left = token.tpm - tok_used
        out += _TOK % (
            token.tpm,
            left if left > 0 else 0,
            b"%ds" % -(-tok_reset // 1) if tok_reset >= 1 else duration(tok_reset),
        )
    return out


LOCAL = "local"  # a ticket of the local limits (SharedLimits during an outage)


class Limits:
    """The memory backend: exact within this process."""

    def __init__(self) -> None:
        self.requests: dict[str, _Log] = {}
        self.tokens: dict[str, _Log] = {}
        self.concurrency: dict[str, int] = {}

    def admit(self, token: Any) -> tuple[bytes, Any]:
        """Count the request against the key's limits, or raise 429."""
        name = token.name
        now = time.monotonic()
        edge = now - WINDOW
        if token.max_concurrency and self.concurrency.get(name, 0) >= token.max_concurrency:
            raise errors.RateLimited(
                f"too many concurrent requests for this key (max {token.max_concurrency})",
                headers=_retry_after(1),
            )
        tok_used = 0
        tok_reset = 0.0
        if token.tpm:
            log = self.tokens.get(name)
            if log is not None:
                entries = log.entries
                if entries and entries[0][0] <= edge:
                    log.trim(now)
                if log.total >= token.tpm:
                    raise errors.RateLimited(
                        f"token rate limit reached for this key ({token.tpm} tokens per minute)",
                        headers=_retry_after(log.wait_for(token.tpm, now)),
                    )
                tok_used = log.total
                if entries:
                    tok_reset = entries[0][0] + WINDOW - now
        left = 0
        reset = 0.0
        if token.rpm:
            log = self.requests.get(name)
            if log is None:
                log = self.requests[name] = _Log()
            entries = log.entries
            if entries and entries[0][0] <= edge:
                log.trim(now)
            if log.total >= token.rpm:
                raise errors.RateLimited(
                    f"request rate limit reached for this key ({token.rpm} per minute)",
                    headers=_retry_after(log.wait_for(token.rpm, now)),
                )
            if entries and entries[-1][0] > now:  # _Log.add, inline
                entries[-1][1] += 1
            else:
                entries.append([now + BUCKET, 1])
            log.total += 1
            left = token.rpm - log.total
            reset = entries[0][0] + WINDOW - now
        if token.max_concurrency:
            self.concurrency[name] = self.concurrency.get(name, 0) + 1
        return rate_headers(token, left, reset, tok_used, tok_reset), True

    def done(self, token: Any, tokens_used: int, ticket: Any = True) -> None:
        """The admitted request ended: free its concurrency slot, count its tokens."""
        name = token.name
        if token.max_concurrency:
            self.concurrency[name] = self.concurrency.get(name, 1) - 1
        if token.tpm and tokens_used > 0:
            log = self.tokens.get(name)
            if log is None:
                log = self.tokens[name] = _Log()
            log.add(time.monotonic(), tokens_used)

    def channel_allows(self, channel: Any) -> Any:
        """Per-channel rpm: admit (and count) one request, or say the channel is full."""
        rpm = channel.rpm
        if not rpm:
            return True
        now = time.monotonic()
        key = channel.name
        log = self.requests.get("\0" + key)
        if log is None:
            log = self.requests["\0" + key] = _Log()
        log.trim(now)
        if log.total >= rpm:
            return False
        log.add(now, 1)
        return True

    def start(self, loop: Any, apply_cooldown: Any) -> list[Any]:
        return []

    def cool(self, channel: str, seconds: float) -> None:
        """A channel's cooldown (memory backend: this process knows it already)."""


HOLD = 1.0  # seconds a worker may spend a lease
MAX_LEASE = 1000  # slots in one lease at most
SHARE = 16  # a lease takes at most 1/SHARE of what is free in the window
TPM_STALE = 0.1  # seconds a cached tpm total is trusted far from the limit
TPM_NEAR = 0.8  # from this share of tpm on, every admission reads the total
FLUSH = 0.1  # seconds between batched tpm additions and lease returns


class _Lease:
    """A worker's share of one rpm window (a key's or a channel's)."""

    __slots__ = ("free", "granted", "left", "member", "oldest", "size", "taking", "until")

    def __init__(self) -> None:
        self.left = 0  # slots still to spend
        self.until = 0.0  # monotonic: spend before this
        self.member = ""  # the lease's entry in Redis ("" = none to settle)
        self.granted = 0
        self.size = 1  # the next lease asked for (doubles when used up, halves when not)
        self.free = -1  # free in the window after the last take (-1 unknown)
        self.oldest = 0.0  # monotonic: when the oldest entry leaves the window
        self.taking: asyncio.Future[None] | None = None  # this worker's take in flight


class _Tokens:
    """A worker's view of one key's tpm window."""

    __slots__ = ("pending", "reset", "synced", "total")

    def __init__(self) -> None:
        self.total = 0  # the fleet's total at the last sync (this worker's included)
        self.pending = 0  # this worker's tokens not yet added
        self.synced = -1e9  # monotonic time of the last sync
        self.reset = 0.0  # monotonic: when the oldest entry leaves


class SharedLimits:
    """The redis backend: the fleet's limits, leased (see the module doc)."""

    def __init__(self, engine: Any, fail_open: bool) -> None:
        self.engine = engine
        self.fail_open = fail_open
        self.local = Limits()  # on_redis_error = "open" during an outage
        self.leases: dict[tuple[str, str], _Lease] = {}
        self.tokens: dict[str, _Tokens] = {}
        self.tpm_of: dict[str, int] = {}  # key name -> its tpm (for the flusher)

    # -- keys ------------------------------------------------------------------------

    def admit(self, token: Any) -> Any:
        """(headers, ticket) now, or an awaitable of them; raises RateLimited."""
        if not token.max_concurrency:
            now = time.monotonic()
            tok = None
            if token.tpm:
                tok = self.tokens.get(token.name)
                if (
                    tok is None
                    or now - tok.synced > TPM_STALE
                    or tok.total + tok.pending >= token.tpm * TPM_NEAR
                ):
                    return self._admit(token)
            lease = None
            if token.rpm:
                lease = self.leases.get(("k", token.name))
                if lease is None or lease.left <= 0 or now >= lease.until:
                    return self._admit(token)
                lease.left -= 1
            return self._headers(token, lease, tok, now), True
        return self._admit(token)

    async def _admit(self, token: Any) -> tuple[bytes, Any]:
        name = token.name
        try:
            tok = None
            if token.tpm:
                tok = await self._check_tokens(name, token.tpm)
            lease = None
            if token.rpm:
                lease = await self._spend("k", name, token.rpm)
                if lease is None:
                    raise errors.RateLimited(
                        f"request rate limit reached for this key ({token.rpm} per minute)",
                        headers=_retry_after(self.leases[("k", name)].oldest - time.monotonic()),
                    )
            ticket: Any = True
            if token.max_concurrency:
                member = self.engine.member_suffix()
                if not await self.engine.acquire_slot(name, token.max_concurrency, member):
                    if lease is not None:
                        lease.left += 1  # not admitted: the slot stays this worker's
                    raise errors.RateLimited(
                        f"too many concurrent requests for this key (max {token.max_concurrency})",
                        headers=_retry_after(1),
                    )
                ticket = member
            return self._headers(token, lease, tok, time.monotonic()), ticket
        except errors.SharedStateUnavailable:
            if not self.fail_open:
                raise errors.ServiceUnavailable(
                    "rate limits cannot be checked (shared state unavailable)"
                ) from None
            headers, _ = self.local.admit(token)
            return headers, LOCAL

    def _headers(self, token: Any, lease: Any, tok: Any, now: float) -> bytes:
        left = reset = 0
        if lease is not None:
            left = max(0, lease.free) + lease.left
            reset = max(0.0, lease.oldest - now)
        used = tok.total + tok.pending if tok is not None else 0
        tok_reset = max(0.0, tok.reset - now) if tok is not None else 0.0
        return rate_headers(token, left, reset, used, tok_reset)

    def done(self, token: Any, tokens_used: int, ticket: Any = True) -> None:
        if ticket is LOCAL:
            self.local.done(token, tokens_used)
            return
        if type(ticket) is str:
            self.engine.release_slot(token.name, ticket)
        if token.tpm and tokens_used > 0:
            tok = self.tokens.get(token.name)
            if tok is None:
                tok = self.tokens[token.name] = _Tokens()
            tok.pending += tokens_used
            self.tpm_of[token.name] = token.tpm
            if tok.total + tok.pending >= token.tpm * TPM_NEAR:
                self.engine.spawn(self._flush_one(token.name, token.tpm))

    async def _check_tokens(self, name: str, tpm: int) -> _Tokens:
        tok = await self._sync_tokens(name, tpm)
        if tok.total >= tpm:
            raise errors.RateLimited(
                f"token rate limit reached for this key ({tpm} tokens per minute)",
                headers=_retry_after(tok.reset - time.monotonic()),
            )
        return tok

    async def _sync_tokens(self, name: str, tpm: int) -> _Tokens:
        """Add this worker's pending tokens and read the fleet's total."""
        tok = self.tokens.get(name)
        if tok is None:
            tok = self.tokens[name] = _Tokens()
        pending, tok.pending = tok.pending, 0
        suffix = self.engine.member_suffix()
        try:
            _, total, wait = await self.engine.take("t", name, tpm, pending, 0, suffix, force=True)
        except BaseException:
            tok.pending += pending  # not added: next time
            raise
        now = time.monotonic()
        tok.total = total
        tok.synced = now
        tok.reset = now + wait / 1000
        return tok

    async def _flush_one(self, name: str, tpm: int) -> None:
        try:
            await self._sync_tokens(name, tpm)
        except errors.SharedStateUnavailable:
            pass

    # -- rpm leases (keys and channels) -------------------------------------------------

    async def _spend(self, kind: str, name: str, limit: int) -> _Lease | None:
        """One slot of `name`'s window for this request (the lease's, or a new
        lease's); None when the window is full (lease.oldest: when it frees)."""
        key = (kind, name)
        lease = self.leases.get(key)
        if lease is None:
            lease = self.leases[key] = _Lease()
        while True:
            now = time.monotonic()
            if lease.left > 0 and now < lease.until:
                lease.left -= 1
                return lease
            if lease.taking is None:
                break
            await asyncio.shield(lease.taking)  # another request's take: share it
        loop = asyncio.get_running_loop()
        lease.taking = loop.create_future()
        try:
            used_up = lease.left <= 0
            size = lease.size
            if lease.member:
                size = min(MAX_LEASE, size * 2) if used_up else max(1, size // 2)
            free = lease.free if lease.free >= 0 else limit
            want = max(1, min(size, free // SHARE, limit))
            suffix = self.engine.member_suffix()
            sent = time.monotonic()
            granted, total, wait = await self.engine.take(
                kind,
                name,
                limit,
                want,
                int(HOLD * 1000),
                suffix,
                lease.member,
                lease.granted - lease.left,
            )
            lease.size = size
            lease.member = f"{granted}{suffix}" if granted else ""
            lease.granted = granted
            lease.until = sent + HOLD
            lease.free = limit - total
            lease.oldest = sent + (wait / 1000 if wait else WINDOW)
            if granted == 0:
                lease.left = 0
                return None
            lease.left = granted - 1
            return lease
        except BaseException:
            lease.member = ""  # the take may not have happened: nothing to settle
            lease.left = lease.granted = 0
            raise
        finally:
            fut, lease.taking = lease.taking, None
            if fut is not None:
                fut.set_result(None)

    def channel_allows(self, channel: Any) -> Any:
        """True/False now, or an awaitable of it (a take for the channel's window)."""
        rpm = channel.rpm
        if not rpm:
            return True
        lease = self.leases.get(("ch", channel.name))
        if lease is not None and lease.left > 0 and time.monotonic() < lease.until:
            lease.left -= 1
            return True
        return self._channel_take(channel)

    async def _channel_take(self, channel: Any) -> bool:
        try:
            return await self._spend("ch", channel.name, channel.rpm) is not None
        except errors.SharedStateUnavailable:
            return bool(self.fail_open and self.local.channel_allows(channel))

    # -- background ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        """Every FLUSH s: add pending tokens, give back what expired leases did not spend."""
        while True:
            await asyncio.sleep(FLUSH)
            for name, tok in list(self.tokens.items()):
                if tok.pending:
                    await self._flush_one(name, self.tpm_of.get(name, 0))
            now = time.monotonic()
            for (kind, name), lease in list(self.leases.items()):
                if lease.member and lease.left > 0 and now >= lease.until and not lease.taking:
                    member, used = lease.member, lease.granted - lease.left
                    lease.member = ""
                    lease.left = lease.granted = 0
                    try:
                        await self.engine.settle(kind, name, member, used)
                    except errors.SharedStateUnavailable:
                        pass  # the lease ages out of the window by itself

    def start(self, loop: Any, apply_cooldown: Any) -> list[Any]:
        return [loop.create_task(self._flush_loop()), *self.engine.start(apply_cooldown)]

    def cool(self, channel: str, seconds: float) -> None:
        """Tell every instance that `channel` is out of budget for `seconds`."""
        self.engine.spawn(self.engine.cool(channel, max(1, int(seconds * 1000))))
