"""Benchmark runs (`x-fastgate-tag`): `fastgate runs`, `runs show`, `runs compare`
and the admin API's `/admin/runs*` and `/admin/usage/latency`, on SQLite and
on Postgres.

A real gateway serves two tagged runs of scripted requests (upstream delays
scripted per request, a stream, upstream 400 and 500 answers, a refused key, a
response cache hit) and some untagged ones against a fake OpenAI upstream. The
test then reads the usage rows straight from the database and computes every
figure itself, percentiles by the documented rule (below, written here again,
not imported), and checks the API and the CLI against them.

The percentile rule (fastgate/store/runs.py): over the requests answered with
status < 400, for fraction p of n sorted values v: pos = p * (n - 1), lo =
floor(pos), hi = ceil(pos), value = v[lo] + (pos - lo) * (v[hi] - v[lo]).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from fastgate.store.base import Store
from tests.fakes.base import Fail, Ok
from tests.fakes.openai_fake import FakeOpenAI
from tests.functional import test_store_backends as store_tests
from tests.functional.test_durable_e2e import admin, admin_toml, admin_url
from tests.functional.test_store_backends import raw_rows, usage
from tests.harness import REPO_ROOT, Gateway, gateway_config, make_key, token

make_store = store_tests.make_store

TIMED = ("latency_ms", "ttfb_ms", "gateway_ms")
PCTS = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
COLS = (
    "ts, tag, model, channel, status, error_code, prompt_tokens, completion_tokens, "
    "cached_tokens, cache_write_tokens, cost_micros, cache_hit, latency_ms, ttfb_ms, gateway_ms"
)


# --------------------------------------------------------------------------- the rule


def pct(values: list[float], p: float) -> float | None:
    v = sorted(values)
    n = len(v)
    if n == 0:
        return None
    pos = p * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return v[lo]
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A group's figures, computed here from its rows."""
    ok = [r for r in rows if r["status"] < 400]
    errors: dict[tuple[int, str], int] = {}
    for r in rows:
        if r["status"] >= 400:
            k = (r["status"], r["error_code"])
            errors[k] = errors.get(k, 0) + 1
    first = min(r["ts"] for r in rows)
    out: dict[str, Any] = {
        "requests": len(rows),
        "errors": sum(errors.values()),
        "error_rate": sum(errors.values()) / len(rows),
        "errors_by_code": {(s, c): n for (s, c), n in errors.items()},
        "cache_hits": sum(1 for r in rows if r["cache_hit"]),
        "first_ts": first,
        "last_ts": max(r["ts"] for r in rows),
        "duration_s": max(r["ts"] + r["latency_ms"] / 1000.0 for r in rows) - first,
        "timed_requests": len(ok),
    }
    for c in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"):
        out[c] = sum(r[c] for r in rows)
    out["cost_micros"] = sum(r["cost_micros"] for r in rows)
    out["cost_usd"] = out["cost_micros"] / 1_000_000
    for m in TIMED:
        out[m] = {k: pct([r[m] for r in ok], p) for k, p in PCTS.items()}
    return out


