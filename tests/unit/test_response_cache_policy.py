"""The response cache's policy pieces that need no process: the canonical key,
the header modes, the stored value's encoding, error detection, the memory
backend's bounds, and the config rules of `[cache]` (docs/contract.md section 7)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from fastgate import errors
from fastgate.config import CacheConfig, ConfigError, parse_config
from fastgate.gateway.cache import (
    ENTRIES,
    EVICTIONS,
    HELD,
    ON,
    REFRESH,
    Capture,
    Entry,
    canonical_key,
    content_type_of,
    has_error,
    mode_of,
)
from fastgate.metrics import Metrics
from fastgate.respcache import MemoryCache, build_cache
from fastgate.respcache.redis import RedisCache

SHA = "a" * 64


def key(body: Any, path: bytes = b"/v1/chat/completions", **kw: Any) -> str:
    args = {"alt_sse": False, "model": "m1", "group": "default"} | kw
    return canonical_key(path, args["alt_sse"], args["model"], args["group"], body)


# --------------------------------------------------------------------------- the canonical key


def test_key_ignores_key_order_at_every_level() -> None:
    a = orjson.loads(b'{"model":"m1","messages":[{"role":"user","content":"hi"}],"n":1}')
    b = orjson.loads(b'{"n":1,"messages":[{"content":"hi","role":"user"}],"model":"m1"}')
    assert key(a) == key(b)
    assert len(key(a)) == 64 and int(key(a), 16) >= 0


def test_key_changes_with_body_path_model_group_and_alt_sse() -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    base = key(body)
    assert key({**body, "temperature": 0}) != base
    assert key({**body, "stream": True}) != base
    assert key(body, path=b"/v1/completions") != base
    assert key(body, model="m2") != base
    assert key(body, group="other") != base
    assert key(body, alt_sse=True) != base
    # list order is content: two messages swapped are another request
    two = {
        "model": "m1",
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    }
    swapped = {**two, "messages": list(reversed(two["messages"]))}
    assert key(two) != key(swapped)


def test_key_does_not_confuse_fields_across_separators() -> None:
    body: dict[str, Any] = {}
    assert key(body, model="ab", group="c") != key(body, model="a", group="bc")


# --------------------------------------------------------------------------- header modes


@pytest.mark.parametrize(
    ("header", "key_cache", "mode"),
    [
        (b"", False, None),
        (b"", True, ON),
        (b"on", False, ON),
        (b"ON", False, ON),
        (b"off", True, None),
        (b"refresh", False, REFRESH),
        (b"Refresh", True, REFRESH),
    ],
)
def test_modes(header: bytes, key_cache: bool, mode: str | None) -> None:
    assert mode_of(header, key_cache) == mode


@pytest.mark.parametrize("header", [b"yes", b"true", b"1", b"hit", b"on,off"])
def test_other_header_values_are_a_400(header: bytes) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        mode_of(header, True)
    assert info.value.status == 400 and "x-fastgate-cache" in str(info.value)


# --------------------------------------------------------------------------- entries and capture


def test_entry_round_trip_and_garbage() -> None:
    e = Entry(b"data: x\n\nline\nline", b"text/event-stream", True, (5, 7, 1, 2, True), "up-m")
    d = Entry.decode(e.encode())
    assert d is not None
    assert (d.body, d.content_type, d.stream, d.usage, d.upstream_model) == (
        e.body,
        e.content_type,
        e.stream,
        e.usage,
        e.upstream_model,
    )
    u = d.usage_object()
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens) == (
        5,
        7,
        1,
        2,
    )
    for raw in (b"", b"no newline", b"{}\nbody", b"not json\nbody", b'{"u":[1]}\nx'):
        assert Entry.decode(raw) is None


def test_capture_is_bounded_and_restarts_per_response() -> None:
    cap = Capture(SHA, False, 10)
    cap.add(b"12345")
    cap.add(b"67890")
    assert cap.parts == [b"12345", b"67890"]
    cap.add(b"x")
    assert cap.parts is None  # over the bound: nothing will be stored
    cap.add(b"y")
    assert cap.parts is None
    cap.reset(b"text/event-stream")
    assert cap.parts == [] and cap.size == 0 and cap.content_type == b"text/event-stream"


def test_content_type_and_error_detection() -> None:
    fwd = [b"X-Other", b": ", b"1", b"\r\n", b"Content-Type", b": ", b"text/event-stream", b"\r\n"]
    assert content_type_of(fwd) == b"text/event-stream"
    assert content_type_of([b"content-type: application/json\r\n"]) == b"application/json"
    assert content_type_of([]) == b"application/json"
    sse = b"text/event-stream"
    assert not has_error(b'data: {"choices":[]}\n\ndata: [DONE]\n\n', True, sse)
    assert has_error(b'data: {"choices":[]}\n\ndata: {"error":{"message":"x"}}\n\n', True, sse)
    assert has_error(
        b'event: message_start\ndata: {}\n\nevent: error\ndata: {"type":"error"}\n\n', True, sse
    )
    # a model that writes the words in its text does not count (quotes are escaped in JSON)
    assert not has_error(b'data: {"text":"data: {\\"error\\": 1}"}\n\n', True, sse)
    arr = b"application/json"
    assert not has_error(b'[{"candidates":[]}\n,\r\n{"candidates":[]}]', True, arr)
    assert has_error(b'[{"candidates":[]}\n,\r\n{\n  "error": {"code": 500}}\n]', True, arr)
    assert has_error(b'{"error":{"message":"x"}}', False, arr)
    assert not has_error(b'{"id":"x","choices":[]}', False, arr)


# --------------------------------------------------------------------------- memory backend


def entry(n: int) -> Entry:
    return Entry(b"x" * n, b"application/json", False, (1, 1, 0, 0, True))


def test_memory_backend_bounds_entries_and_entry_size() -> None:
    m = Metrics()
    cache = MemoryCache(CacheConfig(enabled=True, max_entries=3, max_entry_bytes=100), m)
    cache.put("big", entry(101))
    assert cache.get("big", None) is None  # over max_entry_bytes: refused
    for i in range(5):
        cache.put(f"k{i}", entry(10 + i))
    assert m.gauges[ENTRIES]() == 3
    assert m.gauges[HELD]() == 12 + 13 + 14
    assert m.counters[EVICTIONS][()] == 2
    assert cache.get("k0", None) is None and cache.get("k4", None) is not None
    cache.put("k4", entry(50))  # replacing keeps the byte count right
    assert m.gauges[HELD]() == 12 + 13 + 50 and m.gauges[ENTRIES]() == 3


def test_memory_backend_ttl() -> None:
    m = Metrics()
    cache = MemoryCache(CacheConfig(enabled=True, ttl=0.05), m)
    cache.put("k", entry(10))
    assert cache.get("k", None) is not None

    time.sleep(0.08)
    assert cache.get("k", None) is None
    assert m.gauges[ENTRIES]() == 0 and m.gauges[HELD]() == 0
    assert EVICTIONS not in m.counters  # expiry is not an eviction


def test_build_cache_follows_config() -> None:
    loop = asyncio.new_event_loop()
    try:
        m = Metrics()
        assert build_cache(CacheConfig(), loop, m) is None
        assert isinstance(build_cache(CacheConfig(enabled=True), loop, m), MemoryCache)
        assert ENTRIES in m.gauges
        r = build_cache(CacheConfig(enabled=True, backend="redis"), loop, m)
        assert isinstance(r, RedisCache)
        assert ENTRIES not in m.gauges  # a shared cache has no per-worker count
        loop.run_until_complete(r.aclose())
    finally:
        loop.close()


# --------------------------------------------------------------------------- config


def test_cache_config_keys() -> None:
    cfg = parse_config(
        {
            "cache": {
                "enabled": True,
                "backend": "redis",
                "ttl": 5,
                "max_entries": 7,
                "max_entry_bytes": 1000,
                "redis_url": "redis://127.0.0.1:6379/1",
                "key_prefix": "t:",
            }
        }
    )
    assert cfg.cache == CacheConfig(True, "redis", 5, 7, 1000, "redis://127.0.0.1:6379/1", "t:")
    with pytest.raises(ConfigError) as info:
        parse_config({"cache": {"max_entry_bytes": 0}})
    assert "cache.max_entry_bytes: must be >= 1" in str(info.value)


def test_key_with_cache_needs_the_cache_enabled() -> None:
    tok = {"name": "t", "key_sha256": SHA, "cache": True}
    with pytest.raises(ConfigError) as info:
        parse_config({"tokens": [tok]})
    assert "tokens[0].cache: the response cache is off" in str(info.value)
    cfg = parse_config({"tokens": [tok], "cache": {"enabled": True}})
    assert cfg.tokens[0].cache is True


# --------------------------------------------------------------------------- in process


IN_KEY = "fg-cache-0000000000000000000000000000000000000000"


def _inproc_config(enabled: bool) -> str:
    return f"""
