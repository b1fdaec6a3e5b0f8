"""Routing strategies and routers end to end (docs/contract.md sections 2 and 3).

A real fastgate in front of fake upstreams. Which candidate a strategy chose is
read from the fakes (each answers "Hello from <name>" and records every request
with its arrival time and body), never from the gateway; prices, latencies
(`Ok(first_byte_delay=...)`) and locality are scripted per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.openai_fake import Fail, FakeOpenAI, Ok, closed_port
from tests.harness import REPO_ROOT, Gateway, channel, gateway_config, make_key, token, toml_table

MSGS = [{"role": "user", "content": "which way please"}]
FAST_TIMEOUTS = {"connect_timeout": 1.0, "first_byte_timeout": 3.0}
ADMIN_TOKEN = "adm-routers-" + make_key()[3:20]


def post(gw: Gateway, key: str, model: str, **extra: Any) -> httpx2.Response:
    return httpx2.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": MSGS, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=20,
    )


def served_by(resp: httpx2.Response) -> str:
    assert resp.status_code == 200, resp.text
    content = resp.json()["choices"][0]["message"]["content"]
    assert content.startswith("Hello from ")
    return content.removeprefix("Hello from ")


def sequence(*fakes: Any) -> list[str]:
    """Names of the fakes in the order requests reached them."""
    hits = [(r.t, f.name) for f in fakes for r in f.requests]
    return [name for _, name in sorted(hits)]


def routers_toml(*routers: dict[str, Any]) -> str:
    return "\n".join(toml_table("routers", r, array=True) for r in routers)


def admin_toml(port: int) -> str:
    return toml_table("admin", {"port": port, "token": ADMIN_TOKEN})


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fastgate",
            "router",
            "list",
            "--config",
            str(gw.config_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(gw.dir),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


# --------------------------------------------------------------------------- cost


def test_cost_orders_channels_by_the_price_of_their_upstream_model(
    make_gateway, make_fake, demo_key: str
) -> None:
    """One model, four channels: each serves it under another upstream name (model_map)
    with its own price; cheapest first, priority breaking a tie, failover in that order."""
    big, small, tie, plain = (make_fake(n) for n in ("big", "small", "tie", "plain"))
    m = "gpt-x"
    chans = [
        channel("big", big.url, [m], model_map={m: "gpt-big"}, priority=10),
        channel("small", small.url, [m], model_map={m: "gpt-small"}, priority=0),
        channel("tie", tie.url, [m], model_map={m: "gpt-small"}, priority=7),
        channel("plain", plain.url, [m], priority=5),  # the public model's own price
    ]
    prices = [
        {"model": "gpt-big", "input": 10.0, "output": 30.0},
        {"model": "gpt-small", "input": 0.1, "output": 0.4},
        {"model": m, "input": 1.0, "output": 2.0},
    ]
    gw = make_gateway(
        channels=chans,
        tokens=[token("t", demo_key)],
        prices=prices,
        routing={"strategy": "cost", "max_attempts": 4},
        server=FAST_TIMEOUTS,
    )
    # Cheapest first: tie and small share the cheapest price, tie has the higher priority.
    assert served_by(post(gw, demo_key, m)) == "tie"
    assert tie.last.json["model"] == "gpt-small"
    # Every cheaper candidate fails: failover walks the price order to the dearest.
    tie.script(Fail(500))
    small.script(Fail(500))
    plain.script(Fail(503))
    resp = post(gw, demo_key, m)
    assert served_by(resp) == "big"
    assert sequence(big, small, tie, plain)[1:] == ["tie", "small", "plain", "big"]
    assert big.last.json["model"] == "gpt-big"
    rec = gw.record_for(resp.headers["x-request-id"])
    assert (rec["channel"], rec["attempts"], rec["router"]) == ("big", 4, "")


# --------------------------------------------------------------------------- latency


def test_latency_measures_unmeasured_first_then_takes_the_fastest(
    make_gateway, make_fake, demo_key: str
) -> None:
    slow, quick = make_fake("slow"), make_fake("quick")
    slow.set_behaviour(Ok(first_byte_delay=0.3))
    port = closed_port()
    gw = make_gateway(
        channels=[
            channel("slow", slow.url, ["m"], priority=10),
            channel("quick", quick.url, ["m"], priority=0),
        ],
        tokens=[token("t", demo_key)],
        routing={"strategy": "latency"},
        server=FAST_TIMEOUTS,
        extra=admin_toml(port),
    )
    # Neither is measured: priority decides (slow), then the other unmeasured one.
    assert [served_by(post(gw, demo_key, "m")) for _ in range(2)] == ["slow", "quick"]
    # Both measured: the lower moving average of time to first byte wins, priority or not.
    assert [served_by(post(gw, demo_key, "m")) for _ in range(2)] == ["quick", "quick"]
    # quick slows down (0.8 s to its first byte, twice): its average passes slow's.
    quick.script(Ok(first_byte_delay=0.8), Ok(first_byte_delay=0.8))
    assert [served_by(post(gw, demo_key, "m")) for _ in range(2)] == ["quick", "quick"]
    assert served_by(post(gw, demo_key, "m")) == "slow"
    assert sequence(slow, quick) == ["slow", "quick", "quick", "quick", "quick", "quick", "slow"]

    # The admin API shows the order worker 0 uses now, and why.
    resp = httpx2.get(
        f"http://127.0.0.1:{port}/admin/routers",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["measured"] is True and report["strategy"] == "latency"
    (route,) = [r for r in report["models"] if r["name"] == "m"]
    assert route["strategy"] == "latency"
    order = route["order"]
    assert [c["channel"] for c in order] == ["slow", "quick"]
    assert [c["samples"] for c in order] == [2, 5]
    assert 300 <= order[0]["ewma_ms"] < order[1]["ewma_ms"]
    assert order[0]["why"].startswith("EWMA ")

    # The CLI asks the running gateway (admin token and port from the config file).
    out = cli(gw, "--models", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["source"] == "gateway"
    (cli_route,) = [r for r in doc["models"] if r["name"] == "m"]
    assert [c["channel"] for c in cli_route["order"]] == ["slow", "quick"]
    human = cli(gw, "--models")
    assert human.returncode == 0, human.stderr
    assert "of the running gateway" in human.stdout
    assert "model m (group default, strategy latency)" in human.stdout
    # --offline: from the config alone, nothing measured: priority order, EWMA unknown.
    off = cli(gw, "--models", "--offline", "--json")
    assert off.returncode == 0, off.stderr
    doc = json.loads(off.stdout)
    assert doc["source"] == "config" and doc["measured"] is False
    (off_route,) = [r for r in doc["models"] if r["name"] == "m"]
    assert [(c["channel"], c["ewma_ms"]) for c in off_route["order"]] == [
        ("slow", None),
        ("quick", None),
    ]


# --------------------------------------------------------------------------- local-first


def test_local_first_prefers_local_channels(make_gateway, make_fake, demo_key: str) -> None:
    """`local = true` channels first (an ollama channel is local unless it says not),
    priority among them; remote ones after, whatever their priority."""
    remote, lan = make_fake("remote"), make_fake("lan")
    ollama = FakeOllama("ollama")
    ollama.start()
    try:
        gw = make_gateway(
            channels=[
                channel("remote", remote.url, ["llama"], priority=10),
                channel("lan", lan.url, ["llama"], priority=0, local=True),
                {
                    "name": "ollama",
                    "type": "ollama",
                    "base_url": ollama.url,
                    "models": ["llama"],
                    "priority": 5,
                },
            ],
            tokens=[token("t", demo_key)],
            routing={"strategy": "local-first"},
            server=FAST_TIMEOUTS,
        )
        assert served_by(post(gw, demo_key, "llama")) == "ollama"
        ollama.script(Fail(500))
        assert served_by(post(gw, demo_key, "llama")) == "lan"
        ollama.script(Fail(500))
        lan.script(Fail(500))
        assert served_by(post(gw, demo_key, "llama")) == "remote"
        assert remote.request_count == 1
        assert sequence(remote, lan, ollama) == [
            "ollama",
            "ollama",
            "lan",
            "ollama",
            "lan",
            "remote",
        ]
    finally:
        ollama.stop()


# --------------------------------------------------------------------------- routers


def router_gateway(make_gateway, a: FakeOpenAI, b: FakeOpenAI, keys: dict[str, str], **kw: Any):
    """Two member models, each served by its own fake: m-a by `a`, m-b by `b` (which
    knows it as m-b-2024); routers "smart" (ordered) and "thrifty" (cost)."""
    return make_gateway(
        channels=[
            channel("ch-a", a.url, ["m-a"]),
            channel("ch-b", b.url, ["m-b"], model_map={"m-b": "m-b-2024"}),
        ],
        tokens=[token(name, key, **kw.pop(name, {})) for name, key in keys.items()],
        prices=[
            {"model": "m-a", "input": 5.0, "output": 15.0},
            {"model": "m-b-2024", "input": 0.5, "output": 1.5},
        ],
        server=FAST_TIMEOUTS,
        extra=routers_toml(
            {"name": "smart", "models": ["m-a", "m-b"]},
            {"name": "thrifty", "models": ["m-a", "m-b"], "strategy": "cost"},
        ),
        **kw,
    )


def test_router_rewrites_the_model_fails_over_and_names_itself(
    make_gateway, make_fake, demo_key: str
) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = router_gateway(make_gateway, a, b, {"t": demo_key})
    # "ordered": the router's list; the request's model is rewritten to the member's.
    resp = post(gw, demo_key, "smart")
    assert served_by(resp) == "a"
    assert a.last.json["model"] == "m-a"
    rec = gw.record_for(resp.headers["x-request-id"])
    assert (rec["router"], rec["model"], rec["upstream_model"]) == ("smart", "m-a", "m-a")

    # The first candidate fails: failover walks the router's list to the next model.
    a.script(Fail(500))
    resp = post(gw, demo_key, "smart", stream=True)
    assert resp.status_code == 200
    assert "Hello from b" in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in resp.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    assert sequence(a, b) == ["a", "a", "b"]
    assert b.last.json["model"] == "m-b-2024"
    rec = gw.record_for(resp.headers["x-request-id"])
    assert rec["router"] == "smart"
    assert (rec["model"], rec["upstream_model"], rec["channel"]) == ("m-b", "m-b-2024", "ch-b")
    assert (rec["attempts"], rec["status"]) == (2, 200)
    assert rec["completion_tokens"] == b.last_usage["completion_tokens"]

    # "cost": the cheaper member first (m-b's upstream name carries the price).
    resp = post(gw, demo_key, "thrifty")
    assert served_by(resp) == "b"
    assert gw.record_for(resp.headers["x-request-id"])["router"] == "thrifty"

    # Another ingress: an Anthropic client through the router, converted for OpenAI
    # channels; the answer names the member model that served it.
    msg = anthropic.Anthropic(base_url=gw.url, api_key=demo_key, max_retries=0).messages.create(
        model="smart", max_tokens=32, messages=MSGS
    )
    assert msg.content[0].text == "Hello from a"
    assert msg.model == "m-a"
    assert a.last.json["model"] == "m-a"


def test_models_list_and_allow_lists_with_routers(make_gateway, make_fake) -> None:
    a, b = make_fake("a"), make_fake("b")
    keys = {n: make_key() for n in ("all", "router-only", "member-only", "broke")}
    gw = router_gateway(
        make_gateway,
        a,
        b,
        keys,
        **{
            "router-only": {"models": ["smart"]},
            "member-only": {"models": ["m-a"]},
            "broke": {"quota_usd": 0},
        },
    )
    names = {m.id for m in sdk(gw, keys["all"]).models.list()}
    assert names == {"m-a", "m-b", "smart", "thrifty"}

    # A router in the allow-list allows the router, not its members directly.
    only = sdk(gw, keys["router-only"])
    assert [m.id for m in only.models.list()] == ["smart"]
    got = only.chat.completions.create(model="smart", messages=MSGS)
    assert got.choices[0].message.content == "Hello from a"
    with pytest.raises(openai.PermissionDeniedError):
        only.chat.completions.create(model="m-a", messages=MSGS)
    with pytest.raises(openai.PermissionDeniedError):
        only.chat.completions.create(model="thrifty", messages=MSGS)
    # ...and a member in the allow-list does not allow a router that contains it.
    member = sdk(gw, keys["member-only"])
    assert [m.id for m in member.models.list()] == ["m-a"]
    with pytest.raises(openai.PermissionDeniedError):
        member.chat.completions.create(model="smart", messages=MSGS)
    # Refused before any candidate: the record names the router as the model too.
    resp = post(gw, keys["broke"], "smart")
    assert resp.status_code == 402
    rec = gw.record_for(resp.headers["x-request-id"])
    assert (rec["router"], rec["model"], rec["channel"]) == ("smart", "smart", "")
    assert a.request_count == 1 and b.request_count == 0


def test_routers_with_workers_and_the_offline_cli(make_gateway, make_fake, demo_key) -> None:
    a, b = make_fake("a"), make_fake("b")
    gw = router_gateway(make_gateway, a, b, {"t": demo_key}, args=["--workers", "2"])
    a.set_behaviour(Fail(503))
    for _ in range(4):  # whichever worker answers, the router fails over to m-b
        assert served_by(post(gw, demo_key, "smart")) == "b"
    recs = gw.wait_records(4)
    assert {(r["router"], r["model"], r["attempts"]) for r in recs} == {("smart", "m-b", 2)}

    out = cli(gw)  # no admin token in this config: the order from the config file
    assert out.returncode == 0, out.stderr
    assert "EWMA not known" in out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("router thrifty (group default, strategy cost; models m-a, m-b)")
    rows = [line.split() for line in lines[at + 2 : at + 4]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "m-b", "ch-b"), ("2", "m-a", "ch-a")]
    assert "$2 per 1M tokens (m-b-2024: input 0.5 + output 1.5)" in lines[at + 2]
    doc = json.loads(cli(gw, "--json").stdout)
    assert "models" not in doc
    smart = next(r for r in doc["routers"] if r["name"] == "smart")
    assert smart["models"] == ["m-a", "m-b"]
    assert [(c["model"], c["why"]) for c in smart["order"]] == [
        ("m-a", "models[0] = m-a, priority 0"),
        ("m-b", "models[1] = m-b, priority 0"),
    ]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            '[routing]\nstrategy = "fastest"\n',
            'routing.strategy: must be one of "priority", "cost", "latency", '
            '"local-first"; got "fastest"',
        ),
        (
            routers_toml({"name": "r", "models": ["m", "nope"]}),
            'routers[0].models[1]: unknown model "nope": no channel serves it',
        ),
        (
            routers_toml({"name": "r", "models": ["m"], "strategy": "random"}),
            "routers[0].strategy: must be one of",
        ),
        (routers_toml({"name": "m", "models": ["m"]}), 'routers[0].name: "m" is a model'),
    ],
)
def test_config_refuses_unknown_strategy_or_model(tmp_path, extra: str, problem: str) -> None:
    text = gateway_config([channel("c", "http://127.0.0.1:9", ["m"])], extra=extra)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "fastgate", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert out.returncode == 2
    assert problem in out.stderr, out.stderr


def test_server_refuses_to_start_on_a_router_naming_an_unknown_model(make_gateway) -> None:
    text = gateway_config(
        [channel("c", "http://127.0.0.1:9", ["m"])],
        extra=routers_toml({"name": "r", "models": ["gone"]}),
    )
    with pytest.raises(RuntimeError, match='unknown model "gone"'):
        make_gateway(text, timeout=15)
