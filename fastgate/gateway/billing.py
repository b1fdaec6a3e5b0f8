"""Pricing: usage -> integer micro-dollars.

Prices are configured in USD per 1M tokens, i.e. micro-dollars per token. They
are turned into integer nano-dollars per token once (snapshot build), and group
ratios into integer parts-per-million, so the per-request arithmetic is integer
only: no float ever holds money.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgate.vocab.usage import Usage


@dataclass(slots=True, frozen=True)
class IntPrice:
    """Nano-dollars per token."""

    input: int
    output: int
    cache_read: int
    cache_write: int


def to_int_price(
    input: float, output: float, cache_read: float | None, cache_write: float | None
) -> IntPrice:
    def nano(usd_per_m: float) -> int:
        return round(usd_per_m * 1000)

    return IntPrice(
        nano(input),
        nano(output),
        nano(input if cache_read is None else cache_read),
        nano(input if cache_write is None else cache_write),
    )


def ratio_ppm(ratio: float) -> int:
    return round(ratio * 1_000_000)


def cost_micros(price: IntPrice | None, usage: Usage, ratio_ppm_: int = 1_000_000) -> int:
    """ratio x (uncached input x input + cache read x cache_read + cache write x
    cache_write + output x output), rounded half up to whole micro-dollars."""
    if price is None:
        return 0
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    if uncached < 0:
        uncached = 0
    nano = (
        uncached * price.input
        + usage.cached_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
        + usage.completion_tokens * price.output
    )
    # nano-dollars x ppm -> micro-dollars: divide by 1e3 * 1e6, rounding half up.
    den = 1_000_000_000
    return (nano * ratio_ppm_ + den // 2) // den
