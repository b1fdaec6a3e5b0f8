"""The store at boot and after (issue 9 item 2): a database that is away.

Real `fastgate serve` processes, the built-in mock channel, Postgres behind a
TCP proxy the test cuts (`tests/pgproxy.py`: listener closed and every relayed
connection aborted, so fastgate sees resets then refused connections), or a
SQLite file whose directory cannot be made yet (a plain file sits where the
directory should be: root ignores permission bits, a file in the way stops
everyone). The database is read directly (asyncpg, sqlite3); expectations come
from what the client saw complete and from the store entries the test made.

- Postgres down at start: the file's entries serve, /ready answers 200 with
  "store": "connecting", records wait in the spool, the admin API is not up;
  once the proxy listens: the store's channels, prices, groups, tokens, quota
  used and budget spend take effect, the spool is replayed (each record once),
  the charges made meanwhile reach the store's quota, the admin API starts.
- the store back over a slow link (`PgProxy.delay`): a store key whose budget
  is spent is refused from its first request (spend loaded before the swap).
- SQLite whose directory cannot be made at start: the same, then the admin API
  (started with the store) creates a token that serves.
- a Postgres cut under load (2.5 s here; `bench/store_cut.py` does 10 s), one
  and two workers: /ready says "unreachable" during it, and afterwards the
  database holds exactly one row per request the client saw complete.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fastgate.store.base import store_for
from fastgate.vocab.periods import period_bounds
from tests.functional.test_durable_e2e import (
    Outcome,
    admin,
    admin_toml,
    admin_url,
    chat,
    db_toml,
    http,
    new_tag,
    send_one,
    spool_lines,
)
from tests.functional.test_store_backends import pg_fetch, wait_for
from tests.harness import Gateway, make_key, token
from tests.pgproxy import PgProxy

MOCK = {"name": "mock", "type": "mock", "models": ["mock-1"]}
# The file's channel also serves the "team" group, whose ratio only the store knows.
MOCK_TEAM = dict(MOCK, groups=["default", "team"])
# Integer micro-dollars per token, so a group ratio of 2 doubles a cost exactly.
FILE_PRICE = {"model": "mock-1", "input": 1.0, "output": 2.0}

ROWS_SQL = "SELECT request_id, uid, cost_micros, channel FROM usage_records WHERE tag = {p}"


def ready(gw: Gateway) -> tuple[int, dict[str, Any]]:
    status, body = http("GET", gw.url + "/ready")
    assert isinstance(body, dict), body
    return status, body


def wait_ready_store(gw: Gateway, state: str, timeout: float) -> dict[str, Any]:
    """Poll /ready until its "store" is `state`; return that body."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = ready(gw)
        if status == 200 and body.get("store") == state:
            return body
        seen.append(body)
        time.sleep(0.1)
    raise AssertionError(f"/ready never said store={state!r}: {seen[-3:]}\n{gw.stderr_text()}")


def rows(db_url: str, tag: str) -> list[tuple[str, str, int, str]]:
    """(request_id, uid, cost_micros, channel) of every usage row with this tag."""
    if db_url.startswith("sqlite:///"):
        con = sqlite3.connect(db_url[len("sqlite:///") :], timeout=10)
        try:
            got = con.execute(ROWS_SQL.format(p="?"), (tag,)).fetchall()
        finally:
            con.close()
    else:
        got = pg_fetch(db_url, ROWS_SQL.format(p="$1"), tag)
    return [(r[0], r[1], int(r[2]), r[3]) for r in got]


def assert_exactly_once(db_url: str, tag: str, rids: list[str], gw: Gateway) -> None:
    got = rows(db_url, tag)
    assert sorted(r[0] for r in got) == sorted(rids), (len(got), len(rids), gw.stderr_text())
    assert len({r[1] for r in got}) == len(rids)  # one uid per row: none doubled


@pytest.fixture
def pg_proxy_down() -> Iterator[PgProxy]:
    """A proxy to 127.0.0.1:5432 whose port is reserved but not listening yet."""
    proxy = PgProxy(5432, up=False)
    try:
        yield proxy
    finally:
        proxy.close()


