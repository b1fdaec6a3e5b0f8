"""Budget write-behind: the spend charged against budgets on the data plane,
written to the store in the background (atomic increments, totals back).

Why the store: a period's spend must survive a restart, and without Redis it is
what instances share (bounded by one sync interval). Like QuotaSync: every
`interval` seconds the deltas charged since the last sync are added in one
transaction that also reads back the current period's total of every budget in
the snapshot; `budgets.synced` keeps the larger of what it knew and the total
plus what was charged meanwhile. A failed sync keeps its deltas for the next.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastgate.store.quota import WriteBehind

if TYPE_CHECKING:
    from fastgate.store.base import Store

__all__ = ["BudgetSync"]

log = logging.getLogger("fastgate.store")


class BudgetSync(WriteBehind):
    """Runs on the data plane's loop; `budgets` is the App's `gateway.budgets.Budgets`."""

    what = "budget spend"

    def __init__(self, store: Store, budgets: Any, interval: float = 0.5) -> None:
        self.store = store
        self.budgets = budgets
        self.interval = interval
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._last_warn = 0.0

    async def sync(self, snapshot: Any = None) -> None:
        """Write the deltas, read back the totals of every budget of `snapshot` (the
        one serving, by default: a snapshot about to serve can be given)."""
        budgets = self.budgets
        batch = budgets.take_pending()
        keys = list(dict.fromkeys([*budgets.keys(snapshot), *batch]))
        if not keys:
            return
        try:
            totals = await self.store.call(self.store.sync_budgets(batch, keys))
        except BaseException:
            budgets.restore_pending(batch)
            raise
        budgets.synced(totals)

    def unsaved(self) -> dict[str, int]:
        return self.budgets.pending
