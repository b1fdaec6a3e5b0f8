"""The store against real databases: SQLite files in temp dirs and Postgres at
127.0.0.1:5432 (a database with a random name per test session, dropped at the
end; every test starts from an empty schema). Under CI=true a missing Postgres
fails these tests instead of skipping them.

The same contract is checked on both backends; Postgres alone gets the
LISTEN/NOTIFY tests and the outage tests (a TCP proxy that is stopped for 10 s,
and pg_terminate_backend while records flow).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fastgate.config import hash_key, parse_config
from fastgate.snapshot import build_snapshot
from fastgate.store.base import (
    Conflict,
    InvalidEntry,
    NotFound,
    QuotaSync,
    SecretKeyMissing,
    Store,
    StoreState,
    merge,
    store_for,
)
from fastgate.store.logsink import LogSink
from fastgate.store.migrations import latest_version
from fastgate.store.postgres import PostgresStore
from fastgate.vocab.record import RECORD_FIELDS
from tests.conftest import require_service

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
ENV = {"FASTGATE_SECRET_KEY": SECRET_KEY}
KEY_RE = re.compile(r"^fg-[A-Za-z0-9_-]{43}$")


# --------------------------------------------------------------------------- fixtures


async def _pg_exec(url: str, *sql: str) -> None:
    con = await asyncpg.connect(url)
    try:
        for s in sql:
            await con.execute(s)
    finally:
        await con.close()


async def _pg_fetch(url: str, sql: str, *args: Any) -> list[Any]:
    con = await asyncpg.connect(url)
    try:
        return await con.fetch(sql, *args)
    finally:
        await con.close()


def pg_fetch(url: str, sql: str, *args: Any) -> list[Any]:
    return asyncio.run(_pg_fetch(url, sql, *args))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh Postgres database for this test session (dropped afterwards)."""
    require_service("Postgres", PG_HOST, PG_PORT)
    name = "fastgate_test_" + secrets.token_hex(5)
    asyncio.run(_pg_exec(PG_ADMIN, f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg_exec(PG_ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database with an empty schema (each test migrates from zero)."""
    asyncio.run(
        _pg_exec(
            pg_database,
            "DROP SCHEMA public CASCADE",
            "CREATE SCHEMA public",
        )
    )
    return pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "state" / "fastgate.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_store() -> Iterator[Callable[..., Store]]:
    """Factory: make_store(url, environ=ENV, start=True) -> a started store, stopped at teardown."""
    stores: list[Store] = []

    def _make(url: str, environ: dict[str, str] | None = None, start: bool = True, **kw: Any):
        s = store_for(url, environ=ENV if environ is None else environ, **kw)
        stores.append(s)
        if start:
            s.start()
        return s

    try:
        yield _make
    finally:
        for s in reversed(stores):
            s.stop()


def raw_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Read the database behind the store's back (what a dump would show)."""
    if url.startswith("sqlite:///"):
        con = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return [tuple(r) for r in con.execute(sql).fetchall()]
        finally:
            con.close()
    return [tuple(r) for r in pg_fetch(url, sql)]


def usage(i: int, **kw: Any) -> dict[str, Any]:
    """A usage record dict shaped like the gateway's."""
    d: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "request_id": f"req-{i}",
        "key_name": f"key-{i % 3}",
        "group": "default",
        "ingress": "openai",
        "channel": f"ch-{i % 2}",
        "provider": "openai",
        "model": ("m-a", "m-b")[i % 2],
        "upstream_model": "up",
        "stream": bool(i % 2),
        "status": 200 if i % 5 else 502,
        "error_code": "" if i % 5 else "upstream_error",
        "prompt_tokens": 10 + i,
        "completion_tokens": 2 * i,
        "cached_tokens": i % 4,
        "cache_write_tokens": i % 3,
        "estimated": False,
        "cost_micros": 1000 + 7 * i,
        "latency_ms": 12.5,
        "ttfb_ms": 1.25,
        "attempts": 1,
        "client_ip": "10.0.0.1",
        "tag": "bench" if i % 4 == 0 else "",
        "cache_hit": False,
        "uid": f"uid-{i:06d}",
        "unpriced": bool(i % 3 == 1),
        "router": "smart" if i % 2 else "",
        "service_tier": "flex" if i % 4 == 3 else "",
        "gateway_ms": 0.25 + i,
    }
    d.update(kw)
    return d


def usage_count(url: str) -> tuple[int, int]:
    rows = raw_rows(url, "SELECT COUNT(*), COUNT(DISTINCT uid) FROM usage_records")
    return int(rows[0][0]), int(rows[0][1])


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --------------------------------------------------------------------------- schema


def test_migrations_applied_once(db_url: str, make_store: Callable[..., Store]) -> None:
    store = make_store(db_url)
    assert store.sync.schema_version() == latest_version()
    assert store.sync.migrate() == 0  # already there
    rows = raw_rows(db_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, latest_version() + 1))
    assert store.sync.version() == 1


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path, make_store: Callable) -> None:
    path = tmp_path / "deep" / "dir" / "fg.db"
    make_store("sqlite:///" + str(path))
    assert path.exists()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_concurrent_migrations_apply_each_version_once(pg_url: str) -> None:
    stores = [store_for(pg_url, environ=ENV) for _ in range(3)]
    errors: list[BaseException] = []

    def start(s: Store) -> None:
        try:
            s.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not errors
        rows = pg_fetch(pg_url, "SELECT version FROM schema_migrations")
        assert sorted(r[0] for r in rows) == list(range(1, latest_version() + 1))
    finally:
        for s in stores:
            s.stop()


