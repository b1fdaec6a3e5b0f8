"""`fastgate price set|delete|sync|missing`: model prices in USD per 1M tokens (get
and list are generic, see `fastgate.cli.views`).

`missing` lists the models with no price: routed by the config (file and store)
or seen served unpriced in the usage records (cost 0, docs/contract.md section 5).

`sync` imports LiteLLM's model_prices_and_context_window.json (USD per token),
converting exactly in decimal; entries the config file defines stay the file's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fastgate.cli.render import table, warn
from fastgate.cli.session import Refused, Session, UsageError
from fastgate.cli.views import MISSING_PRICES, MONEY, PRICE


async def set_price(s: Session, a: argparse.Namespace) -> int:
    """Create or replace a price: --input and --output (cache costs optional), or --alias."""
    spec: dict[str, Any] = {"model": a.model}
    given = {m: getattr(a, m) for m in MONEY if getattr(a, m) is not None}
    if a.alias:
        if given:
            raise UsageError("--alias cannot be combined with --input/--output/--cache-*")
        spec["alias_of"] = a.alias
        known = {p["model"] for p in await s.plane.list("price")}
        if a.alias not in known:
            warn(f'note: "{a.alias}" has no price yet; "{a.model}" costs nothing until it has')
    else:
        if a.input is None or a.output is None:
            raise UsageError("price set needs --input and --output (or --alias OTHER)")
        spec.update(given)
    counts = await s.plane.upsert_prices([spec])
    p = await s.plane.get("price", a.model)
    if not s.out.json:
        what = "created" if counts.get("created") else "updated"
        s.out.line(f'price for "{a.model}" {what} (USD per 1M tokens)')
    s.out.entry(PRICE, p)
    return 0


async def missing(s: Session, a: argparse.Namespace) -> int:
    """Models routed with no price, and models the usage records show served unpriced."""
    report = await s.plane.missing_prices()
    if s.out.json:
        s.out.doc(report)
    elif not report["data"]:
        s.out.line("every routed model has a price; no request was served unpriced")
    else:
        table(MISSING_PRICES, report["data"])
    return 0


async def delete(s: Session, a: argparse.Namespace) -> int:
    p = await s.plane.delete("price", a.model)
    s.out.result(p, f'price for "{p["model"]}" deleted')
    return 0


# LiteLLM field -> our price field; values are USD per token.
LITELLM_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
}


def _per_million(v: Any) -> float | None:
    """USD per token -> USD per 1M tokens, exact in decimal (2.5e-06 -> 2.5)."""
    from decimal import Decimal, InvalidOperation  # here: see cli/render.dec

    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        d = Decimal(str(v)) * 1_000_000
    except InvalidOperation:
        return None
    if not d.is_finite() or d < 0:
        return None
    return float(d)


def litellm_prices(
    doc: Any, providers: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Price specs from a LiteLLM model_prices_and_context_window.json document, and
    how many entries were skipped (no input/output cost per token, or filtered out)."""
    if not isinstance(doc, dict):
        raise Refused("the price file must be a JSON object of model -> prices")
    specs: list[dict[str, Any]] = []
    skipped = 0
    for model, entry in doc.items():
        if model == "sample_spec":
            continue
        if not isinstance(entry, dict) or not str(model).strip():
            skipped += 1
            continue
        if providers and entry.get("litellm_provider") not in providers:
            skipped += 1
            continue
        spec: dict[str, Any] = {"model": str(model)}
        for src, dst in LITELLM_FIELDS.items():
            if src in entry:
                v = _per_million(entry[src])
                if v is not None:
                    spec[dst] = v
        if "input" not in spec or "output" not in spec:
            skipped += 1
            continue
        specs.append(spec)
    return specs, skipped


def _read_source(source: str) -> bytes:
    """A local path, or a file:// / http(s):// URL read with urllib."""
    if "://" not in source:
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as exc:
            raise Refused(f"cannot read {source}: {exc.strerror or exc}") from None
    import urllib.error
    import urllib.request

    scheme = source.split("://", 1)[0].lower()
    if scheme not in ("file", "http", "https"):
        raise UsageError(f"unsupported URL scheme {scheme!r}: use a path, file://, http(s)://")
    try:
        req = urllib.request.Request(source, headers={"User-Agent": "fastgate-price-sync"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Refused(f"cannot fetch {source}: {exc}") from None


async def sync(s: Session, a: argparse.Namespace) -> int:
    import orjson

    raw = _read_source(a.source)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"{a.source} is not JSON: {exc}") from None
    specs, skipped = litellm_prices(doc, a.provider)
    file_models = {p.model for p in s.cfg.prices}
    in_file = [sp for sp in specs if sp["model"] in file_models]
    specs = [sp for sp in specs if sp["model"] not in file_models]
    counts = await s.plane.upsert_prices(specs) if specs else {"created": 0, "updated": 0}
    report = {
        "source": a.source,
        "created": counts["created"],
        "updated": counts["updated"],
        "skipped": skipped,
        "skipped_file_entries": len(in_file),
    }
    s.out.result(
        report,
        f"{report['created']} created, {report['updated']} updated, "
        f"{skipped} skipped (no per-token input/output cost"
        + (" or another provider" if a.provider else "")
        + f"), {len(in_file)} left to the config file",
    )
    return 0
