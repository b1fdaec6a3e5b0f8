"""Pricing: usage -> integer micro-dollars (docs/contract.md section 5).

Units. Prices are configured in USD per 1M tokens, i.e. micro-dollars per token;
they are kept as integer pico-dollars per token (x 1e6, exact to 1e-6 USD per 1M
tokens), group ratios and multipliers as integer parts per million, all
converted once when the snapshot is built. The per-request arithmetic is
integer only, with one rounding, half up, to whole micro-dollars:

    cost = (sum of tokens x pico-dollar prices) x ratio_ppm x multiplier_ppm / 1e18

The price model of one `[[prices]]` entry:

- **Token kinds**: the prompt (`Usage.prompt_tokens`, all input) is split into
  cache-read tokens (`cached_tokens`), cache-write tokens (`cache_write_tokens`)
  and the uncached rest; output is `completion_tokens`. Each kind has its price
  (`cache_read` and `cache_write` default to the input price).
- **Tiers** by prompt length: `tiers = [{up_to = N, input, output, cache_read,
  cache_write}, ...]`, `up_to` inclusive and increasing; a tier without `up_to`
  (the last) has no bound. A prompt longer than every `up_to` is priced at the
  entry's own (top-level) prices. A price a tier leaves out is the entry's; a
  cache price left out of both is that tier's input price.
  - `tier_mode = "whole"` (default): the tier the whole prompt's length falls in
    prices every token of the request, input, cache and output alike.
  - `tier_mode = "segmented"`: the prompt is read as positions 1..P in the order
    cache-read tokens, cache-write tokens, uncached tokens (a cached prefix
    comes first); each position is priced at the tier its position falls in
    (tokens 1..up_to[0] at the first tier, the next ones at the second...).
    Output tokens are priced at the tier the whole prompt falls in (as in
    "whole").
- **Multipliers** by the service tier the upstream reported (`Usage.service_tier`):
  "priority" -> `priority_multiplier`; "flex" or "batch" -> `batch_multiplier`;
  anything else (none, "default", "auto", "standard", "scale") -> 1.
- **Group ratio**: the key's group's `ratio` multiplies everything.
- `alias_of` shares another entry's whole price (tiers and multipliers too);
  it is resolved in `price_table`.

A model with no price costs 0 (the record says `unpriced`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastgate.vocab.usage import Usage

PPM = 1_000_000
UNBOUNDED = 1 << 62  # a tier without up_to
_DEN = 10**18  # pico-dollars x ppm x ppm -> micro-dollars


@dataclass(slots=True, frozen=True)
class Tier:
    """One price tier: prompts of at most `up_to` tokens; pico-dollars per token."""

    up_to: int
    input: int
    output: int
    cache_read: int
    cache_write: int


@dataclass(slots=True, frozen=True)
class IntPrice:
    """A model's price, ready for integer arithmetic (pico-dollars per token)."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    # Ascending; the last one unbounded (the top-level prices when the
    # configured tiers all have an up_to). Empty: no tiers.
    tiers: tuple[Tier, ...] = ()
    segmented: bool = False
    batch_ppm: int = PPM  # service tier "flex" / "batch"
    priority_ppm: int = PPM  # service tier "priority"


def pico(usd_per_m: float) -> int:
    """USD per 1M tokens -> integer pico-dollars per token."""
    return round(usd_per_m * 1_000_000)


def to_int_price(
    input: float, output: float, cache_read: float | None, cache_write: float | None
) -> IntPrice:
    """A flat price (no tiers, no multipliers)."""
    return IntPrice(
        pico(input),
        pico(output),
        pico(input if cache_read is None else cache_read),
        pico(input if cache_write is None else cache_write),
    )


def ratio_ppm(ratio: float) -> int:
    return round(ratio * PPM)


def price_from_config(pc: Any) -> IntPrice:
    """An IntPrice from a `PriceConfig` (its own prices; `alias_of` is not followed)."""
    base = to_int_price(pc.input, pc.output, pc.cache_read, pc.cache_write)
    tiers: list[Tier] = []
    for t in pc.tiers:
        inp = pc.input if t.input is None else t.input
        read = t.cache_read if t.cache_read is not None else pc.cache_read
        write = t.cache_write if t.cache_write is not None else pc.cache_write
        tiers.append(
            Tier(
                UNBOUNDED if t.up_to is None else t.up_to,
                pico(inp),
                pico(pc.output if t.output is None else t.output),
                pico(inp if read is None else read),
                pico(inp if write is None else write),
            )
        )
    if tiers and tiers[-1].up_to != UNBOUNDED:
        tiers.append(Tier(UNBOUNDED, base.input, base.output, base.cache_read, base.cache_write))
    return IntPrice(
        base.input,
        base.output,
        base.cache_read,
        base.cache_write,
        tuple(tiers),
        pc.tier_mode == "segmented",
        ratio_ppm(pc.batch_multiplier),
        ratio_ppm(pc.priority_multiplier),
    )