# --------------------------------------------------------------------------- (a) Postgres


@pytest.mark.parametrize("workers", [1, 2])
def test_postgres_down_at_start_serves_the_file_then_merges_the_store_and_replays(
    workers: int,
    pg_db: str,
    pg_proxy_down: PgProxy,
    make_gateway: Callable[..., Gateway],
    tmp_path: Path,
) -> None:
    proxy = pg_proxy_down
    file_key, team_key, spent_key, budget_key = (make_key() for _ in range(4))
    # Store entries made before this gateway ever ran (as the admin API or CLI makes them).
    day_start = period_bounds("day", time.time())[0]
    with store_for(pg_db) as st:
        st.sync.create_channel({"name": "store-mock", "type": "mock", "models": ["store-model"]})
        st.sync.create_price({"model": "store-model", "input": 3.0, "output": 5.0})
        st.sync.create_group({"name": "team", "ratio": 2.0})
        st.sync.create_token({"name": "store-team", "key": team_key, "group": "team"})
        st.sync.create_token({"name": "store-spent", "key": spent_key, "quota_usd": 0.5})
        st.sync.add_quota_deltas({"store-spent": 600_000})
        st.sync.create_token(
            {"name": "store-budget", "key": budget_key, "budget_usd": 0.01, "budget_period": "day"}
        )
        st.sync.sync_budgets({("key", "store-budget", "day", day_start): 20_000}, [])

    spool = tmp_path / "spool"
    gw = make_gateway(
        channels=[MOCK_TEAM],
        tokens=[token("file-key", file_key)],
        prices=[FILE_PRICE],
        logging={"usage_spool_dir": str(spool)},
        extra=db_toml(proxy.url(pg_db)) + admin_toml(),
        args=["--workers", str(workers)],
    )
    status, body = ready(gw)
    assert status == 200 and body["store"] == "connecting", body
    assert "refused" in body["store_error"].lower(), body

    tag = new_tag("boot-pg")
    rids = [f"{tag}-{i:03d}" for i in range(40)]
    for rid in rids:
        assert chat(gw, file_key, tag=tag, request_id=rid)[0] == 200
    assert chat(gw, team_key)[0] == 401  # a store token: not known yet
    assert chat(gw, file_key, "store-model")[0] == 404  # a store channel's model: not yet
    assert wait_for(lambda: spool_lines(spool) >= len(rids), 10), gw.stderr_text()
    assert "admin on" not in gw.stderr_text()  # the admin API waits for the store
    time.sleep(1.2)  # a few retries fail meanwhile
    # Logged once per worker, not at every retry.
    assert gw.stderr_text().count("database unreachable at start") == workers

    proxy.restore()
    body = wait_ready_store(gw, "ok", 10)
    assert "store_error" not in body and body["snapshot"] > 1
    base = admin_url(gw)  # started with the store

    def every_worker_ok() -> bool:
        _, doc = admin("GET", base, "/admin/status")
        states = [w["store"]["state"] for w in doc["workers"]]
        return doc["store"]["ok"] is True and states == ["ok"] * workers

    assert wait_for(every_worker_ok, 10), admin("GET", base, "/admin/status")
    assert gw.stderr_text().count("database unreachable at start") == workers

    # The spool replayed: every record of the outage once, nothing left on disk.
    assert wait_for(lambda: len(rows(pg_db, tag)) >= len(rids), 10, step=0.1)
    assert_exactly_once(pg_db, tag, rids, gw)
    assert wait_for(lambda: spool_lines(spool) == 0, 5)

    # The store's entries serve now: channel + price, group ratio, quota used, budget spend.
    after = new_tag("merged")
    assert chat(gw, file_key, "store-model", tag=after, request_id=f"{after}-m")[0] == 200
    assert chat(gw, file_key, content="same", tag=after, request_id=f"{after}-f")[0] == 200
    assert chat(gw, team_key, content="same", tag=after, request_id=f"{after}-t")[0] == 200
    status, err = chat(gw, spent_key)
    assert (status, err["error"]["code"]) == (402, "insufficient_quota"), err
    status, err = chat(gw, budget_key)
    assert (status, err["error"]["code"]) == (402, "budget_exceeded"), err
    assert wait_for(lambda: len(rows(pg_db, after)) >= 3, 5, step=0.1)
    by_rid = {r[0]: r for r in rows(pg_db, after)}
    assert by_rid[f"{after}-m"][3] == "store-mock" and by_rid[f"{after}-m"][2] > 0
    assert by_rid[f"{after}-t"][2] == 2 * by_rid[f"{after}-f"][2] > 0

    assert gw.stop() == 0
    assert_exactly_once(pg_db, tag, rids, gw)
    # What file-key was charged while the store was away reached the store's quota.
    spent = pg_fetch(
        pg_db, "SELECT sum(cost_micros) FROM usage_records WHERE key_name = 'file-key'"
    )[0][0]
    used = pg_fetch(pg_db, "SELECT used_micros FROM quota_usage WHERE token_name = 'file-key'")[0][
        0
    ]
    assert int(used) == int(spent) > 0


