"""Budgets: spend allowed per key or per group (a team) per UTC day, week or month.

A key is refused with 402 `budget_exceeded` once the current period's spend of
any of its budgets (its own, its group's) reaches the budget; the next period
starts from zero. A subject's spend in a period is counted under the key
`(kind, name, period, period start)`, so a new period needs no reset.

`spent[key]` is this worker's best knowledge of the fleet's total for the
period. Every source is a lower bound of the truth, so it only ever grows (the
max of them): this worker's own charges (at once), the store's totals plus the
charges not yet written (`store/budget.py` BudgetSync, every 0.5 s: durable,
and the only sharing without Redis), and with the redis backend a counter per
key (`fleet/budgets.py`): INCRBY at the end of each request (the reply is the
fleet's total) and a read of every budget's counter every `REFRESH` seconds.

Admission reads only `spent`: no round trip while the spend is far from the
budget. Near it (what is left is within `NEAR` times the subject's last request
cost, plus twice what the rest of the fleet was seen spending between two
observations, or the worker has not charged the subject yet this period) the
admission reads the fleet's counters first (`ctx.pending`, awaited by the
exchange), once this worker's own adds still on their way have landed: the
cap is then exact across the fleet, overspend bounded by the requests in
flight. The answers wait for their own add in a wider zone (`NEAR_WAIT`
times the last cost from the budget): by the time an admission reads the
fleet's total, the adds of the requests answered before it have landed,
unless the copies lag by more than that many requests. A Redis outage
follows `[ratelimit] on_redis_error`: "open" decides on `spent`, "closed"
answers 503 when a round trip was needed.

Thresholds (the `budget` webhook): every `REFRESH` seconds, when `on_threshold`
is set, the loop compares each budget's `spent` with 80 % and 100 % of it and
calls `on_threshold` once per threshold per period (`told`), in order: off the
hot path, whoever's spend (this worker's, the store's, the fleet's) crossed it.

`CLOCK` is the budgets' UTC clock. For tests only, `FASTGATE_TEST_CLOCK_FILE`
names a file holding an offset in seconds that is added to the system time
(re-read at every reading of the clock, so that every process of a fleet is in
the next period from the moment a test moves it: a re-read every `REFRESH`
seconds lagged by more than a second on a loaded machine, behind the refresh
loop's Redis round trips).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from fastgate import errors
from fastgate.metrics import declare
from fastgate.vocab.periods import period_bounds

log = logging.getLogger("fastgate.gateway")

REFRESH = 0.5  # seconds between reads of the fleet's counters (redis backend)
NEAR = 4  # a fresh read when what is left is within NEAR x the last request's cost
# The answer waits for its add when what is left after it is within NEAR_WAIT x its
# cost (plus the margin): a zone wider than the reads', so that a read finds the
# adds of every request answered before it landed. Why wider: an add that did not
# wait may still be on its way when the next request, on another instance, reads;
# the copies decide "near" and they lag (CI served 11 of 10 with NEAR for both,
# over a slowed link, with requests quicker than its adds).
NEAR_WAIT = 32
THRESHOLDS = (80, 100)  # percent of a budget announced by on_threshold

REFUSED = declare("fastgate_budget_exceeded_total", "Requests refused with 402 budget_exceeded.")
FRESH_READS = declare(
    "fastgate_budget_fresh_reads_total",
    "Admissions that read the fleet's budget counters first (spend near a budget).",
)

Key = tuple[str, str, str, int]  # (kind, name, period, period start)


class Clock:
    """UTC seconds for budget periods; `offset` moves it (tests only)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.path = os.environ.get("FASTGATE_TEST_CLOCK_FILE", "")
        self.refresh()

    def refresh(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                self.offset = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass

    def now(self) -> float:
        if self.path:  # tests only (a file read a call)
            self.refresh()
        return time.time() + self.offset


CLOCK = Clock()


def current_key(kind: str, name: str, period: str, now: float | None = None) -> Key:
    """The counter key of a subject's current period."""
    start, _ = period_bounds(period, CLOCK.now() if now is None else now)
    return (kind, name, period, start)


class Budgets:
    """The budgets of one worker (see the module doc)."""

    def __init__(self, counters: Any = None, fail_open: bool = True, metrics: Any = None) -> None:
        self.counters = counters  # fleet.budgets.RedisBudgets, or None (memory backend)
        self.fail_open = fail_open
        self.metrics = metrics
        self.spent: dict[Key, int] = {}
        self.stored: dict[Key, int] = {}  # the store's totals at the last sync
        self.pending: dict[Key, int] = {}  # charged, not yet written to the store
        self.unsent: dict[Key, int] = {}  # charged, not yet added to Redis (outage)
        self.last: dict[tuple[str, str], int] = {}  # subject -> its last request's cost here
        self.margin: dict[Key, int] = {}  # 2 x the rest of the fleet's spend per observation
        self.adding: set[Any] = set()  # this worker's adds to the fleet's counters in flight
        self.snapshot: Any = None  # set by the App: which budgets exist
        # (kind, name, period, start, budget, spent, percent): a threshold crossed
        self.on_threshold: Any = None
        self.told: dict[Key, int] = {}  # the highest threshold announced per key
        self._listed: Any = None  # the snapshot `_all` was listed from
        self._all: list[tuple[str, str, int, str]] = []  # every (kind, name, budget, period)
        self._bounds: dict[str, tuple[int, int]] = {}  # period -> (start, end) now

    # -- keys ----------------------------------------------------------------------------

    def _start(self, period: str, now: float) -> int:
        b = self._bounds.get(period)
        if b is None or not b[0] <= now < b[1]:
            b = self._bounds[period] = period_bounds(period, now)
            self._forget(b[0], period)
        return b[0]

    def _forget(self, start: int, period: str) -> None:
        """A new period began: drop what this worker kept of the old ones."""
        for d in (self.spent, self.stored, self.margin, self.told):
            for k in [k for k in d if k[2] == period and k[3] < start]:
                del d[k]

    def keys(self, snapshot: Any = None) -> list[Key]:
        """The current period's key of every budget in the snapshot."""
        snap = snapshot if snapshot is not None else self.snapshot
        now = CLOCK.now()
        seen: dict[Key, None] = {}
        for t in snap.tokens.values() if snap is not None else ():
            for kind, name, _, period in t.budgets:
                seen[(kind, name, period, self._start(period, now))] = None
        return list(seen)

    # -- admission -----------------------------------------------------------------------

    def admit(self, token: Any) -> Any:
        """None (admitted), or an awaitable to await first; raises BudgetExceeded."""
        near: list[tuple[Key, int]] | None = None
        for k, budget, left, fresh in self._standing(token):
            if left <= 0:
                self._refuse(k[0], k[1], k[2])
            if fresh:
                if near is None:
                    near = []
                near.append((k, budget))
        if near is None:
            return None
        return self._fresh(near)

    def clear(self, token: Any) -> bool:
        """Would `admit` admit `token` at once: some of every budget left here, and
        none near enough that the fleet's total must be read first? Counts and
        raises nothing (the fast path asks, and leaves the rest to admission)."""
        return all(left > 0 and not fresh for _, _, left, fresh in self._standing(token))

    def _standing(self, token: Any) -> Iterator[tuple[Key, int, int, bool]]:
        """Per budget of `token`: its key this period, the budget, what is left of it
        here, and whether admission must read the fleet's total fresh first."""
        now = CLOCK.now()
        spent = self.spent
        counters = self.counters
        for kind, name, budget, period in token.budgets:
            k = (kind, name, period, self._start(period, now))
            left = budget - spent.get(k, 0)
            fresh = False
            if counters is not None:
                last = self.last.get((kind, name))
                fresh = last is None or self._near(k, left, last)
            yield k, budget, left, fresh

    def _near(self, k: Key, left: int, last: int, near: int = NEAR) -> bool:
        """Is what is left of `k` close enough that the fleet's total must be read
        fresh (admission, `NEAR`), or the answer wait for its own add (charge,
        `NEAR_WAIT`)?"""
        return left <= near * last + self.margin.get(k, 0)

    def _refuse(self, kind: str, name: str, period: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(REFUSED)
        whose = "this API key" if kind == "key" else f'the group "{name}" of this API key'
        raise errors.BudgetExceeded(
            f"the {period}ly budget of {whose} is used up; it starts again next {period} (UTC)"
            if period != "day"
            else f"the daily budget of {whose} is used up; it starts again tomorrow (UTC)"
        )

    async def _fresh(self, near: list[tuple[Key, int]]) -> tuple[bytes, Any]:
        """Read the fleet's totals of `near`, then decide (the `(headers, ticket)` shape
        of an admission's pending step)."""
        if self.metrics is not None:
            self.metrics.inc(FRESH_READS)
        if self.adding:  # this worker's own charges first: the read must hold them
            await asyncio.wait(list(self.adding))
        try:
            totals = await self.counters.read([k for k, _ in near])
        except errors.SharedStateUnavailable:
            if not self.fail_open:
                raise errors.ServiceUnavailable(
                    "budgets cannot be checked (shared state unavailable)"
                ) from None
            totals = [None] * len(near)
        for (k, budget), total in zip(near, totals, strict=True):
            if total is not None:
                self._saw(k, int(total))
            if self.spent.get(k, 0) >= budget:
                self._refuse(k[0], k[1], k[2])
        return b"", None

    # -- spend ---------------------------------------------------------------------------

    def charge(self, token: Any, micros: int) -> Any:
        """A request of `token` cost `micros`: count it against each of its budgets.

        Returns the fleet counters' add (a task) when a budget is within
        `NEAR_WAIT` costs after this charge (admissions read the fleet's total
        fresh within `NEAR`): the answer's last bytes wait for it
        (`ResponseWriter.end`), so a client that sends its next request the
        moment it has this answer, to any instance, is admitted on a total that
        holds this cost. Else None (the add runs behind)."""
        now = CLOCK.now()
        keys = []
        knew = []
        near = False
        spent = self.spent
        for kind, name, budget, period in token.budgets:
            k = (kind, name, period, self._start(period, now))
            spent[k] = total = spent.get(k, 0) + micros
            self.pending[k] = self.pending.get(k, 0) + micros
            self.last[(kind, name)] = micros
            keys.append(k)
            knew.append(total)
            if self._near(k, budget - total, micros, NEAR_WAIT):
                near = True
        if self.counters is not None and keys:
            task = self.counters.spawn(self._add(keys, micros, knew))
            adding = self.adding
            adding.add(task)
            task.add_done_callback(adding.discard)
            return task if near else None
        return None

    async def _add(self, keys: list[Key], micros: int, knew: list[int]) -> None:
        """Add a charge to the fleet's counters; `knew` is what this worker knew of
        each total with the charge in it, when it sent the add."""
        seeds = [self.stored.get(k, 0) for k in keys]
        try:
            totals = await self.counters.add(keys, micros, seeds)
        except errors.SharedStateUnavailable:
            for k in keys:
                self.unsent[k] = self.unsent.get(k, 0) + micros
            return
        for k, total, before in zip(keys, totals, knew, strict=True):
            self._saw(k, int(total), before)

    def _saw(self, k: Key, total: int, knew: int | None = None) -> None:
        """The fleet's total for `k` is `total`. What exceeds what this worker knew
        when it asked (`knew`, else what it knows now) the rest of the fleet spent
        unseen: twice that is the margin that admission allows for until the next
        look (an add's reply measured against the knowledge at its sending, not at
        its reply: this worker's own charges sent since would hide the others')."""
        spent = self.spent.get(k, 0)
        others = total - (spent if knew is None else knew)
        if total > spent:
            self.spent[k] = total
        if others > 0 and 2 * others > self.margin.get(k, 0):
            self.margin[k] = 2 * others

    def synced(self, totals: dict[Key, int]) -> None:
        """The store's totals after a write-behind sync (BudgetSync)."""
        for k, total in totals.items():
            self.stored[k] = total
            best = total + self.pending.get(k, 0)
            if best > self.spent.get(k, 0):
                self.spent[k] = best

    def take_pending(self) -> dict[Key, int]:
        batch, self.pending = self.pending, {}
        return batch

    def restore_pending(self, batch: dict[Key, int]) -> None:
        for k, v in batch.items():
            self.pending[k] = self.pending.get(k, 0) + v

    # -- background ------------------------------------------------------------------------

    def check_thresholds(self) -> None:
        """Tell `on_threshold` of each budget whose spend crossed 80 % or 100 % of it
        since the last look (each threshold once per period)."""
        snap = self.snapshot
        if snap is None:
            return
        if self._listed is not snap:  # the budgets of a new snapshot, each once
            self._listed = snap
            self._all = list({b: None for t in snap.tokens.values() for b in t.budgets})
        now = CLOCK.now()
        spent, told = self.spent, self.told
        for kind, name, budget, period in self._all:
            k = (kind, name, period, self._start(period, now))
            s = spent.get(k, 0)
            if s <= 0 or 100 * s < THRESHOLDS[0] * budget:
                continue
            done = told.get(k, 0)
            for pct in THRESHOLDS:
                if pct > done and 100 * s >= pct * budget:
                    told[k] = pct
                    self.on_threshold(kind, name, period, k[3], budget, s, pct)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            if self.counters is not None:
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("budget refresh failed: %s", exc)
            if self.on_threshold is not None:
                try:
                    self.check_thresholds()
                except Exception:
                    log.exception("budget thresholds check failed")

    async def refresh(self) -> None:
        """Add what an outage held back, then read every budget's fleet total."""
        for k, micros in list(self.unsent.items()):
            del self.unsent[k]
            try:
                (total,) = await self.counters.add([k], micros, [self.stored.get(k, 0)])
            except errors.SharedStateUnavailable:
                self.unsent[k] = self.unsent.get(k, 0) + micros
                return
            self._saw(k, int(total))
        keys = self.keys()
        if not keys:
            return
        try:
            totals = await self.counters.read(keys)
        except errors.SharedStateUnavailable:
            return
        margin = {}
        old = self.margin
        for k, total in zip(keys, totals, strict=True):
            kept = old.get(k, 0) // 2  # an old burst ages out, halving at every look
            if total is not None:
                grew = int(total) - self.spent.get(k, 0)
                if grew > 0:
                    self.spent[k] = int(total)
                    kept = max(kept, 2 * grew)
            if kept:
                margin[k] = kept
        self.margin = margin

    def start(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
        return [loop.create_task(self._refresh_loop())]
