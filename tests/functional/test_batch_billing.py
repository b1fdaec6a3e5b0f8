"""Batch results billed at download (`fastgate/gateway/batch_billing.py`).

Through a real fastgate and the fake OpenAI upstream, with the openai SDK: the
fake serves a batch output file with scripted usage for two models; the
download (`client.files.content`) bills each model's results at its price x
`batch_multiplier`, one record per model (service tier "batch"), computed here
by hand in integer pico-dollars; a second download bills nothing, also after a
restart and on a second instance sharing Postgres (the store is asked); a file
that is not batch output bills nothing; Anthropic batch results are a 404 (no
passthrough); a download cut before its end bills nothing; a file of several
MB passes without the gateway's RSS growing by its size.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import openai
import pytest

from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, channel, gateway_config, make_key, token

MINI = "gpt-4o-mini-2024-07-18"  # priced as gpt-4o-mini (the snapshot date dropped)
BIG = "gpt-4o-2024-08-06"  # priced as "big": the channel's model_map sends big there
# Prices in pico-dollars per token (USD per 1M tokens x 1e6), batch multiplier in ppm.
MINI_IN, MINI_CACHED, MINI_OUT = 150_000, 75_000, 600_000
BIG_IN, BIG_OUT = 2_500_000, 10_000_000
BATCH_PPM = 500_000
PRICES = [
    {
        "model": "gpt-4o-mini",
        "input": 0.15,
        "output": 0.6,
        "cache_read": 0.075,
        "batch_multiplier": 0.5,
    },
    {"model": "big", "input": 2.5, "output": 10.0, "batch_multiplier": 0.5},
]
MINI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 333,
    "total_tokens": 1333,
    "prompt_tokens_details": {"cached_tokens": 200},
}
SMALL_USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
BIG_USAGE = {"prompt_tokens": 1234, "completion_tokens": 77, "total_tokens": 1311}
RESULTS: list[tuple[str, dict | None]] = [
    (MINI, MINI_USAGE),
    (BIG, BIG_USAGE),
    (MINI, MINI_USAGE),
    ("gpt-4o-mini", None),  # a failed request: no usage, not billed
    (MINI, SMALL_USAGE),
    (BIG, BIG_USAGE),
    (MINI, MINI_USAGE),
]


def micros(amount_pico: int) -> int:
    """pico-dollars x batch multiplier -> micro-dollars, rounded half up once (ratio 1)."""
    return (amount_pico * BATCH_PPM + 500_000_000_000) // 1_000_000_000_000


# By hand: gpt-4o-mini 3 x (800 uncached + 200 cached in, 333 out) + (7 in, 5 out);
# big 2 x (1234 in, 77 out).
MINI_PICO = (3 * 800 + 7) * MINI_IN + 3 * 200 * MINI_CACHED + (3 * 333 + 5) * MINI_OUT
BIG_PICO = 2 * 1234 * BIG_IN + 2 * 77 * BIG_OUT
MINI_COST, BIG_COST = micros(MINI_PICO), micros(BIG_PICO)


def costs(copies: int) -> list[int]:
    """The two records' costs for RESULTS repeated: summed, then rounded once."""
    return sorted([micros(copies * MINI_PICO), micros(copies * BIG_PICO)])


@dataclass
class Env:
    gw: Gateway
    oa: FakeOpenAI
    key: str
    quota_key: str  # quota_usd = exactly the file's cost
    text: str
    dir: Path


def config(oa: FakeOpenAI, key: str, quota_key: str) -> str:
    chans = [channel("oa", oa.url, ["gpt-4o-mini", "big"], model_map={"big": BIG})]
    toks = [
        token("k", key),
        token("q", quota_key, quota_usd=(MINI_COST + BIG_COST) / 1_000_000),
    ]
    return gateway_config(chans, toks, prices=PRICES)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    oa = FakeOpenAI("oa")
    oa.start()
    key, quota_key = make_key(), make_key()
    text = config(oa, key, quota_key)
    d = Path(tmp_path_factory.mktemp("batch"))
    e = Env(Gateway(d, text).start(), oa, key, quota_key, text, d)
    try:
        yield e
    finally:
        e.gw.close()
        oa.stop()