def check(got: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    want = expected(rows)
    got = dict(got)
    got["errors_by_code"] = {
        (e["status"], e["error_code"]): e["requests"] for e in got["errors_by_code"]
    }
    for k, v in want.items():
        assert got[k] == v, (k, got[k], v)


def read_rows(url: str) -> list[dict[str, Any]]:
    names = [c.strip() for c in COLS.split(",")]
    out = []
    for t in raw_rows(url, f"SELECT {COLS} FROM usage_records"):
        d = dict(zip(names, t, strict=True))
        d["cache_hit"] = bool(d["cache_hit"])
        out.append(d)
    return out


# --------------------------------------------------------------------------- both backends agree


def test_percentile_rule_same_on_both_backends(
    tmp_path: Path, pg_db: str, make_store: Callable[..., Store]
) -> None:
    """The same rows in SQLite and Postgres give identical statistics, equal to
    the rule computed here (group sizes 1, 2, 3, 20 and 101, ties, an all-error
    group with no timed request, untagged rows left out)."""
    import random

    rng = random.Random(11)
    recs = []
    sizes = {"one": 1, "two": 2, "three": 3, "twenty": 20, "big": 101, "errs": 4}
    i = 0
    for tag, n in sizes.items():
        for _ in range(n):
            i += 1
            status = 500 if tag == "errs" else rng.choice([200, 200, 200, 200, 429])
            recs.append(
                usage(
                    i,
                    tag=tag,
                    status=status,
                    error_code="upstream_error" if status >= 400 else "",
                    latency_ms=rng.choice([10.0, 10.0, round(rng.uniform(1, 900), 3)]),
                    ttfb_ms=round(rng.uniform(0, 50), 3),
                    gateway_ms=rng.uniform(0, 1),
                    cache_hit=rng.random() < 0.3,
                )
            )
    recs += [usage(10_000 + k, tag="") for k in range(5)]
    results = []
    for url in ("sqlite:///" + str(tmp_path / "a.db"), pg_db):
        store = make_store(url)
        assert store.sync.write_usage(recs) == len(recs)
        results.append(
            (
                store.sync.query_stats(("tag",)),
                store.sync.query_stats(("tag", "model")),
                store.sync.query_stats(("minute",), tagged_only=False),
            )
        )
    assert results[0] == results[1]
    runs = {r["tag"]: r for r in results[0][0]}
    assert set(runs) == set(sizes)
    rows = [{**r, "group_name": r["group"]} for r in recs]
    for tag, r in runs.items():
        check(r, [x for x in rows if x["tag"] == tag])
    assert runs["errs"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    for r in results[0][1]:
        check(r, [x for x in rows if x["tag"] == r["tag"] and x["model"] == r["model"]])
    for r in results[0][2]:
        check(r, [x for x in rows if math.floor(x["ts"] / 60) * 60 == r["bucket"]])


# --------------------------------------------------------------------------- through a gateway


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "state" / "fastgate.db")
    return request.getfixturevalue("pg_db")


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("runs")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def cli(gw: Gateway, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "fastgate", *args, "--config", str(gw.config_path)],
        cwd=gw.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def wait_rows(url: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = read_rows(url)
        if len(rows) >= n or time.monotonic() > deadline:
            assert len(rows) == n, (len(rows), n)
            return rows
        time.sleep(0.05)


def test_runs_report_through_a_gateway(
    db: str, upstream: FakeOpenAI, make_gateway: Callable[..., Gateway]
) -> None:
    key = make_key()
    base = upstream.url + "/v1"
    text = gateway_config(
        channels=[
            {
                "name": "ch-fast",
                "type": "openai",
                "base_url": base,
                "api_key": "sk-a",
                "models": ["m-fast"],
            },
            {
                "name": "ch-slow",
                "type": "openai",
                "base_url": base,
                "api_key": "sk-b",
                "models": ["m-slow"],
            },
        ],
        tokens=[token("bench", key)],
        routing={"max_attempts": 1, "breaker_failures": 100},
        prices=[
            {"model": "m-fast", "input": 1.0, "output": 2.0},
            {"model": "m-slow", "input": 3.0, "output": 4.0},
        ],
        extra=f'[database]\nurl = "{db}"\n\n[cache]\nenabled = true\n\n' + admin_toml(),
    )
    gw = make_gateway(text)
    run_a, run_b = "run-a-" + secrets.token_hex(3), "run-b-" + secrets.token_hex(3)
    good = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key=make_key(), max_retries=0)

    def send(
        behaviour: Any,
        model: str,
        tag: str,
        *,
        stream: bool = False,
        client: Any = good,
        content: str = "hi",
        cache: bool = False,
    ) -> None:
        if behaviour is not None:
            upstream.script(behaviour)
        headers = {"x-fastgate-tag": tag} if tag else {}
        if cache:
            headers["x-fastgate-cache"] = "on"
        msgs = [{"role": "user", "content": content}]
        try:
            if stream:
                for _ in client.chat.completions.create(
                    model=model, messages=msgs, stream=True, extra_headers=headers
                ):
                    pass
            else:
                client.chat.completions.create(model=model, messages=msgs, extra_headers=headers)
        except openai.APIStatusError:
            pass

    sent = 0
    for d in (0.01, 0.02, 0.03, 0.04, 0.05):
        send(Ok(first_byte_delay=d), "m-fast", run_a, content=f"fast {d}")
    for _ in range(3):
        send(Ok(first_byte_delay=0.08, chunk_delay=0.005), "m-slow", run_a, stream=True)
    send(Fail(400), "m-fast", run_a)
    send(Fail(500), "m-slow", run_a)
    send(None, "m-fast", run_a, client=bad)  # refused by the gateway: 401
    send(Ok(first_byte_delay=0.01), "m-fast", run_a, content="cached", cache=True)  # miss
    send(None, "m-fast", run_a, content="cached", cache=True)  # hit: no upstream
    sent += 13
    send(Ok(), "m-fast", "")  # untagged: no run
    send(Ok(), "m-slow", "")
    sent += 2
    for d in (0.10, 0.12, 0.14, 0.15):
        send(Ok(first_byte_delay=d), "m-fast", run_b, content=f"b {d}")
    send(Fail(500), "m-fast", run_b)
    sent += 5

    rows = wait_rows(db, sent)
    tagged = {
        run_a: [r for r in rows if r["tag"] == run_a],
        run_b: [r for r in rows if r["tag"] == run_b],
    }
    assert len(tagged[run_a]) == 13 and len(tagged[run_b]) == 5
    adm = admin_url(gw)

    # -- the list: runs only, newest first, every figure from the rows
    status, listing = admin("GET", adm, "/admin/runs")
    assert status == 200, listing
    assert [r["tag"] for r in listing["data"]] == [run_b, run_a]
    for r in listing["data"]:
        check(r, tagged[r["tag"]])
    a = next(r for r in listing["data"] if r["tag"] == run_a)
    b = listing["data"][0]
    # the scripted delays and answers are what the figures show
    assert a["cache_hits"] == 1 and a["errors"] == 3 and b["errors"] == 1
    assert {e["status"] for e in a["errors_by_code"]} >= {400, 401}
    assert b["latency_ms"]["p50"] >= 100 > a["latency_ms"]["p50"]
    assert a["cost_micros"] > 0
    status, one = admin("GET", adm, "/admin/runs?limit=1")
    assert [r["tag"] for r in one["data"]] == [run_b]

    # -- one run: per model, per channel, timeline per minute
    status, show = admin("GET", adm, f"/admin/runs/{run_a}")
    assert status == 200, show
    check(show["run"], tagged[run_a])
    # the refused request never named its model (401 comes before the body is read)
    assert {r["model"] for r in show["by_model"]} == {"m-fast", "m-slow", ""}
    for r in show["by_model"]:
        check(r, [x for x in tagged[run_a] if x["model"] == r["model"]])
    for r in show["by_channel"]:
        check(r, [x for x in tagged[run_a] if x["channel"] == r["channel"]])
    slow = next(r for r in show["by_model"] if r["model"] == "m-slow")
    assert slow["ttfb_ms"]["p50"] >= 80
    tl = show["timeline"]
    assert show["timeline_bucket"] == "minute"
    first, last = (math.floor(show["run"][k] / 60) * 60 for k in ("first_ts", "last_ts"))
    assert [p["bucket"] for p in tl] == list(range(first, last + 60, 60))
    for p in tl:
        in_minute = [x for x in tagged[run_a] if math.floor(x["ts"] / 60) * 60 == p["bucket"]]
        assert p["requests"] == len(in_minute)
        assert p["errors"] == sum(1 for x in in_minute if x["status"] >= 400)

    # -- two runs side by side
    status, cmp = admin("GET", adm, f"/admin/runs?compare={run_a},{run_b}")
    assert status == 200, cmp
    by = {r["metric"]: r for r in cmp["compared"]}
    for metric, (m, p) in (
        ("latency_ms.p50", ("latency_ms", "p50")),
        ("ttfb_ms.p99", ("ttfb_ms", "p99")),
    ):
        x, y = a[m][p], b[m][p]
        assert (by[metric]["a"], by[metric]["b"], by[metric]["delta"]) == (x, y, y - x)
    assert by["cost_usd"]["a"] == a["cost_usd"] and by["error_rate"]["b"] == b["error_rate"]
    assert cmp["a"]["run"] == show["run"]

    # -- latency per minute bucket, and usage's minute buckets
    status, lat = admin("GET", adm, f"/admin/usage/latency?bucket=minute&tag={run_a}")
    assert status == 200, lat
    assert sum(p["requests"] for p in lat["data"]) == 13
    for p in lat["data"]:
        check(p, [x for x in tagged[run_a] if math.floor(x["ts"] / 60) * 60 == p["bucket"]])
    status, lat_all = admin("GET", adm, "/admin/usage/latency?bucket=minute")
    assert sum(p["requests"] for p in lat_all["data"]) == sent  # untagged too
    status, series = admin("GET", adm, "/admin/usage?bucket=minute")
    assert status == 200 and all(p["bucket"] % 60 == 0 for p in series["data"])
    assert sum(p["requests"] for p in series["data"]) == sent

    # -- refusals
    assert admin("GET", adm, "/admin/runs/no-such-run")[0] == 404
    assert admin("GET", adm, "/admin/runs?compare=only-one")[0] == 422
    assert admin("GET", adm, "/admin/runs?limit=0")[0] == 422
    assert admin("GET", adm, "/admin/runs?since=yesterday-ish")[0] == 422
    assert admin("GET", adm, "/admin/usage/latency?bucket=week")[0] == 422

    # -- the CLI on the same store says the same
    got = json.loads(cli(gw, "runs", "--json").stdout)
    assert got["data"] == listing["data"]
    got = json.loads(cli(gw, "runs", "show", run_a, "--json").stdout)
    assert {k: got[k] for k in ("run", "by_model", "by_channel", "timeline")} == {
        k: show[k] for k in ("run", "by_model", "by_channel", "timeline")
    }
    got = json.loads(cli(gw, "runs", "--limit", "1", "--since", "1h", "--json").stdout)
    assert [r["tag"] for r in got["data"]] == [run_b]
    human = cli(gw, "runs").stdout
    lines = human.splitlines()
    assert lines[0].split()[:4] == ["TAG", "FIRST", "LAST", "DURATION"]
    assert [ln.split()[0] for ln in lines[1:]] == [run_b, run_a]
    assert str(a["requests"]) in lines[2].split()
    human = cli(gw, "runs", "show", run_a).stdout
    assert "by model:" in human and "m-slow" in human and "ch-fast" in human
    human = cli(gw, "runs", "compare", run_a, run_b).stdout
    row = next(ln for ln in human.splitlines() if ln.startswith("requests "))
    assert row.split()[1:4] == ["13", "5", "-8"]
    assert "no requests tagged" in cli(gw, "runs", "show", "no-such-run", expect=1).stderr
    empty = cli(gw, "runs", "--since", str(time.time() + 3600)).stdout
    assert "no tagged requests" in empty
