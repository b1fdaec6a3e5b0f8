"""Billing end to end (docs/contract.md section 5): a real fastgate in front of fake upstreams
whose usage numbers and service tier each test scripts; the record's cost is
compared with the figure computed here by hand, in integers:

    prices in pico-dollars per token (USD per 1M tokens x 1e6),
    ratio and multiplier in parts per million,
    cost (micro-dollars) = (sum of tokens x price) x ratio x multiplier / 1e18,
    rounded half up once.

Also: usage estimated when the upstream reports none (non-stream, a stream cut by
the upstream, a stream the client left), and unpriced models (served at cost 0,
warned about at start, listed by `fastgate price missing` and
`GET /admin/prices/missing`, on SQLite and Postgres).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.base import DieMidStream, Ok, Slow, content_pieces
from tests.harness import REPO_ROOT, Gateway, channel, gateway_config, make_key, token

ADMIN_TOKEN = "billing-admin-token"
ADMIN_RE = re.compile(r"admin on http://([^:\s]+):(\d+)")
M = 1_000_000  # pico-dollars per token in 1 USD per 1M tokens; also 1.0 in ppm
HALF = 5 * 10**17
DEN = 10**18

PRICES: list[dict[str, Any]] = [
    # 2 / 8 / 0.5 USD per 1M; priority x1.7, flex x0.5
    {
        "model": "flat",
        "input": 2.0,
        "output": 8.0,
        "cache_read": 0.5,
        "priority_multiplier": 1.7,
        "batch_multiplier": 0.5,
    },
    {"model": "alias-m", "alias_of": "flat"},
    {
        "model": "whole-m",
        "input": 3.0,
        "output": 6.0,
        "cache_read": 0.75,
        "tiers": [{"up_to": 100, "input": 1.0, "output": 2.0, "cache_read": 0.25}, {"input": 3.0}],
        "tier_mode": "whole",
    },
    {
        "model": "seg-m",
        "input": 3.0,
        "output": 6.0,
        "cache_read": 0.75,
        "tiers": [{"up_to": 100, "input": 1.0, "output": 2.0, "cache_read": 0.25}],
        "tier_mode": "segmented",
    },
    {
        "model": "claude-m",
        "input": 3.0,
        "output": 15.0,
        "cache_read": 0.3,
        "cache_write": 3.75,
        "priority_multiplier": 1.25,
    },
]
# The same prices as integers (pico-dollars per token; ppm).
FLAT_IN, FLAT_OUT, FLAT_READ = 2 * M, 8 * M, M // 2
FLAT_PRIORITY, FLAT_FLEX = 1_700_000, 500_000
T0_IN, T0_OUT, T0_READ = 1 * M, 2 * M, M // 4  # whole-m / seg-m, prompts up to 100
TOP_IN, TOP_OUT, TOP_READ = 3 * M, 6 * M, 3 * M // 4  # above 100 (whole-m tier 2 inherits)
C_IN, C_OUT, C_READ, C_WRITE, C_PRIORITY = 3 * M, 15 * M, 3 * M // 10, 375 * M // 100, 1_250_000
VIP_RATIO = 1_500_000


def cost(pico: int, ratio: int = M, mult: int = M) -> int:
    """docs/contract.md section 5 in integers: one rounding, half up, to micro-dollars."""
    return (pico * ratio * mult + HALF) // DEN


def tokens(chars: int) -> int:
    """The documented estimator: ceil(characters / 4)."""
    return -(-chars // 4)


@pytest.fixture
def billing_gw(make_gateway, make_fake, fake_anthropic) -> Any:
    oa = make_fake("oa")
    key, vip = make_key(), make_key()
    text = gateway_config(
        [
            channel(
                "oa",
                oa.url,
                ["flat", "alias-m", "whole-m", "seg-m", "free-m"],
                groups=["default", "vip"],
            ),
            channel(
                "an",
                fake_anthropic.url,
                ["claude-m"],
                type="anthropic",
                groups=["default", "vip"],
            ),
        ],
        # "vip" has a quota (which the fast path checks itself) and the group ratio
        [token("plain", key), token("vip", vip, group="vip", quota_usd=100)],
        groups=[{"name": "vip", "ratio": 1.5}],
        prices=PRICES,
    )
    gw = make_gateway(text)
    return gw, oa, fake_anthropic, key, vip


def _rid() -> str:
    return "bill-" + make_key()[3:15]


def chat(gw: Gateway, key: str, model: str, *, stream: bool = False, text: str = "hi") -> str:
    """One chat completion through the OpenAI SDK; returns its request id."""
    rid = _rid()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": text}]
    if stream:
        for _ in client.chat.completions.create(
            model=model, messages=messages, stream=True, extra_headers={"x-request-id": rid}
        ):
            pass
    else:
        client.chat.completions.create(
            model=model, messages=messages, extra_headers={"x-request-id": rid}
        )
    return rid


def test_prices_tiers_cache_ratio_and_service_tiers(billing_gw) -> None:
    gw, oa, an, key, vip = billing_gw
    cases: list[tuple[str, int, str, dict[str, Any]]] = []  # (rid, expected, tier, usage)

    def run(
        fake: Any,
        ok: Ok,
        expected: int,
        send: Any,
        tier: str = "default",
    ) -> None:
        fake.script(ok)
        cases.append((send(), expected, tier, {"p": ok.prompt_tokens, "c": ok.completion_tokens}))

    # flat price, default tier: 232 uncached + 101 cached + 77 output; 1130.5 -> 1131
    u = {"prompt_tokens": 333, "completion_tokens": 77, "cached_tokens": 101}
    flat = 232 * FLAT_IN + 101 * FLAT_READ + 77 * FLAT_OUT
    run(oa, Ok(**u), cost(flat), lambda: chat(gw, key, "flat"))
    # alias_of shares the price
    run(oa, Ok(**u), cost(flat), lambda: chat(gw, key, "alias-m"))
    # priority (fast path, non-stream) x1.7: 1921.85 -> 1922
    run(
        oa,
        Ok(**u, service_tier="priority"),
        cost(flat, mult=FLAT_PRIORITY),
        lambda: chat(gw, key, "flat"),
        "priority",
    )
    # flex (a stream: the tier comes with the usage chunk) x0.5: 565.25 -> 565
    run(
        oa,
        Ok(**u, service_tier="flex"),
        cost(flat, mult=FLAT_FLEX),
        lambda: chat(gw, key, "flat", stream=True),
        "flex",
    )
    # group ratio 1.5 (general exchange), then ratio and priority: 2882.775 -> 2883
    run(oa, Ok(**u), cost(flat, VIP_RATIO), lambda: chat(gw, vip, "flat"))
    run(
        oa,
        Ok(**u, service_tier="priority"),
        cost(flat, VIP_RATIO, FLAT_PRIORITY),
        lambda: chat(gw, vip, "flat", stream=True),
        "priority",
    )
    # whole tiers either side of up_to = 100: every token at the prompt's tier
    run(
        oa,
        Ok(prompt_tokens=100, completion_tokens=10, cached_tokens=20),
        cost(80 * T0_IN + 20 * T0_READ + 10 * T0_OUT),
        lambda: chat(gw, key, "whole-m"),
    )
    run(
        oa,
        Ok(prompt_tokens=101, completion_tokens=10, cached_tokens=20),
        cost(81 * TOP_IN + 20 * TOP_READ + 10 * TOP_OUT),
        lambda: chat(gw, key, "whole-m"),
    )
    # segmented: positions 1..100 at the first tier, the rest at the top-level
    # prices, cached tokens first; output at the whole prompt's tier
    run(
        oa,
        Ok(prompt_tokens=100, completion_tokens=7, cached_tokens=40),
        cost(40 * T0_READ + 60 * T0_IN + 7 * T0_OUT),
        lambda: chat(gw, key, "seg-m"),
    )
    run(
        oa,
        Ok(prompt_tokens=150, completion_tokens=7, cached_tokens=40),
        cost(40 * T0_READ + 60 * T0_IN + 50 * TOP_IN + 7 * TOP_OUT),
        lambda: chat(gw, key, "seg-m"),
    )
    run(  # the cached prefix itself crosses the boundary
        oa,
        Ok(prompt_tokens=150, completion_tokens=7, cached_tokens=120),
        cost(100 * T0_READ + 20 * TOP_READ + 30 * TOP_IN + 7 * TOP_OUT, VIP_RATIO),
        lambda: chat(gw, vip, "seg-m", stream=True),
    )
    # cache read and write (Anthropic reports both): 500 uncached, 300 read, 200 written
    cu = {"prompt_tokens": 1000, "completion_tokens": 50, "cached_tokens": 300}
    claude = 500 * C_IN + 300 * C_READ + 200 * C_WRITE + 50 * C_OUT

    def messages(stream: bool = False) -> str:
        rid = _rid()
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
        kw: dict[str, Any] = {
            "model": "claude-m",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "extra_headers": {"x-request-id": rid},
        }
        if stream:
            with client.messages.stream(**kw) as s:
                for _ in s:
                    pass
        else:
            client.messages.create(**kw)
        return rid

    run(an, Ok(**cu, cache_write_tokens=200), cost(claude), messages, "standard")
    # Anthropic's usage.service_tier "priority", x1.25: 3862.5 -> 3863
    run(
        an,
        Ok(**cu, cache_write_tokens=200, service_tier="priority"),
        cost(claude, mult=C_PRIORITY),
        lambda: messages(stream=True),
        "priority",
    )
    # converted (OpenAI client -> Anthropic channel): the tier read from the answer
    run(
        an,
        Ok(**cu, cache_write_tokens=200, service_tier="priority"),
        cost(claude, VIP_RATIO, C_PRIORITY),
        lambda: chat(gw, vip, "claude-m"),
        "priority",
    )

    for rid, expected, tier, u in cases:
        rec = gw.record_for(rid)
        assert rec["status"] == 200, rec
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (u["p"], u["c"]), rec
        assert rec["cost_micros"] == expected, (rec, expected)
        assert rec["service_tier"] == tier, rec
        assert rec["estimated"] is False and rec["unpriced"] is False, rec


def test_usage_estimated_when_the_upstream_reports_none(billing_gw) -> None:
    gw, oa, an, key, vip = billing_gw
    prompt = "please estimate the cost of this request"
    answer = "An answer whose usage the upstream never reported."
    p = tokens(len(prompt))
    # Non-stream, no usage object at all (fast path).
    oa.script(Ok(content=answer, report_usage=False))
    rid = chat(gw, key, "flat", text=prompt)
    rec = gw.record_for(rid)
    c = tokens(len(answer))
    assert (rec["estimated"], rec["prompt_tokens"], rec["completion_tokens"]) == (True, p, c)
    assert rec["cost_micros"] == cost(p * FLAT_IN + c * FLAT_OUT)
    assert rec["service_tier"] == "default"  # read from the body all the same

    # A stream whose upstream dies after the role chunk and two content chunks:
    # the client got those two pieces (then an error event), and they are billed.
    oa.script(DieMidStream(after_chunks=3, delay=0.2))
    body = {"model": "flat", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    rid = _rid()
    raw, events = _stream_raw(gw, key, body, rid)
    assert events == 4 and b'"error"' in raw  # role, two pieces, the error event
    sent = content_pieces(oa.last.content)[:2]
    assert all(piece.encode() in raw for piece in sent)
    c = tokens(sum(len(piece) for piece in sent))
    rec = gw.record_for(rid)
    assert (rec["status"], rec["estimated"]) == (502, True), rec
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (p, c), rec
    assert rec["cost_micros"] == cost(p * FLAT_IN + c * FLAT_OUT)

    # A stream the client leaves after three events (role and two pieces); the
    # upstream waits 0.5 s between events, so nothing more was sent. General path.
    text = "alpha bravo charlie delta echo foxtrot"
    oa.script(Slow(chunk_delay=0.5, content=text))
    rid = _rid()
    raw, events = _stream_raw(gw, vip, body, rid, stop_after=3)
    assert events == 3
    c = tokens(sum(len(piece) for piece in content_pieces(text)[:2]))
    rec = gw.record_for(rid)
    assert (rec["status"], rec["estimated"]) == (499, True), rec
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (p, c), rec
    assert rec["cost_micros"] == cost(p * FLAT_IN + c * FLAT_OUT, VIP_RATIO)

    # An Anthropic stream cut after message_start, content_block_start, ping and two
    # text deltas: the input count message_start reported is kept, the output
    # (message_delta never came) is estimated from the two pieces sent.
    an.script(DieMidStream(after_chunks=5, delay=0.2))
    body = {
        "model": "claude-m",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    rid = _rid()
    raw, _ = _stream_raw(gw, key, body, rid, path="/v1/messages")
    assert raw.count(b"event: content_block_delta") == 2 and b"event: error" in raw
    reported = an.last.usage["prompt_tokens"]
    c = tokens(sum(len(piece) for piece in content_pieces(an.last.content)[:2]))
    rec = gw.record_for(rid)
    assert (rec["status"], rec["estimated"]) == (502, True), rec
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (reported, c), rec
    assert rec["cost_micros"] == cost(reported * C_IN + c * C_OUT)


def _stream_raw(
    gw: Gateway,
    key: str,
    body: dict[str, Any],
    rid: str,
    stop_after: int = 0,
    path: str = "/v1/chat/completions",
) -> tuple[bytes, int]:
    """POST a stream on a raw socket; read to the end, or close after `stop_after`
    SSE events. Returns the bytes read and the number of events seen."""
    data = json.dumps(body).encode()
    req = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nx-request-id: {rid}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data
    s = socket.create_connection((gw.host, gw.port), timeout=10)
    got = b""
    try:
        s.sendall(req)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if stop_after and got.count(b"data: ") >= stop_after:
                break
    finally:
        s.close()
    return got, got.count(b"data: ")


# --------------------------------------------------------------------------- unpriced


def _cli(gw: Gateway, *args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "fastgate", *args, "--config", str(gw.config_path)],
        cwd=gw.dir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def _admin(gw: Gateway, path: str) -> Any:
    deadline = time.monotonic() + 10
    while not (m := ADMIN_RE.search(gw.stderr_text())):
        assert time.monotonic() < deadline, gw.stderr_text()
        time.sleep(0.05)
    req = urllib.request.Request(
        f"http://{m.group(1)}:{m.group(2)}{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_unpriced_models_served_warned_and_listed(
    backend: str, make_gateway, make_fake, request
) -> None:
    oa = make_fake("oa")
    key = make_key()
    db = ""
    if backend == "postgres":
        db = f'[database]\nurl = "{request.getfixturevalue("pg_db")}"\n'
    text = gateway_config(
        [channel("oa", oa.url, ["flat", "free-m", "free-too"])],
        [token("plain", key)],
        prices=[{"model": "flat", "input": 2.0, "output": 8.0}],
        extra=f'[admin]\nhost = "127.0.0.1"\nport = 0\ntoken = "{ADMIN_TOKEN}"\n' + db,
    )
    gw = make_gateway(text)
    # One warning line at start lists every routed model without a price.
    deadline = time.monotonic() + 5
    while "with no price" not in gw.stderr_text():
        assert time.monotonic() < deadline, gw.stderr_text()
        time.sleep(0.05)
    lines = [ln for ln in gw.stderr_text().splitlines() if "with no price" in ln]
    assert len(lines) == 1 and lines[0].endswith(": free-m, free-too"), lines

    oa.script(Ok(prompt_tokens=30, completion_tokens=4), Ok(prompt_tokens=30, completion_tokens=4))
    rids = [chat(gw, key, "free-m"), chat(gw, key, "flat")]
    free, flat = gw.record_for(rids[0]), gw.record_for(rids[1])
    assert (free["status"], free["cost_micros"], free["unpriced"]) == (200, 0, True), free
    assert (free["prompt_tokens"], free["completion_tokens"]) == (30, 4)
    assert flat["unpriced"] is False and flat["cost_micros"] == cost(30 * 2 * M + 4 * 8 * M)

    def missing_cli() -> dict[str, Any]:
        return {
            r["model"]: r for r in json.loads(_cli(gw, "price", "missing", "--json").stdout)["data"]
        }

    # The records reach the database within ~0.1 s: wait until the CLI sees one.
    deadline = time.monotonic() + 10
    while (rows := missing_cli()).get("free-m", {}).get("unpriced_requests") != 1:
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert set(rows) == {"free-m", "free-too"}
    assert rows["free-m"]["routed"] and not rows["free-m"]["priced"]
    assert rows["free-too"]["unpriced_requests"] == 0 and rows["free-too"]["last_seen"] is None
    assert abs(rows["free-m"]["last_seen"] - free["ts"]) < 1
    human = _cli(gw, "price", "missing").stdout
    assert "free-m" in human and "free-too" in human and "flat" not in human

    admin = {r["model"]: r for r in _admin(gw, "/admin/prices/missing")["data"]}
    assert admin == rows

    # Priced afterwards (a store price): no longer routed unpriced, still seen.
    _cli(gw, "price", "set", "free-m", "--input", "1", "--output", "1")
    rows = missing_cli()
    assert rows["free-m"]["priced"] and not rows["free-m"]["routed"]
    assert rows["free-m"]["unpriced_requests"] == 1 and set(rows) == {"free-m", "free-too"}
    admin = {r["model"]: r for r in _admin(gw, "/admin/prices/missing")["data"]}
    assert admin == rows