def test_a_store_key_is_admitted_on_its_spend_from_its_first_request(
    pg_db: str, pg_proxy_down: PgProxy, make_gateway: Callable[..., Gateway]
) -> None:
    """Postgres down at start, then back over a slow link (50 ms a chunk): a store
    key whose budget the store says is spent is refused from the first request
    that knows it. The worker loads the budget spend before the snapshot with the
    store's tokens serves; it used to swap first, and a request in between was
    served on a spend of 0. And /ready says the store is "ok" only once its
    entries serve: it said so when the store opened, before that load, and a
    probe could see "ok" beside the file's snapshot (CI saw it once)."""
    proxy = pg_proxy_down
    budget_key = make_key()
    day_start = period_bounds("day", time.time())[0]
    with store_for(pg_db) as st:
        st.sync.create_token(
            {"name": "store-budget", "key": budget_key, "budget_usd": 0.01, "budget_period": "day"}
        )
        st.sync.sync_budgets({("key", "store-budget", "day", day_start): 20_000}, [])
    gw = make_gateway(
        channels=[MOCK_TEAM],
        tokens=[token("file-key", make_key())],
        prices=[FILE_PRICE],
        extra=db_toml(proxy.url(pg_db)),
    )
    assert ready(gw)[1]["store"] == "connecting"
    proxy.delay = 0.05
    proxy.restore()
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = ready(gw)[1]
        if probe["store"] == "ok":
            assert probe["snapshot"] > 1, probe  # "ok": the store's entries serve
        status, body = chat(gw, budget_key)
        seen.append(status)
        if probe["store"] == "ok":
            assert status != 401, (probe, seen)
        if status != 401:  # the store's tokens serve: the first answer is a refusal
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            assert (status, code) == (402, "budget_exceeded"), (seen, body)
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"the store's token never served: {seen[-5:]}")
    assert chat(gw, budget_key)[0] == 402
    assert wait_ready_store(gw, "ok", 10)["snapshot"] > 1


# --------------------------------------------------------------------------- (a) SQLite