def client(env: Env, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=env.gw.url + "/v1",
        api_key=key or env.key,
        max_retries=0,
        timeout=30,
        http_client=httpx2.Client(),
    )


def batch_records(env: Env, fid: str) -> list[dict[str, Any]]:
    return [r for r in env.gw.access_log_records() if r["request_id"] == f"batch:{fid}"]


def wait_batch_records(env: Env, fid: str, n: int, timeout: float = 5) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        recs = batch_records(env, fid)
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


def download(env: Env, fid: str, key: str | None = None) -> bytes:
    """The SDK's download; returns the bytes once the gateway's record of it is out."""
    raw = client(env, key).files.with_raw_response.content(fid)
    data = raw.parse().read()  # what client.files.content(fid) returns
    rec = env.gw.record_for(raw.headers["x-request-id"])
    assert (rec["status"], rec["model"], rec["cost_micros"]) == (200, "", 0)  # the GET itself
    return data


def settle() -> None:
    """Time for a billing that should not happen to show (store check + writer flush)."""
    time.sleep(1.0)


def test_batch_output_billed_at_batch_price_once(env: Env) -> None:
    fid = env.oa.add_batch_output(RESULTS)
    assert download(env, fid) == env.oa.files[fid]
    recs = {r["model"]: r for r in wait_batch_records(env, fid, 2)}
    assert set(recs) == {"gpt-4o-mini", "big"}
    mini, big = recs["gpt-4o-mini"], recs["big"]
    assert (mini["upstream_model"], big["upstream_model"]) == (MINI, BIG)
    assert (mini["prompt_tokens"], mini["cached_tokens"], mini["completion_tokens"]) == (
        3 * 1000 + 7,
        3 * 200,
        3 * 333 + 5,
    )
    assert (big["prompt_tokens"], big["completion_tokens"]) == (2 * 1234, 2 * 77)
    assert mini["cost_micros"] == MINI_COST and big["cost_micros"] == BIG_COST
    for r in (mini, big):
        assert (r["key_name"], r["channel"], r["service_tier"], r["status"]) == (
            "k",
            "oa",
            "batch",
            200,
        )
        assert r["uid"] == f"batch:{fid}:{r['upstream_model']}" and not r["unpriced"]
    print(f"billed {MINI_COST} + {BIG_COST} micro-USD for {len(RESULTS)} results")

    assert download(env, fid) == env.oa.files[fid]  # the same file again: billed once
    settle()
    assert len(batch_records(env, fid)) == 2


def test_download_charges_the_key(env: Env) -> None:
    fid = env.oa.add_batch_output(RESULTS)
    c = client(env, env.quota_key)
    before = c.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert before.choices  # served: the key's quota is not spent yet
    recs = [r for r in env.gw.access_log_records() if r["key_name"] == "q"]
    spent = sum(r["cost_micros"] for r in recs)
    assert spent < MINI_COST + BIG_COST
    download(env, fid, env.quota_key)
    assert sum(r["cost_micros"] for r in wait_batch_records(env, fid, 2)) == MINI_COST + BIG_COST
    time.sleep(0.2)
    with pytest.raises(openai.APIStatusError) as exc:  # the file's cost used up the quota
        c.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 402


def test_a_file_that_is_not_batch_output_bills_nothing(env: Env) -> None:
    lines = b"".join(
        b'{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions",'
        b'"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}\n' % i
        for i in range(50)
    )
    f = client(env).files.create(file=("in.jsonl", lines, "application/jsonl"), purpose="batch")
    assert download(env, f.id) == lines
    settle()
    assert batch_records(env, f.id) == []


