"""File + store config merge, usage row conversion and the migration files."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastgate.config import (
    ChannelConfig,
    GroupConfig,
    PriceConfig,
    TokenConfig,
    generate_key,
    hash_key,
    parse_config,
)
from fastgate.snapshot import build_snapshot
from fastgate.store.base import USAGE_COLUMNS, StoreState, merge, usage_row
from fastgate.store.migrations import latest_version, load_migrations
from fastgate.store.usage import new_uid
from fastgate.vocab.record import RECORD_FIELDS, UsageRecord

FILE_KEY = generate_key()


def file_config() -> Any:
    return parse_config(
        {
            "channels": [
                {
                    "name": "shared",
                    "type": "openai",
                    "base_url": "https://file.example.com",
                    "models": ["m-file"],
                }
            ],
            "tokens": [{"name": "app", "key": FILE_KEY}],
            "prices": [{"model": "m-file", "input": 1.0, "output": 2.0}],
            "groups": [{"name": "default", "ratio": 1.0}],
        }
    )


def test_store_entries_are_added_and_file_wins_on_clash(caplog: pytest.LogCaptureFixture) -> None:
    cfg = file_config()
    store_key = generate_key()
    state = StoreState(
        version=9,
        channels=[
            ChannelConfig(
                name="shared", type="openai", base_url="https://s.example", models=("x",)
            ),
            ChannelConfig(name="extra", type="mock", models=("m-store",)),
        ],
        tokens=[
            TokenConfig(name="app", key=generate_key()),  # same name as the file's
            TokenConfig(name="dup-key", key=FILE_KEY),  # same key as the file's
            TokenConfig(name="new", key=store_key, quota_usd=3.0),
        ],
        prices=[PriceConfig(model="m-file", input=99.0), PriceConfig(model="m-store", input=5.0)],
        groups=[GroupConfig(name="default", ratio=7.0), GroupConfig(name="vip", ratio=0.5)],
    )
    with caplog.at_level(logging.WARNING, logger="fastgate.store"):
        merged = merge(cfg, state)

    assert [c.name for c in merged.channels] == ["shared", "extra"]
    assert merged.channels[0] is cfg.channels[0]  # the file's entry, untouched
    assert [t.name for t in merged.tokens] == ["app", "new"]
    assert merged.tokens[0].sha256 == hash_key(FILE_KEY)
    assert {p.model: p.input for p in merged.prices} == {"m-file": 1.0, "m-store": 5.0}
    assert {g.name: g.ratio for g in merged.groups} == {"default": 1.0, "vip": 0.5}
    # everything else is the file's config
    assert merged.server == cfg.server and merged.database == cfg.database
    # one warning per ignored store entry, naming it
    text = caplog.text
    for what in ('channel "shared"', 'token "app"', 'token "dup-key"', 'price "m-file"'):
        assert what in text
    assert 'group "default"' in text
    assert len([r for r in caplog.records if "ignored" in r.getMessage()]) == 5

    snap = build_snapshot(merged, state.version)
    assert "extra" in snap.channels
    assert snap.tokens[hash_key(store_key)].quota_micros == 3_000_000
    assert snap.group_ratio["vip"] == 500_000


def test_merge_collects_warnings_when_asked() -> None:
    cfg = file_config()
    state = StoreState(version=1, groups=[GroupConfig(name="default", ratio=2.0)])
    msgs: list[str] = []
    merged = merge(cfg, state, warnings=msgs)
    assert len(msgs) == 1 and "default" in msgs[0]
    assert merged.groups == cfg.groups


def test_merge_without_store_entries_is_the_file_config() -> None:
    cfg = file_config()
    merged = merge(cfg, StoreState(version=1))
    assert merged == cfg


# --------------------------------------------------------------------------- usage rows


def record(**kw: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "ts": 1700000000.25,
        "request_id": "req-1",
        "key_name": "app",
        "group": "g1",
        "ingress": "openai",
        "channel": "c",
        "provider": "openai",
        "model": "m",
        "upstream_model": "m-up",
        "stream": True,
        "status": 200,
        "error_code": "",
        "prompt_tokens": 11,
        "completion_tokens": 22,
        "cached_tokens": 3,
        "cache_write_tokens": 4,
        "estimated": False,
        "cost_micros": 555,
        "latency_ms": 1.5,
        "ttfb_ms": 0.5,
        "attempts": 2,
        "client_ip": "10.1.2.3",
        "tag": "run-7",
        "cache_hit": True,
        "uid": "u-1",
    }
    base.update(kw)
    return UsageRecord(**base)


def test_usage_columns_cover_every_record_field() -> None:
    names = [f.name for f in dataclasses.fields(UsageRecord)]
    expected = {"group_name" if n == "group" else n for n in names}
    assert set(USAGE_COLUMNS) == expected
    assert len(USAGE_COLUMNS) == len(names)


def test_usage_row_from_record_and_dict_agree() -> None:
    rec = record()
    as_dict = {f.name: getattr(rec, f.name) for f in dataclasses.fields(UsageRecord)}
    row = usage_row(rec)
    assert row == usage_row(as_dict) == usage_row(as_dict, coerce=True)
    by_col = dict(zip(USAGE_COLUMNS, row, strict=True))
    assert by_col["group_name"] == "g1" and by_col["uid"] == "u-1"
    assert by_col["cost_micros"] == 555 and by_col["tag"] == "run-7"


def test_usage_row_from_a_record_tuple_agrees() -> None:
    """The data plane's tuple (RECORD_FIELDS order) gives the same row as the other forms."""
    rec = record()
    as_tuple = tuple(getattr(rec, f) for f in RECORD_FIELDS)
    row = usage_row(rec)
    assert usage_row(as_tuple) == row == usage_row(as_tuple, coerce=True)
    assert usage_row(list(as_tuple)) == row  # a tuple read back from JSON
    # coerce=True (the retry of a rejected batch) and a short tuple convert each
    # value to its column's type, as for a partial dict.
    bad = list(as_tuple)
    bad[RECORD_FIELDS.index("status")] = "200"
    coerced = dict(zip(USAGE_COLUMNS, usage_row(tuple(bad), coerce=True), strict=True))
    assert coerced["status"] == 200
    short = dict(zip(USAGE_COLUMNS, usage_row(as_tuple[:12]), strict=True))
    assert short["status"] == 200 and short["prompt_tokens"] == 0 and short["tag"] == ""
    assert re.fullmatch(r"[0-9a-f]{24}", short["uid"])