def test_sqlite_directory_not_there_at_start_then_made(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    key = make_key()
    blocker = tmp_path / "state"
    blocker.write_text("a file where the database's directory should be\n")
    db = blocker / "db" / "fastgate.db"
    db_url = f"sqlite:///{db}"
    gw = make_gateway(
        channels=[MOCK],
        tokens=[token("lite-key", key)],
        prices=[FILE_PRICE],
        extra=db_toml(db_url) + admin_toml(),
    )
    spool = gw.dir / "usage-spool"  # the default: beside the config
    status, body = ready(gw)
    assert status == 200 and body["store"] == "connecting", body
    tag = new_tag("boot-lite")
    rids = [f"{tag}-{i:03d}" for i in range(30)]
    for rid in rids:
        assert chat(gw, key, tag=tag, request_id=rid)[0] == 200
    assert wait_for(lambda: spool_lines(spool) >= len(rids), 10), gw.stderr_text()
    assert "admin on" not in gw.stderr_text()

    blocker.unlink()  # the directory can be made now
    wait_ready_store(gw, "ok", 10)
    base = admin_url(gw)
    assert wait_for(lambda: db.exists() and len(rows(db_url, tag)) >= len(rids), 10, step=0.1)
    assert_exactly_once(db_url, tag, rids, gw)

    # The admin API runs on the store that was reached: a token it makes serves.
    status, made = admin("POST", base, "/admin/tokens", {"name": "made-later"})
    assert status in (200, 201), made
    took = time.monotonic()
    while chat(gw, made["key"])[0] != 200:
        assert time.monotonic() - took < 3, gw.stderr_text()
        time.sleep(0.05)

    assert gw.stop() == 0
    assert_exactly_once(db_url, tag, rids, gw)
    assert list(spool.glob("spool-*.jsonl")) == []


# --------------------------------------------------------------------------- (b) a cut


@pytest.mark.parametrize("workers", [1, 2])
def test_postgres_cut_under_load_keeps_every_record_once(
    workers: int, pg_db: str, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    key = make_key()
    spool = tmp_path / "spool"
    with PgProxy(5432) as proxy:
        gw = make_gateway(
            channels=[MOCK],
            tokens=[token("cut-key", key)],
            prices=[FILE_PRICE],
            logging={"usage_spool_dir": str(spool)},
            extra=db_toml(proxy.url(pg_db)) + admin_toml(),
            args=["--workers", str(workers)],
        )
        wait_ready_store(gw, "ok", 10)
        base = admin_url(gw)
        tag = new_tag(f"cut-w{workers}")
        total, concurrency, duration = 1200, 16, 5.0
        cut_at, cut_for = 1.0, 2.5
        states: list[str] = []
        spooled: list[int] = []
        seen: list[dict[str, Any]] = []  # the admin status's "store" during the cut

        def watch() -> None:  # /ready, the admin status and the spool during the cut
            time.sleep(cut_at + 0.2)
            cut_began = time.time() - 0.2
            end = time.monotonic() + cut_for - 0.4
            while time.monotonic() < end:
                states.append(ready(gw)[1].get("store", "?"))
                spooled.append(spool_lines(spool))
                if "unreachable" in states and not seen:
                    doc = admin("GET", base, "/admin/status")[1]
                    seen.append(dict(doc["store"], cut_began=cut_began))
                time.sleep(0.05)

        async def drive() -> list[Outcome]:
            t0 = time.monotonic()
            nxt = 0
            results: list[Outcome] = []
            conn = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(
                connector=conn, timeout=aiohttp.ClientTimeout(total=20)
            ) as session:

                async def one() -> None:
                    nonlocal nxt
                    while nxt < total:
                        i = nxt
                        nxt += 1
                        wait = t0 + duration * i / total - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        rid = f"{tag}-{i:05d}"
                        results.append(
                            await send_one(session, gw.url, key, tag, rid, stream=i % 3 == 0)
                        )

                async def cut() -> None:
                    await asyncio.sleep(cut_at)
                    proxy.cut_for(cut_for)

                await asyncio.gather(cut(), *(one() for _ in range(concurrency)))
            return results

        watcher = threading.Thread(target=watch)
        watcher.start()
        results = asyncio.run(drive())
        watcher.join()
        assert proxy.cuts == 1 and wait_for(lambda: proxy.is_up, 5)
        done = [r.rid for r in results if r.complete and r.status == 200]
        assert len(done) == total, [r for r in results if not r.complete][:3]
        assert "unreachable" in states, states  # /ready said so during the cut
        store = seen[0]
        assert store["state"] == "unreachable" and store["ok"] is False, store
        assert store["retries"] >= 1 and store["error"], store
        assert store["since"] >= store["cut_began"] - 0.5, store
        assert max(spooled) > 0, "nothing was spooled: was the cut real?"
        assert wait_for(lambda: len(rows(pg_db, tag)) >= len(done), 20, step=0.2), (
            len(rows(pg_db, tag)),
            gw.stderr_text()[-3000:],
        )
        assert_exactly_once(pg_db, tag, done, gw)
        wait_ready_store(gw, "ok", 10)
        assert gw.stop() == 0
        assert_exactly_once(pg_db, tag, done, gw)  # nothing written twice at exit
        assert list(spool.glob("spool-*.jsonl")) == []
