"""The Redis side of the shared rate limits: sliding windows, slots, cooldowns.

A window (rpm of a key or a channel, tpm of a key) is a sorted set of weighted
entries, member `"<weight>:<nonce>"`, score = the millisecond until which the
entry is "now" (it leaves the window `window_ms` later), plus a sum key so a
take is O(entries leaving), not O(window). Every change is one Lua script
(atomic, Redis's own clock, so instances need no synchronized clocks):

- `take`: trim what left the window; settle the caller's previous lease (keep
  only what it used); grant up to `want` of what is free under `limit`
  (`force`: add `want` whatever the total, for tokens counted after the fact).
  A grant is recorded with score now + hold: it stays in the window until
  hold + window after the take, so a slot spent any time during the hold is
  counted for a full window after its use (never more admitted than the limit).
  Returns (granted, total, wait_ms until the total drops below the limit).
- slots (max_concurrency): a sorted set of in-flight request ids scored by
  their expiry (renewed while they run), so a worker that dies leaks its slots
  for at most `SLOT_TTL`.
- cooldowns: `cool:<channel>` keys with a TTL, announced on a pub/sub channel
  so every worker of every instance learns a 429 at once.

Keys are `<prefix>rl:{<kind>:<name>}` (hash tags: both keys of a window sit in
one Cluster slot) and expire a little after their window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from fastgate.fleet.redis import FleetRedis, FleetUnavailable

log = logging.getLogger("fastgate.fleet")

WINDOW_MS = 60_000
SLOT_TTL_MS = 30_000  # an in-flight slot not renewed for this long is free again
RENEW_EVERY = 10.0  # seconds between renewals of this worker's in-flight slots

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local sum = tonumber(redis.call('GET', KEYS[2]) or '0')
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
if #gone > 0 then
  for _, m in ipairs(gone) do sum = sum - tonumber(string.match(m, '^(%d+)')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
end
if ARGV[6] ~= '' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[6])
  if s then
    local n, nonce = string.match(ARGV[6], '^(%d+)(:.*)$')
    local used = tonumber(ARGV[7])
    redis.call('ZREM', KEYS[1], ARGV[6])
    sum = sum - tonumber(n)
    if used > 0 then
      redis.call('ZADD', KEYS[1], s, used .. nonce)
      sum = sum + used
    end
  end
end
if sum < 0 then sum = 0 end
local grant = want
if ARGV[8] ~= '1' then
  grant = math.min(want, limit - sum)
  if grant < 0 then grant = 0 end
end
if grant > 0 then
  redis.call('ZADD', KEYS[1], now + hold, grant .. ARGV[5])
  sum = sum + grant
end
local ttl = window + hold + 5000
redis.call('SET', KEYS[2], sum, 'PX', ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
local wait = 0
local need = sum - limit + 1
if grant < want or (ARGV[8] == '1' and need > 0) then
  if need > 0 then
    local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      need = need - tonumber(string.match(entries[i], '^(%d+)'))
      if need <= 0 then
        wait = tonumber(entries[i + 1]) + window - now
        break
      end
    end
    if need > 0 then wait = window end
  end
end
return {grant, sum, wait}
"""

_SETTLE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
local n, nonce = string.match(ARGV[1], '^(%d+)(:.*)$')
local used = tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
local back = tonumber(n) - used
if used > 0 then redis.call('ZADD', KEYS[1], s, used .. nonce) end
local sum = tonumber(redis.call('GET', KEYS[2]) or '0') - back
if sum < 0 then sum = 0 end
redis.call('SET', KEYS[2], sum, 'KEEPTTL')
return back
"""

_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 5000)
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 5000)
return 1
"""