[cache]
enabled = {"true" if enabled else "false"}

[[channels]]
name = "mock"
type = "mock"
models = ["mock-1"]

[[tokens]]
name = "k"
key = "{IN_KEY}"
"""


def _post(w: Any, header: bytes = b"") -> bytes:
    body = b'{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}'
    extra = b"x-fastgate-cache: %b\r\n" % header if header else b""
    w.client_tr.written.clear()
    w.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %b\r\n"
        b"%bcontent-length: %d\r\n\r\n%b" % (IN_KEY.encode(), extra, len(body), body)
    )
    return w.client_tr.data()


def test_store_key_with_cache_on_an_instance_whose_cache_is_off() -> None:
    """A key from the store (not validated against this file's [cache]) with
    cache = true, on an instance whose cache is off: served uncached, no header."""
    from tests.unit.inproc import Wired

    w = Wired(_inproc_config(False))
    try:
        (tok,) = w.app.snapshot.tokens.values()
        tok.cache = True  # as a store entry would have it
        tok.fast = False
        for _ in range(2):
            out = _post(w)
            assert out.startswith(b"HTTP/1.1 200") and b"x-fastgate-cache" not in out
        assert [r["cache_hit"] for r in w.sink.dicts()] == [False, False]
    finally:
        w.close()


def test_inproc_hit_is_the_same_body_and_a_free_record() -> None:
    from tests.unit.inproc import Wired

    w = Wired(_inproc_config(True))
    try:
        first = _post(w, b"on")
        second = _post(w, b"on")
        assert b"x-fastgate-cache: miss\r\n" in first and b"x-fastgate-cache: hit\r\n" in second
        assert first.split(b"\r\n\r\n", 1)[1] == second.split(b"\r\n\r\n", 1)[1]
        miss, hit = w.sink.dicts()
        assert (miss["cache_hit"], hit["cache_hit"]) == (False, True)
        assert hit["cost_micros"] == 0 and hit["channel"] == "" and hit["attempts"] == 0
        assert hit["completion_tokens"] == miss["completion_tokens"] > 0
    finally:
        w.close()
