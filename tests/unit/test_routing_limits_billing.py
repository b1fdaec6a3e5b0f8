"""Sans-IO parts of the gateway: routing order, breaker, rate limits, billing."""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgate import errors
from fastgate.gateway import limits as limits_mod
from fastgate.gateway.billing import cost_micros, ratio_ppm, to_int_price
from fastgate.gateway.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Breakers
from fastgate.gateway.limits import Limits
from fastgate.gateway.routing import Route, attempt_plan
from fastgate.vocab.usage import Usage


@dataclass(eq=False)
class Ch:
    name: str
    priority: int = 0
    weight: int = 1
    rpm: int = 0


# ----------------------------------------------------------------- routing


def test_priority_levels_come_first() -> None:
    hi, lo1, lo2 = Ch("hi", priority=10), Ch("lo1"), Ch("lo2")
    route = Route([lo1, hi, lo2])
    for _ in range(20):
        order = route.order()
        assert order[0] is hi
        assert set(order[1:]) == {lo1, lo2}


def test_all_zero_weights_round_robin() -> None:
    chans = [Ch("a", weight=0), Ch("b", weight=0), Ch("c", weight=0)]
    route = Route(chans)
    firsts = [route.order()[0].name for _ in range(30)]
    assert collections.Counter(firsts) == {"a": 10, "b": 10, "c": 10}
    assert firsts[:3] == ["a", "b", "c"]


def test_weighted_choice_is_proportional() -> None:
    heavy, light = Ch("heavy", weight=9), Ch("light", weight=1)
    route = Route([heavy, light])
    n = 5000
    heavy_first = sum(route.order()[0] is heavy for _ in range(n))
    # Expected 90 %; binomial sd is ~0.4 %, so 86..94 % is a wide margin.
    assert 0.86 * n < heavy_first < 0.94 * n


def test_weight_zero_channel_is_last_resort_within_its_level() -> None:
    w, z = Ch("w", weight=5), Ch("z", weight=0)
    route = Route([z, w])
    for _ in range(50):
        assert [c.name for c in route.order()] == ["w", "z"]


@given(st.integers(1, 6), st.integers(1, 8))
def test_attempt_plan_never_repeats_a_channel_back_to_back(n: int, attempts: int) -> None:
    order = [Ch(f"c{i}") for i in range(n)]
    plan = list(attempt_plan(order, attempts))
    assert len(plan) == (1 if n == 1 else attempts)
    assert all(a is not b for a, b in itertools.pairwise(plan))
    assert plan[: min(n, attempts)] == order[: min(n, attempts)]


# ----------------------------------------------------------------- breaker


def test_breaker_opens_cools_down_and_probes_once() -> None:
    b = Breaker(threshold=3, cooldown=10.0)
    for i in range(3):
        assert b.allow(now=float(i))
        b.failure(now=float(i))
    assert b.state == OPEN
    assert not b.allow(now=5.0)
    assert b.allow(now=12.5)  # cooldown over: the probe
    assert b.state == HALF_OPEN
    assert not b.allow(now=12.6)  # only one probe at a time
    b.failure(now=13.0)
    assert b.state == OPEN and not b.allow(now=14.0)
    assert b.allow(now=23.5)
    b.success()
    assert b.state == CLOSED and b.allow(now=23.6) and b.allow(now=23.7)


def test_breaker_success_resets_the_count() -> None:
    b = Breaker(threshold=2, cooldown=1.0)
    b.failure(now=0)
    b.success()
    b.failure(now=1)
    assert b.state == CLOSED


def test_breakers_report_opens_and_closes_and_apply_news_without_echo() -> None:
    told: list[tuple[tuple[str, str], str]] = []
    brs = Breakers(threshold=2, cooldown=10.0)
    brs.on_change = lambda b: told.append((b.key, b.state))
    b = brs.get("ch", "m")
    b.failure(now=0.0)
    b.success()  # closed -> closed: not a change
    b.failure(now=1.0)
    b.failure(now=2.0)
    b.failure(now=3.0)  # still open: not a change
    assert told == [(("ch", "m"), OPEN)]
    assert b.allow(now=13.0) and b.state == HALF_OPEN
    b.success()
    assert told[-1] == (("ch", "m"), CLOSED) and len(told) == 2
    # A sibling's news: applied, not told again; the state is the module's constant.
    brs.apply("ch", "m", "".join(["o", "pen"]), 20.0, 2)
    assert b.state is OPEN and b.opened_at == 20.0 and not b.allow(now=25.0)
    assert brs.export() == [["ch", "m", OPEN, 20.0, 2]]
    brs.apply("ch", "m", "closed", 0.0, 0)
    assert b.state is CLOSED and brs.export() == [] and len(told) == 2


