"""The usage record: one per request (docs/contract.md section 5), as a plain tuple.

The data plane builds a record as a tuple in `RECORD_FIELDS` order (the
cheapest object to build on the hot path and to ship to the writer); the store
and the access log turn it into rows or JSON with `record_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RECORD_FIELDS: tuple[str, ...] = (
    "ts",  # unix time when the request arrived
    "request_id",
    "key_name",
    "group",
    "ingress",  # "openai" | "anthropic" | "gemini"
    "channel",
    "provider",
    "model",  # as requested, after alias resolution
    "upstream_model",
    "stream",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "estimated",
    "cost_micros",  # integer micro-dollars
    "latency_ms",
    "ttfb_ms",
    "attempts",
    "client_ip",
    "tag",  # the client's x-fastgate-tag header
    "cache_hit",
    "uid",  # unique per record: replays never duplicate a row
    # Added in schema version 3 (after uid, so that older spooled tuples keep
    # their positions and read these as missing -> defaults):
    "unpriced",  # the model had no price: served, cost 0
    "router",  # the [[routers]] entry that chose the model ("" none)
    "service_tier",  # as the upstream reported it ("priority", "flex", ...)
    "gateway_ms",  # time spent in the gateway itself (latency minus upstream time)
)
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(RECORD_FIELDS)}
UID = FIELD_INDEX["uid"]


def record_dict(record: Any) -> Any:
    """A record tuple (or list, as JSON brings it back) in RECORD_FIELDS order as a
    dict; a dict or a record object is returned as it is."""
    if isinstance(record, tuple | list):
        return dict(zip(RECORD_FIELDS, record, strict=True))
    return record


# The same record as a typed object (field names, order and types), for code
# that builds records by name: the store accepts it beside tuples and dicts.
@dataclass(slots=True)
class UsageRecord:
    ts: float  # unix time when the request arrived
    request_id: str
    key_name: str
    group: str
    ingress: str  # "openai" | "anthropic" | "gemini"
    channel: str
    provider: str
    model: str  # as requested (after alias resolution: the public name)
    upstream_model: str
    stream: bool
    status: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    estimated: bool
    cost_micros: int  # integer micro-dollars
    latency_ms: float
    ttfb_ms: float
    attempts: int
    client_ip: str
    tag: str  # the client's x-fastgate-tag header
    cache_hit: bool = False
    uid: str = ""  # unique per record (the gateway's own id): replays never duplicate a row
    unpriced: bool = False  # the model had no price (cost 0)
    router: str = ""  # the [[routers]] entry that chose the model
    service_tier: str = ""  # as the upstream reported it
    gateway_ms: float = 0.0  # time spent in the gateway itself
