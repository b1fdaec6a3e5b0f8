"""The usage schema: the usage_records column order, value coercion, record uids.

Records reach the store in three shapes: tuples in `RECORD_FIELDS` order (what
the data plane builds: see fastgate/vocab/record.py), dicts with the field
names (spool files, the admin and tests) and UsageRecord objects. `usage_row`
turns any of them into one row tuple in USAGE_COLUMNS order, the order both
backends insert in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from operator import attrgetter, itemgetter
from random import getrandbits
from time import time_ns
from typing import Any

from fastgate.vocab.record import FIELD_INDEX, RECORD_FIELDS, UID

__all__ = ["USAGE_COLUMNS", "new_uid", "usage_row", "with_uid"]

# Table column order; `group_name` holds UsageRecord.group.
USAGE_COLUMNS: tuple[str, ...] = (
    "uid",
    "ts",
    "request_id",
    "key_name",
    "group_name",
    "ingress",
    "channel",
    "provider",
    "model",
    "upstream_model",
    "stream",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "estimated",
    "cost_micros",
    "latency_ms",
    "ttfb_ms",
    "attempts",
    "client_ip",
    "tag",
    "cache_hit",
    "unpriced",
    "router",
    "service_tier",
    "gateway_ms",
)
_RECORD_ATTRS = tuple("group" if c == "group_name" else c for c in USAGE_COLUMNS)
if sorted(_RECORD_ATTRS) != sorted(RECORD_FIELDS):  # pragma: no cover - a schema edit
    raise ImportError("USAGE_COLUMNS and vocab.record.RECORD_FIELDS name different fields")
_get_row = attrgetter(*_RECORD_ATTRS)
_get_dict_row = itemgetter(*_RECORD_ATTRS)
# A record tuple (RECORD_FIELDS order) -> a row (USAGE_COLUMNS order): one C call.
_TUPLE_INDEX = tuple(FIELD_INDEX[a] for a in _RECORD_ATTRS)
_get_tuple_row = itemgetter(*_TUPLE_INDEX)
_NFIELDS = len(RECORD_FIELDS)
_SEQUENCES = (tuple, list)  # a list: a record tuple that went through JSON (spool)
_INT64 = (1 << 63) - 1
_KINDS_OF_COLUMN: dict[str, type] = {
    "ts": float,
    "stream": bool,
    "status": int,
    "prompt_tokens": int,
    "completion_tokens": int,
    "cached_tokens": int,
    "cache_write_tokens": int,
    "estimated": bool,
    "cost_micros": int,
    "latency_ms": float,
    "ttfb_ms": float,
    "attempts": int,
    "cache_hit": bool,
    "unpriced": bool,
    "gateway_ms": float,
}
_COLUMN_TYPES = tuple(_KINDS_OF_COLUMN.get(c, str) for c in USAGE_COLUMNS)
_ATTR_TYPES = tuple(zip(_RECORD_ATTRS, _COLUMN_TYPES, strict=True))


def new_uid() -> str:
    """A fresh record uid (for records that arrive without one): 24 hex digits,
    the milliseconds since the epoch (11) then 52 random bits (13).

    Why time first: `uid` is the table's unique key, so every insert also goes
    into its index. Random uids (`os.urandom(12).hex()` until 2026-12-06) put each
    row on a random leaf of that index: once the index outgrows the writer's page
    cache, every row read a page and dirtied one for the WAL, and the writer's CPU
    per record doubled (`bench/bench_writer.py --uids random`: bench/RESULTS.md,
    "Stop 21"). Ordered by time, the rows of a batch land on the last few leaves,
    as the data plane's own uids do (its records carry the request id, a
    per-process prefix and a counter: `App.new_request_id`). Unique without
    coordination: 52 random bits per millisecond (`random` reseeds in a forked
    child; no system call, unlike `os.urandom`)."""
    return ((time_ns() // 1_000_000 << 52) | getrandbits(52)).to_bytes(12, "big").hex()


def _coerce(kind: type, value: Any) -> Any:
    if kind is str:
        return value if type(value) is str else ("" if value is None else str(value))
    if kind is bool:
        return bool(value)
    if kind is int:
        try:
            v = int(value)
        except (TypeError, ValueError, OverflowError):
            return 0
        return v if -_INT64 <= v <= _INT64 else (_INT64 if v > 0 else -_INT64)
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def usage_row(record: Any, coerce: bool = False) -> tuple[Any, ...]:
    """A usage record as a row tuple in USAGE_COLUMNS order.

    `record` is a tuple (or list) in RECORD_FIELDS order (what the data plane
    builds), a dict with the field names (what a spool file holds) or a
    UsageRecord. Values are taken as they are (the gateway builds them with the
    right types) unless `coerce` is set or a field is missing (a tuple of the
    wrong length counts as missing fields): then each value is converted to its
    column's type (missing or unusable -> "", 0, False). A missing uid gets a fresh one, which makes that
    record non-idempotent: the log sink assigns uids before anything is written.
    """
    row: tuple[Any, ...] | None = None
    seq = type(record) in _SEQUENCES
    if not coerce:
        try:
            if seq:
                if len(record) == _NFIELDS:
                    row = _get_tuple_row(record)
            elif type(record) is dict:
                row = _get_dict_row(record)
            else:
                row = _get_row(record)
        except (KeyError, AttributeError, TypeError):
            row = None
    if row is None:
        if seq:
            n = len(record)

            def get(name: str) -> Any:
                i = FIELD_INDEX[name]
                return record[i] if i < n else None

        elif isinstance(record, Mapping):
            get = record.get
        else:

            def get(name: str) -> Any:
                return getattr(record, name, None)

        values = []
        for attr, kind in _ATTR_TYPES:
            v = get(attr)
            ok = type(v) is kind and (kind is not int or -_INT64 <= v <= _INT64)
            values.append(v if ok else _coerce(kind, v))
        row = tuple(values)
    if not row[0]:
        row = (new_uid(), *row[1:])
    return row


def with_uid(r: Any) -> Any:
    """The record with a uid (given before anything can write it twice, so that a
    replay is idempotent): a tuple is rebuilt, a list, dict or object filled in."""
    t = type(r)
    if t is tuple:
        return r if r[UID] else (*r[:UID], new_uid(), *r[UID + 1 :])
    if t is list:  # a record tuple, as JSON brings it back
        if not r[UID]:
            r[UID] = new_uid()
    elif isinstance(r, dict):
        if not r.get("uid"):
            r["uid"] = new_uid()
    elif not getattr(r, "uid", None):
        r.uid = new_uid()
    return r