def price_table(prices: Iterable[Any]) -> dict[str, IntPrice]:
    """model -> IntPrice for `[[prices]]` entries (file and store merged).

    `alias_of` is followed to the entry that has prices (the config loader refuses
    chains in the file; store entries may still form one, so every link is
    followed, and an alias whose chain ends nowhere or loops has no price)."""
    by_model = {pc.model: pc for pc in prices}
    out: dict[str, IntPrice] = {}
    for model, pc in by_model.items():
        seen = {model}
        while pc is not None and pc.alias_of:
            target = pc.alias_of
            if target in seen:
                pc = None
                break
            seen.add(target)
            pc = by_model.get(target)
        if pc is not None:
            out[model] = price_from_config(pc)
    return out


def cost_micros(price: IntPrice | None, usage: Usage, ratio_ppm_: int = PPM) -> int:
    """The request's cost in micro-dollars (module docstring), rounded half up once."""
    if price is None:
        return 0
    read = usage.cached_tokens
    write = usage.cache_write_tokens
    uncached = usage.prompt_tokens - read - write
    if uncached < 0:
        uncached = 0
    if price.tiers:
        amount = tiered_pico(price, read, write, uncached, usage.completion_tokens)
    else:
        amount = (
            uncached * price.input
            + read * price.cache_read
            + write * price.cache_write
            + usage.completion_tokens * price.output
        )
    tier = usage.service_tier
    mult = PPM
    if tier:
        if tier == "priority":
            mult = price.priority_ppm
        elif tier == "flex" or tier == "batch":
            mult = price.batch_ppm
    return (amount * ratio_ppm_ * mult + _DEN // 2) // _DEN


def tiered_pico(price: IntPrice, read: int, write: int, uncached: int, output: int) -> int:
    """Pico-dollars of a request under tiered prices (whole or segmented)."""
    total = read + write + uncached
    tiers = price.tiers
    top = tiers[-1]
    for t in tiers:
        if total <= t.up_to:
            top = t  # the tier the whole prompt falls in
            break
    if not price.segmented:
        return (
            uncached * top.input
            + read * top.cache_read
            + write * top.cache_write
            + output * top.output
        )
    # Positions [0, read) are cache reads, [read, read + write) cache writes, the
    # rest uncached; tier i covers positions [previous up_to, up_to).
    amount = output * top.output
    lo = 0
    w_end = read + write
    for t in tiers:
        hi = t.up_to if t.up_to < total else total
        if hi > lo:
            amount += (
                _overlap(lo, hi, 0, read) * t.cache_read
                + _overlap(lo, hi, read, w_end) * t.cache_write
                + _overlap(lo, hi, w_end, total) * t.input
            )
        lo = hi
        if lo >= total:
            break
    return amount


def _overlap(lo: int, hi: int, a: int, b: int) -> int:
    n = (hi if hi < b else b) - (lo if lo > a else a)
    return n if n > 0 else 0


def batch_amount(price: IntPrice, usage: Usage) -> int:
    """One batch result's price before the group ratio and the rounding:
    pico-dollars x `batch_multiplier` (ppm), whatever tier the line reports.
    Summed over a file's results, then rounded once by `micros_of`. (The
    arithmetic of `cost_micros`, not shared with it: that one is on the hot
    path, where every call counts.)"""
    read = usage.cached_tokens
    write = usage.cache_write_tokens
    uncached = usage.prompt_tokens - read - write
    if uncached < 0:
        uncached = 0
    if price.tiers:
        amount = tiered_pico(price, read, write, uncached, usage.completion_tokens)
    else:
        amount = (
            uncached * price.input
            + read * price.cache_read
            + write * price.cache_write
            + usage.completion_tokens * price.output
        )
    return amount * price.batch_ppm


def micros_of(amount: int, ratio_ppm_: int = PPM) -> int:
    """Micro-dollars of a `batch_amount` sum under a group ratio, rounded half up once."""
    return (amount * ratio_ppm_ + _DEN // 2) // _DEN
