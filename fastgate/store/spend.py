"""Quota and budget spend in the store: a mixin of `SQLStore` (both backends).

Each instance adds what it charged as atomic increments (`INSERT ... ON
CONFLICT DO UPDATE`, rows in sorted order so that concurrent instances lock
them in the same order) and reads the totals back in the same transaction: the
quota of each token (`quota_usage`) and the spend of each budget subject and
period (`budget_spend`). Control-plane work, batched by the gateway; never on
the data plane.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SpendQueries"]


class SpendQueries:
    _tx: Any  # SQLStore's transaction context (write=True|False)

    # -- quotas -------------------------------------------------------------------------

    _QUOTA_UPSERT = (
        "INSERT INTO quota_usage (token_name, used_micros, updated_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (token_name) DO UPDATE SET "
        "used_micros = quota_usage.used_micros + excluded.used_micros, "
        "updated_at = excluded.updated_at"
    )

    async def _add_deltas(self, tx: Any, deltas: Mapping[str, int]) -> None:
        now = time.time()
        # Sorted: concurrent instances lock rows in the same order (no deadlock).
        rows = [(k, int(v), now) for k, v in sorted(deltas.items()) if v]
        if rows:
            await tx.executemany(self._QUOTA_UPSERT, rows)

    async def add_quota_deltas(self, deltas: Mapping[str, int]) -> None:
        """Add micro-dollars to each token's used quota: atomic increments, never lost."""
        if not any(deltas.values()):
            return
        async with self._tx(write=True) as tx:
            await self._add_deltas(tx, deltas)

    async def sync_quota(self, deltas: Mapping[str, int]) -> dict[str, int]:
        """Add `deltas`, then return every token's total used, in one transaction."""
        async with self._tx(write=True) as tx:
            await self._add_deltas(tx, deltas)
            rows = await tx.fetch("SELECT token_name, used_micros FROM quota_usage")
        return {r["token_name"]: int(r["used_micros"]) for r in rows}

    async def quota_used(self) -> dict[str, int]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT token_name, used_micros FROM quota_usage")
        return {r["token_name"]: int(r["used_micros"]) for r in rows}

    async def reset_quota(self, token_name: str) -> None:
        """Forget a token's used quota (admin action)."""
        async with self._tx(write=True) as tx:
            await tx.execute("DELETE FROM quota_usage WHERE token_name = $1", token_name)

    # -- budgets ------------------------------------------------------------------------

    _BUDGET_UPSERT = (
        "INSERT INTO budget_spend (subject_kind, subject_name, period, period_start, "
        "spent_micros, updated_at) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (subject_kind, subject_name, period, period_start) DO UPDATE SET "
        "spent_micros = budget_spend.spent_micros + excluded.spent_micros, "
        "updated_at = excluded.updated_at"
    )

    async def _budget_totals(self, tx: Any, keys: Sequence[tuple[str, str, str, int]]) -> dict:
        if not keys:
            return {}
        wanted = set(keys)
        rows = await tx.fetch(
            "SELECT subject_kind, subject_name, period, period_start, spent_micros "
            "FROM budget_spend WHERE period_start >= $1",
            min(k[3] for k in keys),
        )
        out = {}
        for r in rows:
            k = (r["subject_kind"], r["subject_name"], r["period"], int(r["period_start"]))
            if k in wanted:
                out[k] = int(r["spent_micros"])
        return out

    async def sync_budgets(
        self,
        deltas: Mapping[tuple[str, str, str, int], int],
        keys: Sequence[tuple[str, str, str, int]],
    ) -> dict[tuple[str, str, str, int], int]:
        """Add `deltas` (key: (subject kind, name, period, period start) -> micro-dollars)
        as atomic increments, then return the totals of `keys`, in one transaction."""
        now = time.time()
        rows = [(*k, int(v), now) for k, v in sorted(deltas.items()) if v]
        async with self._tx(write=True) as tx:
            if rows:
                await tx.executemany(self._BUDGET_UPSERT, rows)
            return await self._budget_totals(tx, keys)

    async def budget_spent(
        self, keys: Sequence[tuple[str, str, str, int]]
    ) -> dict[tuple[str, str, str, int], int]:
        """The stored spend of each key (absent: nothing spent)."""
        async with self._tx(write=False) as tx:
            return await self._budget_totals(tx, keys)
