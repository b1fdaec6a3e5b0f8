"""Shared fixtures: fake upstreams, fastgate processes, keys, and service checks."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.bedrock_fake import FakeBedrock
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.openai_fake import FakeOpenAI
from tests.harness import Gateway, gateway_config, make_key


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int, timeout: float = 1.0) -> None:
    """Skip the test if a backing service is not reachable — but fail under CI=true,
    where a missing Postgres or Redis is a broken environment, not a reason to skip."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        msg = f"{name} not reachable at {host}:{port}: {exc}"
        if _ci():
            pytest.fail(msg + " (CI=true: required services must be present)")
        pytest.skip(msg)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """One FakeOpenAI upstream, started for the test and stopped after it."""
    fake = FakeOpenAI("fake")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeOpenAI]]:
    """Factory for more fakes: make_fake("a") -> started FakeOpenAI named "a"."""
    fakes: list[FakeOpenAI] = []

    def _make(name: str = "fake", **kw: Any) -> FakeOpenAI:
        fake = FakeOpenAI(name, **kw)
        fake.start()
        fakes.append(fake)
        return fake

    try:
        yield _make
    finally:
        for fake in fakes:
            fake.stop()


@pytest.fixture
def demo_key() -> str:
    """A fresh fastgate key of the documented shape."""
    return make_key()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: make_gateway(toml_text) or make_gateway(channels=..., tokens=..., ...)
    returns a started Gateway; every gateway is stopped (or killed) at teardown."""
    gateways: list[Gateway] = []

    def _make(
        toml_text: str | None = None,
        *,
        start: bool = True,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 15,
        **config: Any,
    ) -> Gateway:
        text = toml_text if toml_text is not None else gateway_config(**config)
        gw = Gateway(tmp_path / f"gw{len(gateways)}", text, args=args, env=env)
        gateways.append(gw)
        if start:
            gw.start(timeout=timeout)
        return gw

    try:
        yield _make
    finally:
        for gw in gateways:
            gw.close()


# --------------------------------------------------------------------------- provider fakes


def _started(fake: Any) -> Iterator[Any]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A FakeAnthropic upstream named "anthropic" (answers "Hello from anthropic")."""
    yield from _started(FakeAnthropic("anthropic"))


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A FakeGemini upstream named "gemini"."""
    yield from _started(FakeGemini("gemini"))


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A FakeOllama server named "ollama"."""
    yield from _started(FakeOllama("ollama"))


@pytest.fixture
def fake_bedrock() -> Iterator[FakeBedrock]:
    """A FakeBedrock runtime named "bedrock" that verifies SigV4 with its own
    `access_key` / `secret_key` / `region` (give those to the channel)."""
    yield from _started(FakeBedrock("bedrock"))


# --------------------------------------------------------------------------- shared services

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
FLEET_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def _pg(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    prefix = "fgtest:" + secrets.token_hex(4) + ":"
    try:
        yield prefix
    finally:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


async def _pg(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A Postgres database of this test's own (dropped afterwards)."""
    require_service("Postgres", "127.0.0.1", 5432)
    name = "fastgate_fleet_" + secrets.token_hex(5)
    asyncio.run(_pg(FLEET_PG_ADMIN, f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg(FLEET_PG_ADMIN, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