def test_usage_row_coerces_partial_and_bad_dicts() -> None:
    row = dict(
        zip(
            USAGE_COLUMNS,
            usage_row({"ts": "12.5", "status": None, "prompt_tokens": 2**80, "stream": 1}),
            strict=True,
        )
    )
    assert row["ts"] == 12.5 and row["status"] == 0
    assert row["prompt_tokens"] == 2**63 - 1
    assert row["stream"] is True and row["tag"] == "" and row["cache_hit"] is False
    assert re.fullmatch(r"[0-9a-f]{24}", row["uid"])  # a fresh uid for a record without one


def test_usage_row_assigns_distinct_uids() -> None:
    a = usage_row(record(uid=""))
    b = usage_row(record(uid=""))
    assert a[0] and b[0] and a[0] != b[0]


def test_fresh_uids_are_time_ordered_and_distinct_across_a_fork() -> None:
    """uid = milliseconds since the epoch (11 hex digits) + 52 random bits: rows of
    a batch land on the last leaves of the uid index (bench/RESULTS.md, "Time-ordered
    uids"), and two forked workers draw different random parts."""
    before = time.time_ns() // 1_000_000
    uids = []
    for _ in range(2_000):
        uids.append(new_uid())
        if len(uids) % 500 == 0:
            time.sleep(0.002)  # a few milliseconds apart: the prefix must grow
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{24}", u) for u in uids)
    assert len(set(uids)) == len(uids)
    millis = [int(u[:11], 16) for u in uids]
    assert millis == sorted(millis) and before <= millis[0] and millis[-1] <= after
    assert millis[-1] > millis[0]
    # Across milliseconds the uids sort as they were made.
    firsts = [uids[i] for i in (0, 500, 1000, 1500)]
    assert firsts == sorted(firsts)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its random state is reseeded at fork
        os.write(w, "".join(new_uid() for _ in range(50)).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    os.close(r)
    mine = {new_uid()[11:] for _ in range(50)}
    theirs = {child[i + 11 : i + 24] for i in range(0, len(child), 24)}
    assert len(theirs) == 50 and not mine & theirs


# --------------------------------------------------------------------------- migrations


def _tables(sql: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
        cols = []
        for line in m.group(2).splitlines():
            line = line.strip()
            if line and not line.startswith("--"):
                cols.append(line.split()[0])
        out[m.group(1)] = cols
    return out


def test_both_dialects_define_the_same_tables_and_columns() -> None:
    sqlite_migs = load_migrations("sqlite")
    pg_migs = load_migrations("postgres")
    assert [m.version for m in sqlite_migs] == [m.version for m in pg_migs]
    assert latest_version("sqlite") == latest_version("postgres") == len(pg_migs) >= 1
    for a, b in zip(sqlite_migs, pg_migs, strict=True):
        assert a.name == b.name
        assert _tables(a.sql) == _tables(b.sql)
        assert sorted(re.findall(r"CREATE INDEX (\w+)", a.sql)) == sorted(
            re.findall(r"CREATE INDEX (\w+)", b.sql)
        )
    tables = _tables(pg_migs[0].sql)
    for t in (
        "channels",
        "tokens",
        "prices",
        "groups",
        "usage_records",
        "quota_usage",
        "config_version",
    ):
        assert t in tables
    # usage_records as created, then the columns later migrations ADD.
    columns = list(tables["usage_records"])
    for m in pg_migs[1:]:
        columns += re.findall(r"ALTER TABLE usage_records ADD COLUMN (\w+)", m.sql)
    assert columns == list(USAGE_COLUMNS)
    for a, b in zip(sqlite_migs, pg_migs, strict=True):
        added = r"ALTER TABLE (\w+) ADD COLUMN (\w+)"
        assert re.findall(added, a.sql) == re.findall(added, b.sql)


def test_sqlite_migrations_run_on_a_blank_database() -> None:
    con = sqlite3.connect(":memory:")
    for mig in load_migrations("sqlite"):
        con.executescript(mig.sql)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"channels", "tokens", "usage_records", "quota_usage"} <= names
    assert con.execute("SELECT version FROM config_version").fetchone() == (1,)


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError):
        load_migrations("mysql")


def test_store_modules_import_alone_without_cycles() -> None:
    """base.py loads no backend (store_for imports the one it needs); every store
    module imports on its own, first, in a fresh interpreter (no import cycle)."""
    code = (
        "import sys, fastgate.store.base\n"
        "print(' '.join(m for m in ('fastgate.store.sqlite', 'fastgate.store.postgres',"
        " 'fastgate.store.sql', 'asyncpg') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == []
    for mod in ("sql", "sqlite", "postgres", "kinds", "quota", "usage", "bridge", "merge"):
        subprocess.run([sys.executable, "-c", f"import fastgate.store.{mod}"], check=True, cwd=root)
