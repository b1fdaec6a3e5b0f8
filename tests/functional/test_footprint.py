"""What a worker loads: redis-py only when the config names a Redis backend.

redis-py (with hiredis, OpenTelemetry and cryptography, which it imports) is about
18 MB of a worker's memory. A gateway with the memory backends (the default) must
not carry it. What shows it from outside: hiredis is a C extension, so its shared
object appears in the serving process's memory map once redis-py is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from tests.fakes.base import Ok
from tests.harness import channel, children_pids, gateway_config, make_key, token

MSGS = [{"role": "user", "content": "hello"}]


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize(
    ("extra", "loads_redis"),
    [
        ("", False),
        ('[cache]\nenabled = true\nbackend = "memory"\n', False),
        ('[ratelimit]\nbackend = "redis"\nkey_prefix = "{prefix}"\n', True),
        ('[cache]\nenabled = true\nbackend = "redis"\nkey_prefix = "{prefix}"\n', True),
    ],
    ids=["memory", "memory-cache", "redis-limits", "redis-cache"],
)
def test_redis_is_loaded_only_by_a_redis_config(
    make_gateway, make_fake, redis_prefix: str, extra: str, loads_redis: bool
) -> None:
    pytest.importorskip("hiredis")  # the mark in the map (redis-py uses it when present)
    up = make_fake("up")
    up.behaviour = Ok(prompt_tokens=3, completion_tokens=2)
    key = make_key()
    gw = make_gateway(
        gateway_config(
            [channel("up", up.url, ["gpt-4o-mini"])],
            [token("app", key)],
            extra=extra.format(prefix=redis_prefix),
        )
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert reply.usage is not None and reply.usage.total_tokens == 5
    assert ("hiredis" in mapped(gw.pid)) is loads_redis


def test_the_usage_writer_loads_no_site_hooks(make_gateway, make_fake, tmp_path: Path) -> None:
    """The writer process starts without `site`: an environment's .pth hooks and
    sitecustomize (here one that notes every process that imports it) run in the
    serving process, not in the writer, which still writes every record."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marks = tmp_path / "marks"
    (hooks / "sitecustomize.py").write_text(
        f"import os\nwith open({str(marks)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    )
    up = make_fake("up")
    up.behaviour = Ok(prompt_tokens=3, completion_tokens=2)
    key = make_key()
    gw = make_gateway(
        gateway_config([channel("up", up.url, ["gpt-4o-mini"])], [token("app", key)]),
        env={"PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    writers = [p for p in children_pids(gw.pid) if b"fastgate.store.writer" in cmdline(p)]
    assert len(writers) == 1
    seen = {int(x) for x in marks.read_text().split()}
    assert gw.pid in seen  # the hook works: the serving process ran it
    assert writers[0] not in seen
    assert len(gw.wait_records(3, timeout=10)) == 3  # the access log is the writer's


# Standard-library packages only the CLI's other commands (and a rare HTTP-date
# Retry-After) need: about 1.7 MB of a serving process when they were loaded
# with the command parser.
CLI_ONLY = ("email", "http.client", "urllib.request", "decimal")


def test_serving_loads_no_cli_only_modules(make_gateway, make_fake) -> None:
    """`fastgate serve` builds the whole command parser; the other commands'
    heavy imports (urllib.request -> http.client -> email, decimal) wait for
    the command that uses them. Seen from outside with Python's own import
    trace (PYTHONPROFILEIMPORTTIME: one stderr line per module imported)."""
    up = make_fake("up")
    up.behaviour = Ok(prompt_tokens=3, completion_tokens=2)
    key = make_key()
    gw = make_gateway(
        gateway_config([channel("up", up.url, ["gpt-4o-mini"])], [token("app", key)]),
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    for stream in (False, True):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=stream)
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        else:
            assert reply.usage is not None and reply.usage.total_tokens == 5
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in gw.stderr_text().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"fastgate.cli.parser", "fastgate.gateway.fast", "fastgate.cli.routers"} <= imported
    assert not imported & set(CLI_ONLY), sorted(imported & set(CLI_ONLY))