# --------------------------------------------------------------------------- channels


CHANNEL = {
    "name": "openai-store",
    "type": "openai",
    "base_url": "https://api.example.com/v1/",
    "api_key": "sk-test-abcdef0123456789",
    "models": ["gpt-4o", "gpt-4o-mini"],
    "model_map": {"gpt-4o": "gpt-4o-2024-08-06"},
    "priority": 3,
    "weight": 7,
    "groups": ["default", "vip"],
    "headers": {"x-team": "eval"},
}


def test_channel_crud(db_url: str, make_store: Callable[..., Store]) -> None:
    store = make_store(db_url)
    created = store.sync.create_channel(CHANNEL)
    assert created["id"] >= 1 and created["source"] == "store"
    assert created["api_key_set"] is True and "api_key" not in created
    assert created["base_url"] == "https://api.example.com"  # normalised like the file's
    assert store.sync.get_channel(created["id"]) == created
    assert store.sync.get_channel("openai-store") == created
    assert store.sync.list_channels() == [created]

    patched = store.sync.update_channel(created["id"], {"priority": 9, "headers": None})
    assert patched["priority"] == 9 and "headers" not in patched
    assert patched["weight"] == 7 and patched["api_key_set"] is True
    assert patched["updated_at"] >= created["updated_at"]

    deleted = store.sync.delete_channel("openai-store")
    assert deleted["id"] == created["id"]
    assert store.sync.list_channels() == []
    with pytest.raises(NotFound):
        store.sync.get_channel(created["id"])
    with pytest.raises(NotFound):
        store.sync.update_channel("nope", {"priority": 1})
    with pytest.raises(NotFound):
        store.sync.delete_channel(12345)


