"""A worker's view of a budget that a fleet shares (gateway/budgets.py with the
redis backend), sans I/O: the fleet's counter is a fake Redis whose adds land
late, as they do over a slow link, while requests follow one another faster
than that. The real thing (two servers, real Redis behind a slow relay) is
tests/functional/test_budgets.py; these play its races out deterministically."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from fastgate import errors
from fastgate.gateway import budgets as budgets_mod
from fastgate.gateway.budgets import Budgets

COST = 100


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when every task waits: a sleep of any
    length takes no real time, and the order of events is the same on a loaded
    machine as on an idle one."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        real = self._selector  # type: ignore[attr-defined]
        loop = self

        class Selector:
            def select(self, timeout: float | None = None) -> Any:
                if timeout:
                    loop.now += timeout
                return real.select(0)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        self._selector = Selector()  # type: ignore[attr-defined]

    def time(self) -> float:
        return self.now


def run(main: Any) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class SlowCounters:
    """The fleet's counters: `add` lands `delay` seconds after it is sent (and
    answers the total then), `read` answers at once what has landed."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.totals: dict[Any, int] = {}
        self.reads = 0

    async def add(self, keys: list[Any], micros: int, seeds: list[int]) -> list[int]:
        await asyncio.sleep(self.delay)
        out = []
        for k, seed in zip(keys, seeds, strict=True):
            self.totals[k] = self.totals.get(k, seed) + micros
            out.append(self.totals[k])
        return out

    async def read(self, keys: list[Any]) -> list[int | None]:
        self.reads += 1
        return [self.totals.get(k) for k in keys]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)


async def serve(b: Budgets, token: Any, upstream: float = 0.0) -> bool:
    """One request of `token` through worker `b`, as the exchange runs it: admission
    (awaiting a fleet read when it asks for one), the upstream's answer (`upstream`
    seconds), then the charge, the answer's end waiting for the fleet's add when
    the charge says so. True if served."""
    try:
        pending = b.admit(token)
        if pending is not None:
            await pending
    except errors.BudgetExceeded:
        return False
    await asyncio.sleep(upstream)
    wait = b.charge(token, COST)
    if wait is not None:
        await wait
    return True


@pytest.fixture(autouse=True)
def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budgets_mod.CLOCK, "offset", 0.0)


def test_a_fresh_read_holds_the_workers_own_charges_still_on_their_way() -> None:
    """The worker's own charges that were far from the budget when made are still
    on their way to the fleet's counter when a later admission, near, reads it:
    the read waits for them, else it would see the fleet's total without them and
    admit a request past the budget."""

    async def main() -> None:
        fleet = SlowCounters(delay=0.05)
        budget = 50 * COST - 1  # fifty requests, not fifty-one
        token = SimpleNamespace(name="app", budgets=(("key", "app", budget, "day"),))
        b = Budgets(counters=fleet)
        k = budgets_mod.current_key("key", "app", "day")
        assert await serve(b, token)  # first: a fresh read (nothing known yet)
        await asyncio.sleep(0.06)  # its add landed: the fleet holds 100
        # Far (more than NEAR_WAIT costs left): the answer does not wait for the add,
        # which is on its way (200 with it).
        assert await serve(b, token)
        assert b.adding
        # The rest of the fleet spends 4000, which the periodic read sees (4100 with
        # the first add), then 800 more that it does not see.
        b.snapshot = SimpleNamespace(tokens={"h": token})
        fleet.totals[k] += 40 * COST
        await b.refresh()
        assert b.spent[k] == 41 * COST
        fleet.totals[k] += 8 * COST
        # Now near: the admission reads the fleet's total, which must hold this
        # worker's add on its way: 100 + 4000 + 800 + 100 = 5000 >= 4999, refused.
        reads = fleet.reads
        assert not await serve(b, token)
        assert fleet.reads == reads + 1
        assert fleet.totals[k] == 50 * COST

    run(main)


UPSTREAM = 0.002  # seconds an upstream takes to answer


@pytest.mark.parametrize("delay", [0.0005, 0.002, 0.005, 0.01, 0.02, 0.05])
def test_two_workers_taking_turns_serve_exactly_the_budget(delay: float) -> None:
    """Two workers of a fleet take sequential requests of one key in turn, over a
    link whose adds land later than the next request comes (the functional test's
    slow relay): exactly the ten requests the budget allows are served, each
    period, whatever the delay (all ten are within NEAR_WAIT costs of the budget:
    every answer waits for its add)."""

    async def main() -> None:
        fleet = SlowCounters(delay)
        token = SimpleNamespace(name="app", budgets=(("key", "app", 10 * COST - 1, "day"),))
        workers = [Budgets(counters=fleet), Budgets(counters=fleet)]
        for day in range(3):
            budgets_mod.CLOCK.offset = day * 86400.0
            served = [await serve(workers[i % 2], token, UPSTREAM) for i in range(14)]
            assert served == [True] * 10 + [False] * 4, (day, served)
            k = budgets_mod.current_key("key", "app", "day")
            await asyncio.sleep(delay + 0.01)  # the adds on their way land
            assert fleet.totals[k] == 10 * COST

    run(main)