# ----------------------------------------------------------------- limits


@dataclass
class Tok:
    name: str = "k"
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int = 0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(limits_mod.time, "monotonic", c)
    return c


def _retry_after(exc: pytest.ExceptionInfo[errors.RateLimited]) -> int:
    return int(dict(exc.value.headers)[b"retry-after"])


def test_rpm_is_a_sliding_window(clock: Clock) -> None:
    lim, tok = Limits(), Tok(rpm=3)
    for dt in (0.0, 10.0, 20.0):
        clock.t += dt
        lim.admit(tok)
    clock.t += 5  # t = +35 s: the window holds 3
    with pytest.raises(errors.RateLimited) as exc:
        lim.admit(tok)
    # The first request (at +0) leaves the window at +60 plus at most one log
    # bucket (0.1 s: admissions are counted from their bucket's end): 25.1 s.
    assert _retry_after(exc) == 26
    clock.t += 25.11
    lim.admit(tok)  # one slot freed
    with pytest.raises(errors.RateLimited):
        lim.admit(tok)


def test_retry_after_is_at_least_one_second(clock: Clock) -> None:
    lim, tok = Limits(), Tok(rpm=1)
    lim.admit(tok)
    clock.t += 59.9
    with pytest.raises(errors.RateLimited) as exc:
        lim.admit(tok)
    assert _retry_after(exc) == 1


def test_tpm_counts_tokens_when_requests_end(clock: Clock) -> None:
    lim, tok = Limits(), Tok(tpm=100)
    lim.admit(tok)
    lim.done(tok, 60)
    lim.admit(tok)  # 60 < 100: still admitted
    lim.done(tok, 50)
    with pytest.raises(errors.RateLimited):
        lim.admit(tok)  # 110 >= 100
    clock.t += 60.5
    lim.admit(tok)


def test_max_concurrency(clock: Clock) -> None:
    lim, tok = Limits(), Tok(max_concurrency=2)
    lim.admit(tok)
    lim.admit(tok)
    with pytest.raises(errors.RateLimited):
        lim.admit(tok)
    lim.done(tok, 0)
    lim.admit(tok)


def test_channel_rpm(clock: Clock) -> None:
    lim, ch = Limits(), Ch("c", rpm=2)
    assert lim.channel_allows(ch) and lim.channel_allows(ch)
    assert not lim.channel_allows(ch)
    clock.t += 61
    assert lim.channel_allows(ch)


# ----------------------------------------------------------------- billing


def test_cost_formula_in_integer_micro_dollars() -> None:
    # gpt-4o-like prices, USD per 1M tokens.
    price = to_int_price(2.5, 10.0, 1.25, 3.125)
    usage = Usage(prompt_tokens=1_000, completion_tokens=500, cached_tokens=200, found=True)
    # (800 x 2.5 + 200 x 1.25 + 500 x 10) micro-dollars = 2000 + 250 + 5000
    assert cost_micros(price, usage) == 7_250
    assert cost_micros(price, usage, ratio_ppm(0.5)) == 3_625
    with_write = Usage(prompt_tokens=1_000, completion_tokens=0, cache_write_tokens=400, found=True)
    assert cost_micros(price, with_write) == 600 * 2.5 + 400 * 3.125


def test_cache_prices_default_to_input_price() -> None:
    price = to_int_price(3.0, 15.0, None, None)
    usage = Usage(prompt_tokens=10, cached_tokens=10, found=True)
    assert cost_micros(price, usage) == 30


@given(
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
)
def test_cost_is_an_int_and_rounds_half_up(p: int, c: int, pin: float, pout: float) -> None:
    price = to_int_price(pin, pout, None, None)
    cost = cost_micros(price, Usage(prompt_tokens=p, completion_tokens=c, found=True))
    assert isinstance(cost, int)
    exact_pico = p * price.input + c * price.output  # pico-dollars
    assert cost == (exact_pico + 500_000) // 1_000_000
