"""Strategies and routers, sans I/O: the order a snapshot's routes give, the EWMA,
fast-path eligibility, and the report the admin API and CLI print."""

from __future__ import annotations

from typing import Any

from fastgate.config import parse_config
from fastgate.gateway.route_report import describe
from fastgate.gateway.strategies import ALPHA, Latency, bind_latency
from fastgate.snapshot import build_snapshot


def snapshot(strategy: str = "priority", routers: list[dict[str, Any]] | None = None) -> Any:
    doc = {
        "routing": {"strategy": strategy},
        "channels": [
            {
                "name": "dear",
                "type": "openai",
                "base_url": "http://a.test",
                "models": ["m", "x"],
                "model_map": {"m": "m-big"},
                "priority": 10,
            },
            {"name": "cheap", "type": "openai", "base_url": "http://b.test", "models": ["m"]},
            {
                "name": "mapped",
                "type": "openai",
                "base_url": "http://c.test",
                "models": ["m"],
                "model_map": {"m": "m-free"},
                "priority": 20,
            },
            {
                "name": "home",
                "type": "ollama",
                "base_url": "http://d.test",
                "models": ["m", "y"],
                "priority": -5,
            },
        ],
        "prices": [
            {"model": "m-big", "input": 10.0, "output": 30.0},
            {"model": "m", "input": 1.0, "output": 1.0},
            {"model": "x", "input": 0.1, "output": 0.1},
        ],
        "routers": routers or [],
    }
    return build_snapshot(parse_config(doc))


def names(route: Any) -> list[str]:
    return [c.name for c in route.order()]


def test_priority_is_the_default() -> None:
    snap = snapshot()
    assert names(snap.routes[("default", "m")]) == ["mapped", "dear", "cheap", "home"]
    assert snap.plans[("default", "m")].fast is False  # ollama is not fast-path


def test_cost_prices_the_upstream_model_and_puts_unpriced_last() -> None:
    snap = snapshot("cost")
    # cheap and home serve "m" itself ($2 per 1M); dear serves m-big ($40); mapped
    # serves m-free, which has no price: m's own applies. Priority breaks the tie.
    order = names(snap.routes[("default", "m")])
    assert order == ["mapped", "cheap", "home", "dear"]


def test_local_first_and_ollama_default() -> None:
    snap = snapshot("local-first")
    assert snap.channels["home"].local is True
    assert names(snap.routes[("default", "m")]) == ["home", "mapped", "dear", "cheap"]


def test_latency_unmeasured_first_then_by_ewma() -> None:
    snap = snapshot("latency")
    route = snap.routes[("default", "m")]
    assert route.measure and not route.static
    assert snap.plans[("default", "m")].fast is False
    table = Latency()
    bind_latency(snap.routes, table)
    assert names(route) == ["mapped", "dear", "cheap", "home"]
    table.sample("mapped", "m", 0.5)
    table.sample("cheap", "m", 0.1)
    assert names(route) == ["dear", "home", "cheap", "mapped"]
    table.sample("dear", "m", 0.3)
    table.sample("home", "m", 0.2)
    assert names(route) == ["cheap", "home", "dear", "mapped"]
    table.sample("cheap", "m", 1.1)  # 0.1 + ALPHA * (1.1 - 0.1)
    assert table.ewma[("cheap", "m")] == 0.1 + ALPHA * 1.0
    assert names(route) == ["home", "dear", "cheap", "mapped"]
    report = describe(snap, table)
    (m,) = [r for r in report["models"] if r["name"] == "m"]
    assert [c["channel"] for c in m["order"]] == ["home", "dear", "cheap", "mapped"]
    assert [c["samples"] for c in m["order"]] == [1, 1, 2, 1]


def test_router_candidates_carry_their_member_model() -> None:
    snap = snapshot(
        routers=[
            {"name": "r", "models": ["y", "m", "x"]},
            {"name": "c", "models": ["y", "m", "x"], "strategy": "cost"},
        ]
    )
    route = snap.routes[("default", "r")]
    assert route.router == "r" and snap.plans[("default", "r")].fast is False
    pairs = [(c.member, c.name) for c in route.order()]
    assert pairs[0] == ("y", "home")
    assert pairs[1:5] == [("m", "mapped"), ("m", "dear"), ("m", "cheap"), ("m", "home")]
    assert pairs[5] == ("x", "dear")
    cost = [(c.member, c.name) for c in snap.routes[("default", "c")].order()]
    assert cost[0] == ("x", "dear")  # x: $0.2 per 1M on the same channel that serves m-big
    assert cost[-2:] == [("m", "dear"), ("y", "home")]  # y has no price at all: last
    assert snap.routers_by_group == {"default": ["r", "c"]}
    report = describe(snap)
    (r,) = [x for x in report["routers"] if x["name"] == "r"]
    assert r["models"] == ["y", "m", "x"]
    assert r["order"][0]["why"] == "models[0] = y, priority -5"


def test_a_latency_router_measures_each_member_on_its_channel() -> None:
    snap = snapshot(routers=[{"name": "fast", "models": ["x", "y"], "strategy": "latency"}])
    route = snap.routes[("default", "fast")]
    assert route.measure and route.router == "fast"
    table = Latency()
    bind_latency(snap.routes, table)
    assert [(c.member, c.name) for c in route.order()] == [("x", "dear"), ("y", "home")]
    table.sample("dear", "x", 0.4)
    table.sample("dear", "m", 0.01)  # the same channel for another model: not this pair
    assert [(c.member, c.name) for c in route.order()] == [("y", "home"), ("x", "dear")]
    table.sample("home", "y", 0.5)
    assert [(c.member, c.name) for c in route.order()] == [("x", "dear"), ("y", "home")]