def test_channel_validation_names_the_key(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    v0 = store.sync.version()
    with pytest.raises(InvalidEntry) as info:
        store.sync.create_channel({**CHANNEL, "base_url": "ftp://x", "weight": -1, "bogus": 1})
    problems = info.value.problems
    assert any(p.startswith("channel.base_url:") for p in problems)
    assert any(p.startswith("channel.weight:") for p in problems)
    assert any(p.startswith("channel.bogus:") and "unknown key" in p for p in problems)
    with pytest.raises(InvalidEntry, match=r"channel\.type"):
        store.sync.create_channel({"name": "x", "type": "nope", "models": ["m"]})
    store.sync.create_channel(CHANNEL)
    with pytest.raises(InvalidEntry, match=r"channel\.model_map"):
        store.sync.update_channel(CHANNEL["name"], {"models": ["gpt-4o-mini"]})
    with pytest.raises(Conflict, match="openai-store"):
        store.sync.create_channel(CHANNEL)
    assert store.sync.version() == v0 + 1  # only the successful write counted


def test_channel_loads_like_the_same_toml_entry(db_url: str, make_store: Callable) -> None:
    """A store channel becomes the same ChannelConfig as the TOML entry would."""
    store = make_store(db_url)
    store.sync.create_channel(CHANNEL)
    store.sync.create_channel({"name": "demo", "type": "mock", "delay_ms": 5})
    state = store.sync.load()
    expected = parse_config(
        {"channels": [CHANNEL, {"name": "demo", "type": "mock", "delay_ms": 5}]}
    ).channels
    assert state.channels == list(expected)
    assert state.channels[0].resolve_api_key() == CHANNEL["api_key"]
    assert state.problems == []


def test_secrets_are_encrypted_at_rest_and_never_returned(
    db_url: str, make_store: Callable
) -> None:
    store = make_store(db_url)
    created = store.sync.create_channel(
        {
            "name": "bedrock-1",
            "type": "bedrock",
            "region": "us-east-1",
            "models": ["claude"],
            "access_key_id": "AKIAEXAMPLEKEYID1234",
            "secret_access_key": "very-secret-access-key-value",
        }
    )
    store.sync.create_channel(CHANNEL)
    assert created["access_key_id_set"] is True and created["secret_access_key_set"] is True
    assert created["api_key_set"] is False
    for secret in ("AKIAEXAMPLEKEYID1234", "very-secret-access-key-value", CHANNEL["api_key"]):
        for row in raw_rows(db_url, "SELECT * FROM channels"):
            assert secret not in repr(row)
            for value in row:
                if isinstance(value, bytes | memoryview):
                    assert secret.encode() not in bytes(value)
        assert secret not in repr(store.sync.list_channels())
        assert secret not in repr(store.sync.get_channel("bedrock-1"))
    state = store.sync.load()
    by_name = {c.name: c for c in state.channels}
    assert by_name["bedrock-1"].resolve_secret_access_key() == "very-secret-access-key-value"
    assert "very-secret" not in repr(by_name["bedrock-1"])

    # replace one credential, keep the other; remove the api key entirely
    store.sync.update_channel("bedrock-1", {"access_key_id": "AKIANEWKEY0000000000"})
    store.sync.update_channel(CHANNEL["name"], {"api_key": None, "api_key_env": "OPENAI_KEY"})
    by_name = {c.name: c for c in store.sync.load().channels}
    assert by_name["bedrock-1"].access_key_id == "AKIANEWKEY0000000000"
    assert by_name["bedrock-1"].secret_access_key == "very-secret-access-key-value"
    assert by_name[CHANNEL["name"]].api_key == ""
    assert by_name[CHANNEL["name"]].api_key_env == "OPENAI_KEY"
    assert store.sync.get_channel(CHANNEL["name"])["api_key_set"] is False
    row = raw_rows(db_url, "SELECT secret FROM channels WHERE name = 'openai-store'")[0]
    assert row[0] is None


def test_storing_a_secret_without_the_key_is_refused(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url, environ={})
    v0 = store.sync.version()
    with pytest.raises(SecretKeyMissing, match="FASTGATE_SECRET_KEY"):
        store.sync.create_channel(CHANNEL)
    assert store.sync.list_channels() == [] and store.sync.version() == v0
    # naming an environment variable needs no key
    no_key = {k: v for k, v in CHANNEL.items() if k != "api_key"} | {"api_key_env": "OPENAI_KEY"}
    ch = store.sync.create_channel(no_key)
    with pytest.raises(SecretKeyMissing):
        store.sync.update_channel(ch["id"], {"api_key": "sk-new"})
    assert store.sync.get_channel(ch["id"])["api_key_set"] is False


def test_wrong_secret_key_disables_the_channel(db_url: str, make_store: Callable) -> None:
    make_store(db_url).sync.create_channel(CHANNEL)
    other = make_store(db_url, environ={"FASTGATE_SECRET_KEY": os.urandom(32).hex()})
    state = other.sync.load()
    assert len(state.channels) == 1 and state.channels[0].enabled is False
    assert state.channels[0].api_key == ""
    assert len(state.problems) == 1 and "openai-store" in state.problems[0]
    assert CHANNEL["api_key"] not in state.problems[0]
    missing = make_store(db_url, environ={})
    assert missing.sync.load().channels[0].enabled is False


# --------------------------------------------------------------------------- tokens


def test_token_key_shown_once_and_only_hash_stored(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    tok = store.sync.create_token(
        {
            "name": "app",
            "group": "vip",
            "quota_usd": 12.345678,
            "expires_at": "2031-01-02T03:04:05Z",
            "models": ["gpt-4o"],
            "rpm": 60,
        }
    )
    key = tok["key"]
    assert KEY_RE.match(key)
    assert tok["key_sha256"] == hash_key(key)
    assert tok["quota_micros"] == 12_345_678 and tok["quota_used_micros"] == 0
    assert tok["expires_at"] == "2031-01-02T03:04:05Z"
    again = store.sync.get_token("app")
    assert "key" not in again and again["key_sha256"] == hash_key(key)
    for row in raw_rows(db_url, "SELECT * FROM tokens"):
        assert key not in repr(row)

    state = store.sync.load()
    (tc,) = state.tokens
    expires = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert (tc.name, tc.sha256, tc.group, tc.quota_micros) == (
        "app",
        hash_key(key),
        "vip",
        12345678,
    )
    assert tc.expires_at == expires and tc.models == ("gpt-4o",) and tc.rpm == 60

    snap = build_snapshot(merge(parse_config({}), state), state.version)
    assert snap.tokens[hash_key(key)].quota_micros == 12_345_678

    # an imported key (e.g. from another system) is stored as its hash
    mine = "fg-" + "A" * 43
    imported = store.sync.create_token({"name": "imported", "key": mine, "quota_micros": 5})
    assert imported["key"] == mine and imported["key_sha256"] == hash_key(mine)
    with pytest.raises(Conflict, match="key"):
        store.sync.create_token({"name": "third", "key": mine})
    with pytest.raises(Conflict, match="app"):
        store.sync.create_token({"name": "app"})
    with pytest.raises(InvalidEntry, match=r"token\.key"):
        store.sync.create_token({"name": "bad", "key": "sk-not-ours"})
    with pytest.raises(InvalidEntry, match="quota"):
        store.sync.create_token({"name": "bad", "quota_usd": 1, "quota_micros": 1})


def test_token_patch_semantics(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    tok = store.sync.create_token({"name": "t", "quota_usd": 1.0, "expires_at": 2_000_000_000})
    assert tok["expires_at"] == "2033-05-18T03:33:20Z"
    t2 = store.sync.update_token(tok["id"], {"quota_micros": 250, "enabled": False})
    assert t2["quota_micros"] == 250 and t2["quota_usd"] == 0.00025 and t2["enabled"] is False
    t3 = store.sync.update_token("t", {"quota_usd": None, "expires_at": None})
    assert t3["quota_micros"] == -1 and t3["expires_at"] == ""
    new_key = "fg-" + "B" * 43
    t4 = store.sync.update_token("t", {"key": new_key})
    assert t4["key_sha256"] == hash_key(new_key) and "key" not in t4
    (tc,) = store.sync.load().tokens
    assert tc.sha256 == hash_key(new_key) and tc.enabled is False and tc.expires_at is None


def test_prices_and_groups_round_trip(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    price = {
        "model": "gpt-4o",
        "input": 2.5,
        "output": 10.0,
        "cache_read": 1.25,
        "tiers": [{"up_to": 128000, "input": 2.5, "output": 10.0}, {"input": 5.0, "output": 15.0}],
        "tier_mode": "segmented",
        "batch_multiplier": 0.5,
    }
    alias = {"model": "gpt4", "alias_of": "gpt-4o"}
    p = store.sync.create_price(price)
    assert p["input_micros"] == 2_500_000 and p["cache_write_micros"] is None
    store.sync.create_price(alias)
    store.sync.create_group({"name": "vip", "ratio": 0.8})
    with pytest.raises(InvalidEntry, match=r"price\.alias_of"):
        store.sync.create_price({"model": "x", "alias_of": "y", "input": 1.0})
    state = store.sync.load()
    expected = parse_config({"prices": [price, alias], "groups": [{"name": "vip", "ratio": 0.8}]})
    assert state.prices == list(expected.prices)
    assert state.groups == list(expected.groups)
    store.sync.update_price("gpt-4o", {"output": 12.0, "tiers": None, "tier_mode": None})
    got = store.sync.get_price("gpt-4o")
    assert got["output"] == 12.0 and "tiers" not in got and got["output_micros"] == 12_000_000
    assert store.sync.update_group("vip", {"ratio": 1.5})["ratio"] == 1.5
    store.sync.delete_group("vip")
    assert store.sync.list_groups() == []


def test_upsert_prices_is_one_transaction(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    store.sync.create_price({"model": "a", "input": 1.0})
    v0 = store.sync.version()
    specs = [{"model": "a", "input": 2.0, "output": 3.0}] + [
        {"model": f"m{i}", "input": i / 10, "output": i / 5} for i in range(50)
    ]
    assert store.sync.upsert_prices(specs) == {"created": 50, "updated": 1}
    assert store.sync.version() == v0 + 1
    assert store.sync.get_price("a")["output"] == 3.0
    assert store.sync.get_price("m7")["input_micros"] == 700_000
    with pytest.raises(InvalidEntry, match=r"\[1\] price\.input"):
        store.sync.upsert_prices([{"model": "b"}, {"model": "c", "input": -1}])
    assert len(store.sync.list_prices()) == 51  # nothing of the bad set was written


def test_every_write_bumps_the_version_and_calls_listeners(
    db_url: str, make_store: Callable
) -> None:
    store = make_store(db_url)
    heard: list[int] = []
    store.run(store.listen(heard.append))
    v0 = store.sync.version()
    store.sync.create_group({"name": "g", "ratio": 2.0})
    store.sync.update_group("g", {"ratio": 3.0})
    store.sync.delete_group("g")
    assert store.sync.version() == v0 + 3
    # (Postgres: once from the write itself and once from its NOTIFY)
    assert wait_for(lambda: {v0 + 1, v0 + 2, v0 + 3} <= set(heard), 2), heard
    local = [v for v in heard if v > 0]
    assert local == sorted(local)
    # a second process (another store on the same database) sees it by polling
    other = make_store(db_url)
    assert other.sync.version() == v0 + 3


# --------------------------------------------------------------------------- quotas


def test_quota_increments_are_atomic_across_instances(db_url: str, make_store: Callable) -> None:
    a, b = make_store(db_url), make_store(db_url)
    n, per = 40, {"t1": 3, "t2": 1_000_001}

    def worker(store: Store) -> None:
        for _ in range(n):
            store.sync.add_quota_deltas(per)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expected = {k: 4 * n * v for k, v in per.items()}
    assert a.sync.quota_used() == expected == b.sync.quota_used()
    assert a.sync.sync_quota({"t1": 1}) == {**expected, "t1": expected["t1"] + 1}
    a.sync.reset_quota("t1")
    assert b.sync.quota_used() == {"t2": expected["t2"]}


def test_quota_sync_brings_other_instances_usage_back(db_url: str, make_store: Callable) -> None:
    a, b = make_store(db_url), make_store(db_url)
    used_a: dict[str, int] = {}
    used_b: dict[str, int] = {}

    async def scenario() -> None:
        qa, qb = QuotaSync(a, used_a), QuotaSync(b, used_b)
        qa.charge("tok", 100)
        qb.charge("tok", 20)
        await qa.sync()
        qa.charge("tok", 5)  # charged after the sync: must not be lost
        await qb.sync()
        await qa.sync()
        await qb.sync()

    asyncio.run(scenario())
    assert used_a == {"tok": 125} and used_b == {"tok": 125}
    assert a.sync.quota_used() == {"tok": 125}


def test_quota_deltas_reach_the_store_within_1s(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    used: dict[str, int] = {}
    seen: dict[str, float] = {}

    async def scenario() -> None:
        q = QuotaSync(store, used, interval=0.2)
        q.start()
        t0 = time.monotonic()
        q.charge("tok", 42)
        while time.monotonic() - t0 < 2.0:
            if (await store.call(store.quota_used())).get("tok") == 42:
                seen["at"] = time.monotonic() - t0
                break
            await asyncio.sleep(0.02)
        q.charge("tok", 8)  # left for close() to flush
        await q.close()

    asyncio.run(scenario())
    assert seen["at"] < 1.0
    assert store.sync.quota_used() == {"tok": 50} and used == {"tok": 50}


def test_deleting_a_token_forgets_its_quota(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    store.sync.create_token({"name": "t"})
    store.sync.add_quota_deltas({"t": 10, "other": 1})
    assert store.sync.get_token("t")["quota_used_micros"] == 10
    store.sync.delete_token("t")
    assert store.sync.quota_used() == {"other": 1}


# --------------------------------------------------------------------------- usage


def test_usage_writes_are_idempotent_and_queries_add_up(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    recs = [usage(i) for i in range(60)]
    assert store.sync.write_usage(recs[:40]) == 40
    assert store.sync.write_usage(recs) == 20  # the first 40 are skipped by uid
    assert store.sync.write_usage(recs) == 0
    assert usage_count(db_url) == (60, 60)

    def expect(key: Callable[[dict], Any], rows: list[dict]) -> dict[Any, dict[str, int]]:
        out: dict[Any, dict[str, int]] = {}
        for r in rows:
            e = out.setdefault(key(r), dict.fromkeys(("requests", "errors", "cost", "prompt"), 0))
            e["requests"] += 1
            e["errors"] += r["status"] >= 400
            e["cost"] += r["cost_micros"]
            e["prompt"] += r["prompt_tokens"]
        return out

    def got(rows: list[dict], field: str) -> dict[Any, dict[str, int]]:
        return {
            r[field]: {
                "requests": r["requests"],
                "errors": r["errors"],
                "cost": r["cost_micros"],
                "prompt": r["prompt_tokens"],
            }
            for r in rows
        }

    by_key = store.sync.query_usage("key")
    assert got(by_key, "key") == expect(lambda r: r["key_name"], recs)
    costs = [r["cost_micros"] for r in by_key]
    assert costs == sorted(costs, reverse=True)
    assert got(store.sync.query_usage("model"), "model") == expect(lambda r: r["model"], recs)
    assert got(store.sync.query_usage("channel"), "channel") == expect(lambda r: r["channel"], recs)
    tagged = store.sync.query_usage("tag", tag="bench")
    assert got(tagged, "tag") == expect(lambda r: r["tag"], [r for r in recs if r["tag"]])

    since, until = 1_700_000_010.0, 1_700_000_030.0
    window = [r for r in recs if since <= r["ts"] < until]
    (total,) = store.sync.query_usage(None, since=since, until=until)
    assert total["requests"] == len(window) == 20
    assert total["completion_tokens"] == sum(r["completion_tokens"] for r in window)
    assert total["cached_tokens"] == sum(r["cached_tokens"] for r in window)
    assert total["cache_write_tokens"] == sum(r["cache_write_tokens"] for r in window)

    def day(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")

    assert got(store.sync.query_usage("day"), "day") == expect(lambda r: day(r["ts"]), recs)

    series = store.sync.query_usage("key", bucket="hour", key_name="key-1")
    hour = lambda ts: int(ts // 3600 * 3600)  # noqa: E731
    want = expect(
        lambda r: (hour(r["ts"]), r["key_name"]), [r for r in recs if r["key_name"] == "key-1"]
    )
    assert {(r["bucket"], r["key"]): r["requests"] for r in series} == {
        k: v["requests"] for k, v in want.items()
    }
    assert [r["bucket"] for r in series] == sorted(r["bucket"] for r in series)
    assert store.sync.query_usage(None, since=2e9) == []
    with pytest.raises(InvalidEntry):
        store.sync.query_usage("user")


def test_usage_rows_keep_every_field(db_url: str, make_store: Callable) -> None:
    store = make_store(db_url)
    rec = usage(7, tag="t-1", cache_hit=True, estimated=True, client_ip="::1")
    store.sync.write_usage([rec])
    cols = (
        "uid, ts, request_id, key_name, group_name, ingress, channel, provider, model, "
        "upstream_model, stream, status, error_code, prompt_tokens, completion_tokens, "
        "cached_tokens, cache_write_tokens, estimated, cost_micros, latency_ms, ttfb_ms, "
        "attempts, client_ip, tag, cache_hit, unpriced, router, service_tier, gateway_ms"
    )
    (row,) = raw_rows(db_url, f"SELECT {cols} FROM usage_records")
    names = [c.strip() for c in cols.split(",")]
    got = dict(zip(names, row, strict=True))
    for name in names:
        want = rec["group" if name == "group_name" else name]
        value = got[name]
        if isinstance(want, bool):
            value = bool(value)
        assert value == want, name


def test_write_usage_accepts_record_tuples(db_url: str, make_store: Callable) -> None:
    """The data plane appends tuples in RECORD_FIELDS order: they land in the same
    columns as the dict form, mixed in one batch, still idempotent by uid, and a
    tuple that went through JSON (a list) or lacks fields is coerced, not lost."""
    store = make_store(db_url)
    as_tuple = lambda d: tuple(d[f] for f in RECORD_FIELDS)  # noqa: E731
    recs = [usage(i, tag="t-1", cache_hit=bool(i % 2), client_ip="::1") for i in range(6)]
    batch = [as_tuple(recs[0]), recs[1], as_tuple(recs[2]), list(as_tuple(recs[3]))]
    assert store.sync.write_usage(batch) == 4
    assert store.sync.write_usage([as_tuple(r) for r in recs]) == 2  # uids 0-3 exist
    assert store.sync.write_usage([as_tuple(r) for r in recs], coerce=True) == 0
    uid_at = RECORD_FIELDS.index("uid")
    short = as_tuple(usage(99))[:uid_at]  # no uid (nor later fields): gets a fresh one
    assert store.sync.write_usage([short]) == 1
    assert usage_count(db_url) == (7, 7)

    cols = ", ".join("group_name" if f == "group" else f for f in RECORD_FIELDS)
    rows = {r[uid_at]: r for r in raw_rows(db_url, f"SELECT {cols} FROM usage_records")}
    for rec in recs:
        row = rows[rec["uid"]]
        for i, name in enumerate(RECORD_FIELDS):
            value = bool(row[i]) if isinstance(rec[name], bool) else row[i]
            assert value == rec[name], (rec["uid"], name)
    (extra,) = [r for uid, r in rows.items() if not uid.startswith("uid-")]
    assert extra[RECORD_FIELDS.index("request_id")] == "req-99"


def test_load_merge_snapshot(db_url: str, make_store: Callable) -> None:
    """File entries + store entries end up in one snapshot; the file wins a clash."""
    store = make_store(db_url)
    store.sync.create_channel({"name": "store-mock", "type": "mock", "models": ["s-model"]})
    store.sync.create_channel({"name": "file-mock", "type": "mock", "models": ["hijack"]})
    tok = store.sync.create_token({"name": "store-app"})
    cfg = parse_config(
        {
            "channels": [{"name": "file-mock", "type": "mock", "models": ["f-model"]}],
            "tokens": [{"name": "file-app", "key": "fg-" + "C" * 43}],
        }
    )
    state = store.sync.load()
    warnings: list[str] = []
    snap = build_snapshot(merge(cfg, state, warnings=warnings), state.version)
    assert set(snap.channels) == {"file-mock", "store-mock"}
    assert snap.channels["file-mock"].models == ("f-model",)
    assert hash_key(tok["key"]) in snap.tokens and hash_key("fg-" + "C" * 43) in snap.tokens
    assert len(warnings) == 1 and "file-mock" in warnings[0]
    assert isinstance(state, StoreState) and snap.version == state.version


# --------------------------------------------------------------------------- Postgres only


def test_notify_reaches_another_instance_within_1s(pg_url: str, make_store: Callable) -> None:
    a, b = make_store(pg_url), make_store(pg_url)
    heard: list[tuple[float, int]] = []
    a.run(a.listen(lambda v: heard.append((time.monotonic(), v))))
    assert wait_for(lambda: a.listening, 5)
    for i in range(3):
        t0 = time.monotonic()
        v = b.sync.create_group({"name": f"g{i}", "ratio": 1.0}) and b.sync.version()
        assert wait_for(lambda v=v: any(x == v for _, x in heard), 1.0), heard
        (t_heard,) = [t for t, x in heard if x == v]
        assert t_heard - t0 < 1.0


def test_listen_reconnects_after_its_connection_is_killed(
    pg_url: str, make_store: Callable
) -> None:
    a, b = make_store(pg_url), make_store(pg_url)
    heard: list[int] = []
    a.run(a.listen(heard.append))
    assert wait_for(lambda: a.listening, 5)
    assert isinstance(a, PostgresStore)
    pid = a.run(_listen_pid(a))
    heard.clear()
    pg_fetch(pg_url, "SELECT pg_terminate_backend($1)", pid)
    assert wait_for(lambda: -1 in heard, 5)  # reconnected: "re-check"
    assert wait_for(lambda: a.listening, 5)
    v = b.sync.create_group({"name": "after", "ratio": 1.0}) and b.sync.version()
    assert wait_for(lambda: v in heard, 1.0)


async def _listen_pid(store: PostgresStore) -> int:
    con = store._listen_con
    assert con is not None
    return con.get_server_pid()


class TcpProxy:
    """A TCP forwarder that can be stopped (listener closed, every connection cut:
    clients see refused connections) and started again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lsock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self._lsock = ls
        t = threading.Thread(target=self._accept, args=(ls,), daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._lsock is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not.
            with contextlib.suppress(OSError):
                self._lsock.shutdown(socket.SHUT_RDWR)
            self._lsock.close()
            self._lsock = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy((PG_HOST, PG_PORT))
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _via(proxy: TcpProxy, url: str) -> str:
    return url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")


def test_sink_survives_a_10s_outage_exactly_once(
    pg_url: str, proxy: TcpProxy, make_store: Callable, tmp_path: Path
) -> None:
    """2,000 records flow while the database is unreachable for 10 s: afterwards the
    table holds exactly those 2,000 rows, no duplicates, and the spool is empty."""
    make_store(pg_url)  # migrate through a direct connection
    store = make_store(_via(proxy, pg_url), connect_timeout=2.0)
    spool = tmp_path / "spool"
    sink = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.05, batch_size=200)
    sink.start()
    total, duration = 2000, 14.0
    t0 = time.monotonic()
    down_at, up_at = t0 + 2.0, t0 + 12.0
    state = "up"
    for i in range(total):
        target = t0 + duration * i / total
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        if state == "up" and time.monotonic() >= down_at:
            proxy.stop()
            state = "down"
        elif state == "down" and time.monotonic() >= up_at:
            proxy.start()
            state = "up-again"
        sink.append(usage(i, ts=time.time()))
    if state == "down":
        proxy.start()
    assert wait_for(lambda: sink.written == total, 30), (sink.written, sink.last_error)
    sink.close()
    assert usage_count(pg_url) == (total, total)
    uids = {r[0] for r in raw_rows(pg_url, "SELECT uid FROM usage_records")}
    assert uids == {f"uid-{i:06d}" for i in range(total)}
    assert sink.write_failures > 0 and sink.replayed > 0  # the outage was real
    assert sink.dropped == 0 and sink.spooled == 0
    assert list(spool.glob("spool-*.jsonl")) == []


def test_sink_survives_terminated_connections(
    pg_url: str, make_store: Callable, tmp_path: Path
) -> None:
    store = make_store(pg_url)
    sink = LogSink("", store=store, spool_dir=str(tmp_path), flush_interval=0.02, batch_size=100)
    sink.start()
    total = 2000
    db = pg_url.rsplit("/", 1)[1]
    for i in range(total):
        sink.append(usage(i))
        if i % 400 == 399:
            pg_fetch(
                PG_ADMIN,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                db,
            )
        if i % 50 == 0:
            time.sleep(0.01)
    assert wait_for(lambda: sink.written == total, 30), (sink.written, sink.last_error)
    sink.close()
    assert usage_count(pg_url) == (total, total)


def test_spool_left_at_exit_is_replayed_at_next_start(
    pg_url: str, proxy: TcpProxy, make_store: Callable, tmp_path: Path
) -> None:
    make_store(pg_url)
    store = make_store(_via(proxy, pg_url), connect_timeout=1.0)
    spool = tmp_path / "spool"
    proxy.stop()
    sink = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.05)
    sink.start()
    for i in range(500):
        sink.append(usage(i))
    sink.close(timeout=2.0)  # database still down: the records stay on disk
    files = list(spool.glob("spool-*.jsonl"))
    assert files and sum(len(f.read_bytes().splitlines()) for f in files) == 500
    assert usage_count(pg_url) == (0, 0)

    proxy.start()
    again = LogSink("", store=store, spool_dir=str(spool), flush_interval=0.05)
    again.start()
    again.append(usage(500))
    assert wait_for(lambda: again.written == 501, 20), again.last_error
    again.close()
    assert usage_count(pg_url) == (501, 501)
    assert list(spool.glob("spool-*.jsonl")) == []


def test_store_start_fails_clearly_without_postgres(proxy: TcpProxy) -> None:
    proxy.stop()
    store = store_for(
        f"postgresql://postgres:hunter2@127.0.0.1:{proxy.port}/x", environ=ENV, connect_timeout=1
    )
    with pytest.raises(Exception) as info:
        store.start()
    assert "hunter2" not in str(info.value)
    assert f"127.0.0.1:{proxy.port}" in str(info.value)
    assert not store.started