def test_a_cut_download_bills_nothing_until_a_whole_one(env: Env) -> None:
    fid = env.oa.add_batch_output(RESULTS * 800, pad=2000)  # ~12 MB: more than socket buffers
    size = len(env.oa.files[fid])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect((env.gw.host, env.gw.port))
    s.sendall(
        b"GET /v1/files/%s/content HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n\r\n"
        % (fid.encode(), env.key.encode())
    )
    got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")
    s.close()  # after a few KB of 12 MB
    settle()
    assert batch_records(env, fid) == []
    assert len(download(env, fid)) == size
    recs = wait_batch_records(env, fid, 2)
    assert sorted(r["cost_micros"] for r in recs) == costs(800)


def test_large_file_streams_through_flat(env: Env) -> None:
    fid = env.oa.add_batch_output(RESULTS * 1000, pad=1500)
    size = len(env.oa.files[fid])
    assert size > 10 * 1024 * 1024
    base = env.gw.rss_bytes()
    peak = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], env.gw.rss_bytes())
            time.sleep(0.005)

    t = threading.Thread(target=poll)
    t.start()
    try:
        assert len(download(env, fid)) == size
    finally:
        stop.set()
        t.join()
    grew = peak[0] - base
    print(f"gateway RSS: {base} before, {peak[0]} at peak for a {size}-byte batch output")
    assert grew < size // 4, f"gateway RSS grew by {grew} bytes for a {size}-byte download"
    recs = wait_batch_records(env, fid, 2)
    assert sorted(r["cost_micros"] for r in recs) == costs(1000)


def test_billed_once_across_a_restart(env: Env, tmp_path: Path) -> None:
    oa = env.oa
    fid = oa.add_batch_output(RESULTS)
    key = make_key()
    text = config(oa, key, make_key())
    env2 = Env(Gateway(tmp_path, text).start(), oa, key, "", text, tmp_path)
    try:
        download(env2, fid)
        assert len(wait_batch_records(env2, fid, 2)) == 2
    finally:
        env2.gw.close()  # SIGTERM: the writer drains its records into the store first
    env2.gw = Gateway(tmp_path, text).start()  # the same SQLite file, a new process
    try:
        seen = len(batch_records(env2, fid))
        download(env2, fid)
        settle()
        assert len(batch_records(env2, fid)) == seen  # no new record
    finally:
        env2.gw.close()
    with sqlite3.connect(tmp_path / "fastgate.db") as db:
        rows = db.execute(
            "SELECT model, cost_micros FROM usage_records WHERE request_id = ? ORDER BY model",
            (f"batch:{fid}",),
        ).fetchall()
    assert rows == [("big", BIG_COST), ("gpt-4o-mini", MINI_COST)]


def test_billed_once_across_instances_on_postgres(env: Env, tmp_path: Path, pg_db: str) -> None:
    oa = env.oa
    fid = oa.add_batch_output(RESULTS)
    key = make_key()
    text = config(oa, key, make_key()) + f'\n[database]\nurl = "{pg_db}"\n'

    async def stored() -> list[tuple[str, int]]:
        con = await asyncpg.connect(pg_db)
        try:
            rows = await con.fetch(
                "SELECT model, cost_micros FROM usage_records WHERE request_id = $1 ORDER BY model",
                f"batch:{fid}",
            )
        finally:
            await con.close()
        return [(r["model"], r["cost_micros"]) for r in rows]

    a = Env(Gateway(tmp_path / "a", text).start(), oa, key, "", text, tmp_path / "a")
    b = Env(Gateway(tmp_path / "b", text).start(), oa, key, "", text, tmp_path / "b")
    try:
        download(a, fid)
        assert len(wait_batch_records(a, fid, 2)) == 2
        deadline = time.monotonic() + 5
        while len(asyncio.run(stored())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        download(b, fid)  # another instance: the store says the file was billed
        settle()
        assert batch_records(b, fid) == []
    finally:
        a.gw.close()
        b.gw.close()
    assert asyncio.run(stored()) == [("big", BIG_COST), ("gpt-4o-mini", MINI_COST)]


def test_anthropic_batch_results_have_no_passthrough(env: Env) -> None:
    r = httpx2.get(
        env.gw.url + "/v1/messages/batches/msgbatch_1/results",
        headers={"x-api-key": env.key, "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 404  # not passed through: Anthropic batches are not billed
