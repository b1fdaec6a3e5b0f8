"""The Redis side of budgets: one counter of micro-dollars per (subject, period).

Key: `<prefix>budget:<kind>:<period>:<period start>:<name>`. `add` is one Lua
script for every budget of a request: a counter that does not exist (the
period's first spend, or a Redis that lost its data) is first seeded with the
store's total for that period, then INCRBY; the replies are the fleet's totals.
A counter expires a day after its period ends. `read` is one MGET (a missing
counter reads as None: the caller keeps what it knows). Errors surface as
`FleetUnavailable` (`errors.SharedStateUnavailable`) through `FleetRedis.run`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastgate.fleet.redis import FleetRedis
from fastgate.vocab.periods import period_bounds

KEEP_AFTER = 86400  # seconds a counter outlives its period

_ADD = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 0 then
    redis.call('SET', k, ARGV[2 * i], 'EX', ARGV[2 * i + 1])
  end
  out[i] = redis.call('INCRBY', k, ARGV[1])
end
return out
"""


class RedisBudgets:
    """The Redis operations gateway/budgets.py calls."""

    def __init__(self, fleet: FleetRedis) -> None:
        self.fleet = fleet
        self._add = fleet.script(_ADD)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _name(self, key: tuple[str, str, str, int]) -> str:
        kind, name, period, start = key
        return self.fleet.key(f"budget:{kind}:{period}:{start}:{name}")

    async def add(self, keys: list[Any], micros: int, seeds: list[int]) -> list[int]:
        """INCRBY `micros` on every key (seeded when absent); the new totals."""
        names = [self._name(k) for k in keys]
        args: list[Any] = [micros]
        for k, seed in zip(keys, seeds, strict=True):
            _, end = period_bounds(k[2], k[3])
            args += [seed, end - k[3] + KEEP_AFTER]  # counted from the period start: a bound
        out = await self.fleet.run(lambda: self._add(keys=names, args=args))
        return [int(v) for v in out]

    async def read(self, keys: list[Any]) -> list[int | None]:
        names = [self._name(k) for k in keys]
        out = await self.fleet.run(lambda: self.fleet.client.mget(names))
        return [None if v is None else int(v) for v in out]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
