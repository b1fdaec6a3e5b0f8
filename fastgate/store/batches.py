"""Usage-record queries about batch output files billed at download.

A mixin of `SQLStore` (both backends). The gateway bills a batch's results when
a client downloads its output file (`gateway/batch_billing.py`), writing one
record per model with the deterministic uid `batch:<file_id>:<model>`; before
it bills, it asks here whether those records exist (an earlier download, on
any worker or instance, or before a restart). An exact match on the primary
key: one indexed look-up per uid, off the data plane.
"""

from __future__ import annotations

from collections.abc import Sequence


class BatchQueries:
    async def uids_present(self, uids: Sequence[str]) -> int:
        """How many of `uids` the usage records hold."""
        if not uids:
            return 0
        marks = ", ".join(f"${i + 1}" for i in range(len(uids)))
        sql = f"SELECT COUNT(*) FROM usage_records WHERE uid IN ({marks})"
        async with self._tx(write=False) as tx:  # type: ignore[attr-defined]
            return int(await tx.fetchval(sql, *uids))
