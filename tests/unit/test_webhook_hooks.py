"""The hook points the webhooks listen at, sans I/O: breaker transitions with the
state before them and the failure that opened them, and budget thresholds told
once per threshold per period, off the hot path."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fastgate.gateway import budgets as budgets_mod
from fastgate.gateway.breaker import CLOSED, HALF_OPEN, OPEN, Breakers
from fastgate.gateway.budgets import Budgets


def test_breaker_transitions_carry_the_state_before_and_the_last_error() -> None:
    brs = Breakers(threshold=2, cooldown=10.0)
    heard: list[tuple[Any, ...]] = []
    brs.on_transition = lambda b, was: heard.append((b.key, was, b.state, b.last_error))
    b = brs.get("ch", "m")
    b.failure(0.0, "HTTP 500")
    assert heard == []
    b.failure(1.0, "HTTP 401")
    assert heard == [(("ch", "m"), CLOSED, OPEN, "HTTP 401")]
    assert b.allow(12.0)  # half-open: the probe
    b.failure(12.0, "timeout")  # a failed probe reopens it
    assert heard[-1] == (("ch", "m"), HALF_OPEN, OPEN, "timeout")
    assert b.allow(23.0)
    b.success()
    assert heard[-1] == (("ch", "m"), HALF_OPEN, CLOSED, "timeout")
    brs.apply("ch", "m", OPEN, 30.0, 2)  # a sibling's news: no transition of ours
    assert len(heard) == 3


def _budgets(*budgets: tuple[str, str, int, str]) -> tuple[Budgets, list[tuple[Any, ...]]]:
    b = Budgets()
    b.snapshot = SimpleNamespace(
        tokens={"h1": SimpleNamespace(budgets=budgets), "h2": SimpleNamespace(budgets=budgets)}
    )
    told: list[tuple[Any, ...]] = []
    b.on_threshold = lambda *a: told.append((a[0], a[1], a[5], a[6]))
    return b, told


def test_budget_thresholds_once_each_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budgets_mod.CLOCK, "offset", 0.0)
    b, told = _budgets(("key", "k", 1000, "day"), ("group", "g", 2000, "week"))
    tok = SimpleNamespace(budgets=b.snapshot.tokens["h1"].budgets)
    b.charge(tok, 700)
    b.check_thresholds()
    assert told == []
    b.charge(tok, 100)  # key at 80 %, group at 40 %
    b.check_thresholds()
    b.check_thresholds()
    assert told == [("key", "k", 800, 80)]
    b.charge(tok, 900)  # key at 170 %, group 85 %: the key's 100, the group's 80
    b.check_thresholds()
    assert told[1:] == [("key", "k", 1700, 100), ("group", "g", 1700, 80)]
    b.charge(tok, 300)
    b.check_thresholds()
    assert told[3:] == [("group", "g", 2000, 100)]


def test_a_jump_past_both_tells_both_and_a_new_period_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budgets_mod.CLOCK, "offset", 0.0)
    b, told = _budgets(("key", "k", 1000, "day"))
    tok = SimpleNamespace(budgets=b.snapshot.tokens["h1"].budgets)
    b.charge(tok, 1500)
    b.check_thresholds()
    assert told == [("key", "k", 1500, 80), ("key", "k", 1500, 100)]
    monkeypatch.setattr(budgets_mod.CLOCK, "offset", 86400.0)  # the next day
    b.check_thresholds()
    assert len(told) == 2  # nothing spent yet this period
    b.charge(tok, 900)
    b.check_thresholds()
    assert told[2:] == [("key", "k", 900, 80)]


def test_budgets_clear_is_admit_without_its_side_effects() -> None:
    """`Budgets.clear` (the fast path's look) says yes exactly when `admit` would
    admit at once, and neither counts a refusal nor starts a fleet read."""
    from fastgate.metrics import Metrics

    m = Metrics()
    fleet = Budgets(counters=object(), metrics=m)  # the redis backend's shape
    tok = SimpleNamespace(budgets=(("key", "k", 1000, "day"), ("group", "g", 5000, "week")))
    assert fleet.clear(tok) is False  # no cost seen yet here: admit reads the fleet first
    pending = fleet.admit(tok)
    assert pending is not None
    pending.close()
    fleet.last[("key", "k")] = fleet.last[("group", "g")] = 10
    assert fleet.clear(tok) is True and fleet.admit(tok) is None
    (k,) = [st[0] for st in fleet._standing(tok) if st[0][1] == "k"]  # this day's key
    fleet.spent[k] = 980  # 20 left, within NEAR x the last cost (10): read fresh
    assert fleet.clear(tok) is False
    fleet.spent[k] = 1000  # spent: admit refuses, clear only says no
    assert fleet.clear(tok) is False
    assert m.counters.get(budgets_mod.REFUSED) is None
    with pytest.raises(Exception) as info:
        fleet.admit(tok)
    assert type(info.value).__name__ == "BudgetExceeded"
    assert m.counters[budgets_mod.REFUSED] == {(): 1}
    local = Budgets()  # one instance (memory): never a fleet read
    assert local.clear(tok) is True and local.admit(tok) is None
