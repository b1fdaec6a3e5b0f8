"""Model listings answered locally, in the shape of the protocol that asks.

`GET /v1/models` (and `/v1/models/{id}`) is asked by all three SDKs: OpenAI's
with a Bearer key, Anthropic's with `x-api-key` and `anthropic-version`,
Gemini's (under `/v1beta/models`, or `/v1/models` for its v1 API) with
`x-goog-api-key` or `?key=`. The headers pick the shape; the names are the
ones the OpenAI list gives the key (`Snapshot.models_body`: the group's models,
aliases and routers, filtered by the key's allow-list), so every shape lists the
same models and this module never needs to know how that list is made.

Shapes:
- OpenAI: `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`;
  one model: the object itself; an unknown id: 404 `model_not_found`.
- Anthropic: `{"data":[{"type":"model","id","display_name","created_at"}],
  "has_more","first_id","last_id"}`, paged by `limit` (default 20, at most 1000),
  `after_id` / `before_id`; one model: the object itself.
- Gemini: `{"models":[{"name":"models/...","displayName","description",
  "supportedGenerationMethods",...}],"nextPageToken"}`, paged by `pageSize`
  (default 50, at most 1000) and `pageToken`; one model: the object itself.

Errors are raised as `errors.FastgateError` after `ctx.ingress` is set to the
asking protocol, so the exchange renders them in that protocol's shape. Nothing
here runs on a data-plane request.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import orjson

from fastgate import errors
from fastgate.gateway import protocols
from fastgate.gateway.auth import authenticate, presented_key
from fastgate.vocab.protocols import ANTHROPIC, GEMINI, OPENAI

if TYPE_CHECKING:
    from fastgate.app import App
    from fastgate.gateway.context import RequestContext
    from fastgate.http.head import RequestHead
    from fastgate.snapshot import Snapshot, Token

JSON = b"application/json"
GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")

__all__ = ["answer", "is_listing", "listing_protocol"]


def is_listing(path: bytes) -> bool:
    """A GET this module answers: the model list or one model, in any protocol."""
    return path in (b"/v1/models", b"/v1beta/models") or path.startswith(
        (b"/v1/models/", b"/v1beta/models/")
    )


def _query(head: RequestHead) -> dict[str, str]:
    return dict(parse_qsl(head.query.decode("latin-1"))) if head.query else {}


def listing_protocol(head: RequestHead, query: dict[str, str]) -> str:
    """Which SDK asks: Gemini (its path or key headers), Anthropic (`x-api-key` or
    `anthropic-version`), else OpenAI."""
    if head.path.startswith(b"/v1beta/") or head.goog_api_key or "key" in query:
        return GEMINI
    if head.x_api_key:
        return ANTHROPIC
    fwd = head.forward
    for i in range(0, len(fwd), 4):
        if fwd[i].lower() == b"anthropic-version":
            return ANTHROPIC
    return OPENAI


def model_entries(snap: Snapshot, token: Token) -> list[tuple[str, int]]:
    """(id, created) of every model the key may use, as the OpenAI list has them."""
    doc = orjson.loads(snap.models_body(token))
    return [(m["id"], m.get("created", 0)) for m in doc.get("data", ())]


def answer(app: App, ctx: RequestContext) -> tuple[int, bytes, bytes]:
    """(status, body, content type) of a listing GET (see `is_listing`)."""
    head = ctx.head
    query = _query(head)
    proto = listing_protocol(head, query)
    if proto != OPENAI:
        ctx.ingress = protocols.Ingress(proto, "models")  # errors in its shape
    key = presented_key(head, proto)
    if not key and proto == GEMINI:
        key = query.get("key", "").encode("latin-1")
    snap = app.snapshot
    token = authenticate(snap, key)
    entries = model_entries(snap, token)
    path = head.path
    prefix = b"/v1beta/models" if path.startswith(b"/v1beta/") else b"/v1/models"
    wanted = unquote(path[len(prefix) :].strip(b"/").decode("latin-1"))
    if proto == GEMINI:
        wanted = wanted.removeprefix("models/")
    if wanted:
        created = dict(entries).get(wanted)
        if created is None:
            raise errors.ModelNotFound(
                f"The model '{wanted}' does not exist or is not available to this key"
            )
        return 200, orjson.dumps(_one(proto, wanted, created)), JSON
    if proto == ANTHROPIC:
        return 200, orjson.dumps(_anthropic_page(entries, query)), JSON
    if proto == GEMINI:
        return 200, orjson.dumps(_gemini_page(entries, query)), JSON
    return 200, snap.models_body(token), JSON


def _one(proto: str, name: str, created: int) -> dict[str, Any]:
    if proto == ANTHROPIC:
        return _anthropic_model(name, created)
    if proto == GEMINI:
        return _gemini_model(name)
    return {"id": name, "object": "model", "created": created, "owned_by": "fastgate"}


def _anthropic_model(name: str, created: int) -> dict[str, Any]:
    when = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": when}


def _gemini_model(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "fastgate",
        "displayName": name,
        "description": f"{name}, served by fastgate",
        "supportedGenerationMethods": list(GEMINI_METHODS),
    }


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        raise errors.InvalidRequest(f"{name} must be an integer, not {raw!r}") from None
    if not 1 <= n <= 1000:
        raise errors.InvalidRequest(f"{name} must be between 1 and 1000")
    return n


def _anthropic_page(entries: list[tuple[str, int]], query: dict[str, str]) -> dict[str, Any]:
    """Anthropic's cursor pages: `after_id` (the next page) or `before_id` (the previous)."""
    limit = _int_param(query, "limit", 20)
    ids = [name for name, _ in entries]
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise errors.InvalidRequest("give after_id or before_id, not both")
    cursor = after or before
    if cursor and cursor not in ids:
        raise errors.InvalidRequest(f"'{cursor}' is not a model of this list")
    if after:
        start = ids.index(after) + 1
        page = entries[start : start + limit]
        more = start + limit < len(entries)
    elif before:
        end = ids.index(before)
        page = entries[max(0, end - limit) : end]
        more = end - limit > 0
    else:
        page = entries[:limit]
        more = limit < len(entries)
    return {
        "data": [_anthropic_model(name, created) for name, created in page],
        "has_more": more,
        "first_id": page[0][0] if page else None,
        "last_id": page[-1][0] if page else None,
    }


def _gemini_page(entries: list[tuple[str, int]], query: dict[str, str]) -> dict[str, Any]:
    """Gemini's pages: `pageSize`, and `pageToken` (here: the offset, opaque to clients)."""
    size = _int_param(query, "pageSize", 50)
    token = query.get("pageToken") or "0"
    if not token.isdigit():
        raise errors.InvalidRequest(f"invalid pageToken {token!r}")
    start = int(token)
    doc: dict[str, Any] = {
        "models": [_gemini_model(name) for name, _ in entries[start : start + size]]
    }
    if start + size < len(entries):
        doc["nextPageToken"] = str(start + size)
    return doc
