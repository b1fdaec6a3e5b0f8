"""The end of every request, written once: usage -> cost -> quota -> one record.

Both the fast path and the general exchange end here. The record is a tuple in
`fastgate.vocab.record.RECORD_FIELDS` order (the cheapest object to build and
to ship to the writer); `sink.append` only queues it.
"""

from __future__ import annotations

import time
from typing import Any

from fastgate.gateway.billing import cost_micros


def account(
    app: Any,
    head: Any,
    request_id: bytes,
    token: Any,
    ingress: str,
    channel: Any,
    model: str,
    upstream_model: str,
    stream: bool,
    status: int,
    error_code: str,
    usage: Any,
    price: Any,
    ratio: int,
    t_first: float,
    attempts: int,
    client_ip: str,
    cache_hit: bool = False,
    unpriced: bool = False,
    router: str = "",
    service_tier: str = "",
    gateway_ms: float = 0.0,
) -> Any:
    """Price `usage`, charge the key, queue the usage record; returns what the
    answer's end must wait for (a budget's fleet counter near its budget:
    `Budgets.charge`), or None. A response cache hit costs nothing (its tokens
    are recorded as they were).

    `usage.estimated`: the writer estimated it (no usage from the upstream).
    A model with no price (`price` None) reached by an upstream is served and
    recorded with cost 0 and `unpriced` true: the `if price is None` branch
    below is where "a request was served unpriced" is known."""
    cost = 0
    wait = None
    if price is None:
        if channel is not None and not cache_hit and model:  # (a passthrough: no model)
            unpriced = True  # served by an upstream, with no price: cost 0
            hooks = app.hooks  # the unpriced_model webhook: first sight of the model here
            if hooks is not None and status < 400 and model not in hooks.unpriced_seen:
                hooks.unpriced(model, channel, upstream_model)
    elif usage.found and token is not None and not cache_hit:
        # cost rule: integer micro-dollars, rounded half up once (billing.cost_micros)
        cost = cost_micros(price, usage, ratio)
        if cost:
            wait = app.charge(token, cost)
            app.last_cost[(token.name, model)] = cost
    t0 = head.t0
    latency = int((time.time() - t0) * 1_000_000) / 1000
    app.sink.append(
        (
            t0,
            request_id.decode("latin-1"),
            token.name if token is not None else "",
            token.group if token is not None else "",
            ingress,
            channel.name if channel is not None else "",
            channel.type if channel is not None else "",
            model,
            upstream_model,
            stream,
            status,
            error_code,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
            usage.estimated,
            cost,
            latency,
            int((t_first - t0) * 1_000_000) / 1000 if t_first else 0.0,
            attempts,
            client_ip,
            head.tag.decode("latin-1") if head.tag else "",
            cache_hit,
            (app.new_request_id() if head.request_id else request_id).decode("latin-1"),
            unpriced,
            router,
            service_tier or usage.service_tier,
            gateway_ms,
        )
    )
    return wait