_COOL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local until_ms = now + ms
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if old >= until_ms then return 0 end
redis.call('SET', KEYS[1], until_ms, 'PX', ms)
redis.call('PUBLISH', KEYS[2], ARGV[2] .. ' ' .. ms)
return 1
"""


class RedisWindows:
    """The Redis operations the shared limits (gateway/limits.py) call."""

    def __init__(self, fleet: FleetRedis) -> None:
        self.fleet = fleet
        self._take = fleet.script(_TAKE)
        self._settle = fleet.script(_SETTLE)
        self._slot = fleet.script(_SLOT)
        self._renew = fleet.script(_RENEW)
        self._cool = fleet.script(_COOL)
        self._nonce = f":{os.getpid():x}.{os.urandom(3).hex()}."
        self._seq = 0
        self.slots: dict[str, set[str]] = {}  # slot key -> this worker's members in flight
        self.cool_channel = fleet.key("cool")
        self._tasks: set[asyncio.Task[Any]] = set()

    def member_suffix(self) -> str:
        self._seq += 1
        return f"{self._nonce}{self._seq}"

    def _keys(self, kind: str, name: str) -> list[str]:
        base = self.fleet.key(f"rl:{{{kind}:{name}}}")
        return [base, base + ":sum"]

    # -- windows ---------------------------------------------------------------

    async def take(
        self,
        kind: str,
        name: str,
        limit: int,
        want: int,
        hold_ms: int,
        member: str,
        old_member: str = "",
        old_used: int = 0,
        force: bool = False,
    ) -> tuple[int, int, int]:
        """(granted, window total, wait ms); raises FleetUnavailable."""
        keys = self._keys(kind, name)
        args = [limit, want, hold_ms, WINDOW_MS, member, old_member, old_used, 1 if force else 0]
        g, total, wait = await self.fleet.run(lambda: self._take(keys=keys, args=args))
        return int(g), int(total), int(wait)

    async def settle(self, kind: str, name: str, member: str, used: int) -> None:
        keys = self._keys(kind, name)
        await self.fleet.run(lambda: self._settle(keys=keys, args=[member, used]))

    # -- concurrency slots --------------------------------------------------------

    async def acquire_slot(self, name: str, limit: int, member: str) -> bool:
        key = self.fleet.key(f"rl:{{conc:{name}}}")
        ok = await self.fleet.run(lambda: self._slot(keys=[key], args=[limit, member, SLOT_TTL_MS]))
        if ok:
            self.slots.setdefault(key, set()).add(member)
        return bool(ok)

    def release_slot(self, name: str, member: str) -> None:
        key = self.fleet.key(f"rl:{{conc:{name}}}")
        held = self.slots.get(key)
        if held is not None:
            held.discard(member)
        self.spawn(self._release(key, member))

    async def _release(self, key: str, member: str) -> None:
        with contextlib.suppress(FleetUnavailable):
            await self.fleet.run(lambda: self.fleet.client.zrem(key, member))

    async def _renew_loop(self) -> None:
        """Keep this worker's in-flight slots alive (a long stream outlives SLOT_TTL)."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            held = {k: list(m) for k, m in self.slots.items() if m}
            if not held or not self.fleet.available:
                continue

            async def renew(held: dict[str, list[str]] = held) -> None:
                pipe = self.fleet.client.pipeline(transaction=False)
                for key, members in held.items():
                    await self._renew(keys=[key], args=[SLOT_TTL_MS, *members], client=pipe)
                await pipe.execute()

            with contextlib.suppress(FleetUnavailable):
                await self.fleet.run(renew)

    # -- cooldowns -----------------------------------------------------------------

    async def cool(self, channel: str, ms: int) -> None:
        """Tell the fleet `channel` is out of budget for `ms` milliseconds."""
        keys = [self.fleet.key("cool:" + channel), self.cool_channel]
        with contextlib.suppress(FleetUnavailable):
            await self.fleet.run(lambda: self._cool(keys=keys, args=[ms, channel]))

    async def _cooldown_loop(self, apply: Any) -> None:
        """Subscribe to the fleet's cooldown announcements; `apply(channel, seconds)`.
        On every (re)subscription the current cooldown keys are read, so a worker
        that starts, or comes back after an outage, knows what it missed."""
        prefix = self.fleet.key("cool:")
        while True:
            pubsub = None
            try:
                pubsub = self.fleet.client.pubsub()
                await pubsub.subscribe(self.cool_channel)
                async for key in self.fleet.client.scan_iter(match=prefix + "*", count=500):
                    ttl = await self.fleet.client.pttl(key)
                    if ttl and ttl > 0:
                        name = key.decode() if isinstance(key, bytes) else key
                        apply(name[len(prefix) :], ttl / 1000)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = msg["data"]
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    channel, _, ms = text.rpartition(" ")
                    with contextlib.suppress(ValueError):
                        apply(channel, int(ms) / 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: try again shortly
                log.debug("cooldown subscription lost: %s", exc)
                await asyncio.sleep(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    # -- background ------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, apply_cooldown: Any) -> list[asyncio.Task[Any]]:
        """Start the background loops (slot renewal, cooldown subscription)."""
        loop = asyncio.get_running_loop()
        return [
            loop.create_task(self._renew_loop()),
            loop.create_task(self._cooldown_loop(apply_cooldown)),
        ]
