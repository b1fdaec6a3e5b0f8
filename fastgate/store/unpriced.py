"""Usage-record queries about prices: the models served without one.

A mixin of `SQLStore` (both backends): `unpriced_models()` reads the usage
records marked `unpriced` (served, cost 0, docs/contract.md section 5), for `fastgate price
missing` and `GET /admin/prices/missing`. A scan of the table filtered on the
flag: a control-plane query, never on the data plane.
"""

from __future__ import annotations

from typing import Any

_SQL = (
    "SELECT model, COUNT(*) AS requests, MIN(ts) AS first_seen, MAX(ts) AS last_seen "
    "FROM usage_records WHERE unpriced GROUP BY model ORDER BY model"
)


class UnpricedQueries:
    async def unpriced_models(self) -> list[dict[str, Any]]:
        """Every model seen unpriced in the usage records: model, requests, and the
        unix times of the first and last such record."""
        async with self._tx(write=False) as tx:  # type: ignore[attr-defined]
            rows = await tx.fetch(_SQL)
        return [
            {
                "model": r["model"],
                "requests": int(r["requests"]),
                "first_seen": float(r["first_seen"]),
                "last_seen": float(r["last_seen"]),
            }
            for r in rows
        ]
