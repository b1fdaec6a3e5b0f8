"""The store CLI as a user runs it: `python -m fastgate ...` in a subprocess, against a
SQLite file in a temp dir and against the session's Postgres database.

The config file the CLI reads points `[database] url` at the test database and
defines one entry of each kind, so the file-wins rule is exercised too. What the
CLI wrote is checked through a Store opened by the test (never through the CLI's
own output alone), and usage is written through the store before it is queried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fastgate.store.base import Store
from fastgate.store.migrations import latest_version
from tests.fakes.openai_fake import Fail, FakeOpenAI, closed_port
from tests.functional import test_store_backends as store_tests
from tests.functional.test_store_backends import ENV, KEY_RE, raw_rows, usage
from tests.harness import REPO_ROOT, make_key

# The store tests' fixtures: db_url = SQLite and Postgres, make_store = started stores.
db_url = store_tests.db_url
make_store = store_tests.make_store
pg_database = store_tests.pg_database
pg_url = store_tests.pg_url

FILE_KEY = make_key()
UPSTREAM_SECRET = "sk-cli-upstream-0123456789"


class Cli:
    """Runs `python -m fastgate ARGS --config FILE` in a temp dir; keeps every output."""

    def __init__(self, workdir: Path, config: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.config = config
        self.env = env
        self.outputs: list[str] = []

    def __call__(
        self,
        *args: str,
        config: bool = True,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        expect: int | None = 0,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "fastgate", *args]
        if config:
            cmd += ["--config", str(self.config)]
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=env if env is not None else self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.outputs += [proc.stdout, proc.stderr]
        if expect is not None:
            assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def leaked(self, secret: str) -> bool:
        return any(secret in o for o in self.outputs)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTGATE_SECRET_KEY"}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
[database]
url = "{url}"

[[channels]]
name = "file-mock"
type = "mock"
models = ["mock-1"]

[[tokens]]
name = "file-token"
key = "{FILE_KEY}"

[[prices]]
model = "file-model"
input = 1.0
output = 2.0
"""
    )
    return path


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    """The CLI on this test's database (both backends), FASTGATE_SECRET_KEY set."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = write_config(tmp_path / "fastgate-test.toml", db_url)
    return Cli(work, cfg, _env(**ENV))


def table_rows(text: str) -> list[list[str]]:
    """A human table's lines split on runs of 2+ spaces (header first)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def usd_text(micros: int) -> str:
    return str((Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")).normalize())


# --------------------------------------------------------------------------- migrate


def test_migrate(cli: Cli, db_url: str) -> None:
    latest = latest_version()
    proc = cli("migrate")
    assert f"applied {latest} migration" in proc.stdout
    assert f"schema version {latest}" in proc.stdout
    doc = cli.json("migrate")
    assert doc["applied"] == 0 and doc["schema_version"] == latest
    rows = raw_rows(db_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, latest + 1))


# --------------------------------------------------------------------------- tokens


def test_token_lifecycle(cli: Cli, db_url: str, make_store: Callable[..., Store]) -> None:
    proc = cli(
        "token",
        "create",
        "ci",
        "--group",
        "bench",
        "--quota-usd",
        "2.5",
        "--models",
        "gpt-4o,mock-1",
        "--rpm",
        "30",
        "--tpm",
        "1000",
        "--max-concurrency",
        "4",
        "--expires-at",
        "2031-06-01T00:00:00Z",
    )
    keys = re.findall(r"fg-[A-Za-z0-9_-]{43}", proc.stdout)
    assert len(keys) == 1 and KEY_RE.match(keys[0])
    key = keys[0]
    assert "only time" in proc.stderr
    store = make_store(db_url)
    stored = store.sync.get_token("ci")
    assert stored["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["quota_micros"] == 2_500_000
    assert stored["models"] == ["gpt-4o", "mock-1"]
    assert (stored["rpm"], stored["tpm"], stored["max_concurrency"]) == (30, 1000, 4)
    assert stored["group"] == "bench"
    assert stored["expires_at"].startswith("2031-06-01T00:00:00")

    n_outputs = len(cli.outputs)
    listing = cli("token", "list").stdout
    rows = table_rows(listing)
    assert rows[0][:3] == ["ID", "NAME", "SOURCE"]
    names = {r[1]: r for r in rows[1:]}
    assert names["ci"][2] == "store" and names["file-token"][2] == "file"
    docs = cli.json("token", "list")
    assert {d["name"]: d["source"] for d in docs} == {"file-token": "file", "ci": "store"}
    by_name = cli.json("token", "show", "ci")
    by_id = cli.json("token", "show", str(stored["id"]))
    assert by_name == by_id and by_name["id"] == stored["id"]
    assert "key" not in by_name
    assert cli.json("token", "show", "file-token")["source"] == "file"
    assert not any(key in o for o in cli.outputs[n_outputs:])
    assert not cli.leaked(FILE_KEY)

    cli("token", "revoke", "ci")
    assert store.sync.get_token("ci")["enabled"] is False
    proc = cli("token", "revoke", "file-token", expect=1)
    assert "config file" in proc.stderr
    cli("token", "revoke", "ci", "--delete")
    proc = cli("token", "show", "ci", expect=1)
    assert "not found" in proc.stderr
    assert store.sync.list_tokens() == []

    proc = cli("token", "create", "file-token", expect=1)
    assert "config file" in proc.stderr
    proc = cli("token", "create", "late", "--expires-at", "next tuesday", expect=1)
    assert "expires_at" in proc.stderr
    cli("token", "create", "dup")
    proc = cli("token", "create", "dup", expect=1)
    assert "already exists" in proc.stderr


# --------------------------------------------------------------------------- channels


def test_channel_commands(
    cli: Cli, db_url: str, make_store: Callable[..., Store], fake_openai: FakeOpenAI
) -> None:
    cli(
        "channel",
        "add",
        "up",
        "--type",
        "openai",
        "--base-url",
        fake_openai.url + "/v1",
        "--api-key",
        UPSTREAM_SECRET,
        "--models",
        "gpt-4o,gpt-4o-mini",
        "--priority",
        "2",
        "--weight",
        "5",
        "--groups",
        "default,bench",
    )
    cli(
        "channel",
        "add",
        "byenv",
        "--type",
        "openai",
        "--base-url",
        "http://127.0.0.1:9",
        "--api-key-env",
        "UP_KEY",
        "--models",
        "m1",
    )
    store = make_store(db_url)
    up = store.sync.get_channel("up")
    assert up["api_key_set"] is True and up["priority"] == 2 and up["weight"] == 5
    assert up["groups"] == ["default", "bench"] and up["models"] == ["gpt-4o", "gpt-4o-mini"]
    assert store.sync.get_channel("byenv")["api_key_env"] == "UP_KEY"
    # The stored key is the one given (decrypted by the store), never printed.
    loaded = {c.name: c for c in store.sync.load().channels}
    assert loaded["up"].api_key == UPSTREAM_SECRET

    docs = {d["name"]: d for d in cli.json("channel", "list")}
    assert set(docs) == {"file-mock", "up", "byenv"}
    assert docs["file-mock"]["source"] == "file"
    rows = {r[1]: r for r in table_rows(cli("channel", "list").stdout)[1:]}
    assert rows["byenv"][8] == "env:UP_KEY" and rows["up"][8] == "stored"

    cli("channel", "disable", "up")
    assert store.sync.get_channel("up")["enabled"] is False
    cli("channel", "enable", str(up["id"]))
    assert store.sync.get_channel("up")["enabled"] is True
    proc = cli("channel", "disable", "file-mock", expect=1)
    assert "config file" in proc.stderr

    proc = cli("channel", "test", "up")
    assert proc.stdout.startswith("ok")
    seen = fake_openai.last
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert seen.json["max_tokens"] == 1 and seen.json["model"] == "gpt-4o"
    fake_openai.script(Fail(500))
    proc = cli("channel", "test", "up", "--model", "gpt-4o-mini", expect=1)
    assert proc.stdout.startswith("FAILED") and "500" in proc.stdout
    assert fake_openai.last.json["model"] == "gpt-4o-mini"
    doc = json.loads(cli("channel", "test", "file-mock", "--json").stdout)
    assert doc["ok"] is True
    proc = cli("channel", "test", "nope", expect=1)
    assert "not found" in proc.stderr

    # A literal key without FASTGATE_SECRET_KEY is refused, and nothing is written.
    proc = cli(
        "channel",
        "add",
        "nokey",
        "--type",
        "openai",
        "--base-url",
        "http://127.0.0.1:9",
        "--api-key",
        "-",
        "--models",
        "m",
        env=_env(),
        stdin=UPSTREAM_SECRET + "\n",
        expect=1,
    )
    assert "FASTGATE_SECRET_KEY" in proc.stderr
    assert {c["name"] for c in store.sync.list_channels()} == {"up", "byenv"}
    proc = cli("channel", "add", "bad", "--type", "openai", "--models", "m", expect=1)
    assert "base_url" in proc.stderr
    cli("channel", "delete", "byenv")
    assert {c["name"] for c in store.sync.list_channels()} == {"up"}
    assert not cli.leaked(UPSTREAM_SECRET)


# --------------------------------------------------------------------------- prices


def _per_million(v: float) -> float:
    return float(Decimal(str(v)) * 1_000_000)


def test_price_commands(
    cli: Cli, tmp_path: Path, db_url: str, make_store: Callable[..., Store]
) -> None:
    cli("price", "set", "gpt-4o", "--input", "2.5", "--output", "10", "--cache-read", "1.25")
    doc = cli.json("price", "get", "gpt-4o")
    assert (doc["input"], doc["output"], doc["cache_read"]) == (2.5, 10.0, 1.25)
    assert doc["input_micros"] == 2_500_000
    cli("price", "set", "gpt-4o", "--input", "3", "--output", "12")  # replaces
    doc = cli.json("price", "get", "gpt-4o")
    assert (doc["input"], doc["output"], doc.get("cache_read")) == (3.0, 12.0, None)
    cli("price", "set", "gpt-4o-latest", "--alias", "gpt-4o")
    store = make_store(db_url)
    assert store.sync.get_price("gpt-4o-latest")["alias_of"] == "gpt-4o"
    rows = {r[0]: r for r in table_rows(cli("price", "list").stdout)[1:]}
    assert rows["gpt-4o"][1:4] == ["store", "3", "12"]
    assert rows["gpt-4o-latest"][-1] == "gpt-4o"
    assert rows["file-model"][1] == "file"

    cli("price", "set", "x", "--alias", "gpt-4o", "--input", "1", expect=2)
    cli("price", "set", "x", "--input", "1", expect=2)
    proc = cli("price", "set", "x", "--input", "-1", "--output", "1", expect=1)
    assert "input" in proc.stderr
    proc = cli("price", "set", "file-model", "--input", "1", "--output", "1", expect=1)
    assert "config file" in proc.stderr
    cli("price", "delete", "gpt-4o-latest")
    cli("price", "get", "gpt-4o-latest", expect=1)
    cli("price", "delete", "file-model", expect=1)

    # LiteLLM's format: USD per token; entries without both costs are skipped.
    litellm = {
        "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
        "gpt-4o": {
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06,
            "litellm_provider": "openai",
        },
        "anthropic/claude-x": {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "litellm_provider": "anthropic",
        },
        "text-embedding-x": {"input_cost_per_token": 2e-08, "litellm_provider": "openai"},
        "dall-e-x": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
        "file-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
    }
    src = tmp_path / "model_prices_and_context_window.json"
    src.write_text(json.dumps(litellm))
    report = cli.json("price", "sync", str(src))
    assert report["created"] == 1 and report["updated"] == 1  # gpt-4o existed
    assert report["skipped"] == 2 and report["skipped_file_entries"] == 1
    for model in ("gpt-4o", "anthropic/claude-x"):
        got = store.sync.get_price(model)
        want = litellm[model]
        assert got["input"] == pytest.approx(_per_million(want["input_cost_per_token"]))
        assert got["output"] == pytest.approx(_per_million(want["output_cost_per_token"]))
        assert got["cache_read"] == pytest.approx(_per_million(want["cache_read_input_token_cost"]))
    claude = store.sync.get_price("anthropic/claude-x")
    assert claude["cache_write_micros"] == round(3.75e-06 * 1e12)
    assert all(p["model"] != "file-model" for p in store.sync.list_prices())

    # Same file again through a file:// URL: everything is an update now.
    proc = cli("price", "sync", src.as_uri())
    assert "0 created, 2 updated" in proc.stdout
    report = cli.json("price", "sync", str(src), "--provider", "anthropic")
    assert (report["created"], report["updated"]) == (0, 1)
    proc = cli("price", "sync", str(tmp_path / "missing.json"), expect=1)
    assert "missing.json" in proc.stderr


# --------------------------------------------------------------------------- usage


def test_usage_command(cli: Cli, db_url: str, make_store: Callable[..., Store]) -> None:
    store = make_store(db_url)
    records = [usage(i) for i in range(20)]
    assert store.sync.write_usage(records) == len(records)

    doc = cli.json("usage", "--by", "key")
    want: dict[str, dict[str, int]] = {}
    for r in records:
        w = want.setdefault(r["key_name"], {"requests": 0, "prompt_tokens": 0, "cost_micros": 0})
        w["requests"] += 1
        w["prompt_tokens"] += r["prompt_tokens"]
        w["cost_micros"] += r["cost_micros"]
    got = {row["key"]: row for row in doc["data"]}
    assert {k: {f: got[k][f] for f in w} for k, w in want.items()} == want
    assert doc["totals"]["requests"] == len(records)

    text = cli("usage").stdout  # --by key is the default
    rows = table_rows(text)
    assert rows[0] == ["KEY", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "CACHED", "COST_USD"]
    body = {r[0]: r for r in rows[1:]}
    for k, w in want.items():
        assert body[k][1] == str(w["requests"])
        assert body[k][3] == str(w["prompt_tokens"])
        assert Decimal(body[k][6]) == Decimal(usd_text(w["cost_micros"]))
    total_micros = sum(r["cost_micros"] for r in records)
    assert Decimal(body["TOTAL"][6]) == Decimal(usd_text(total_micros))

    by_model = {r["model"]: r["requests"] for r in cli.json("usage", "--by", "model")["data"]}
    assert by_model == {m: sum(1 for r in records if r["model"] == m) for m in {"m-a", "m-b"}}
    tagged = cli.json("usage", "--by", "total", "--tag", "bench")["totals"]["requests"]
    assert tagged == sum(1 for r in records if r["tag"] == "bench")
    window = cli.json("usage", "--since", "1700000005", "--until", "1700000010")
    assert window["totals"]["requests"] == sum(
        1 for r in records if 1_700_000_005 <= r["ts"] < 1_700_000_010
    )
    day = cli.json("usage", "--by", "day")["data"]
    assert [d["day"] for d in day] == ["2023-11-14"]  # 1_700_000_000 is 2023-11-14 UTC
    assert "no usage" in cli("usage", "--since", "1h").stdout  # the records are from 2023
    proc = cli("usage", "--since", "last week", expect=2)
    assert "--since" in proc.stderr


# --------------------------------------------------------------------------- exit codes


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    run = Cli(tmp_path, tmp_path / "absent.toml", _env())
    assert "required" in run("token", "create", config=False, expect=2).stderr
    run("token", config=False, expect=2)
    run("frobnicate", config=False, expect=2)
    proc = run("token", "list", expect=2)
    assert "absent.toml" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "mysql://x"\n')
    proc = Cli(tmp_path, bad, _env())("token", "list", expect=2)
    assert "database.url" in proc.stderr


def test_default_config_is_fastgate_toml(tmp_path: Path) -> None:
    (tmp_path / "fastgate.toml").write_text('[database]\nurl = "sqlite:///here.db"\n')
    run = Cli(tmp_path, tmp_path / "unused", _env())
    run("migrate", config=False)
    assert (tmp_path / "here.db").exists()


def test_unreachable_database_exit_3(tmp_path: Path) -> None:
    pg = write_config(
        tmp_path / "pg.toml", f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"
    )
    proc = Cli(tmp_path, pg, _env())("token", "list", expect=3)
    assert "cannot open the database" in proc.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    lite = write_config(tmp_path / "lite.toml", f"sqlite:///{blocker}/sub/fg.db")
    proc = Cli(tmp_path, lite, _env())("migrate", expect=3)
    assert "cannot open the database" in proc.stderr
