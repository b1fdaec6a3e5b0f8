"""Tests for fastgate.config: the example file, defaults, and that every validation
rule names the offending key path."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fastgate.config import (
    CHANNEL_TYPES,
    AdminConfig,
    CacheConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    LoggingConfig,
    RateLimitConfig,
    RoutingConfig,
    ServerConfig,
    TokenConfig,
    check_config_main,
    generate_key,
    hash_key,
    load_config,
    parse_config,
    parse_entry,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.toml"
KEY_RE = re.compile(r"^fg-[A-Za-z0-9_-]{43}$")
SHA_A = "a" * 64


def chan(name: str = "c", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "type": "openai",
        "base_url": "https://api.example.com",
        "models": ["m1", "m2"],
    }
    d.update(kw)
    return d


def problems_of(data: dict[str, Any], tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def one_problem(data: dict[str, Any]) -> str:
    probs = problems_of(data)
    assert len(probs) == 1, probs
    return probs[0]


# --------------------------------------------------------------------------- example file


def test_example_file_loads() -> None:
    cfg = load_config(EXAMPLE)
    raw = tomllib.loads(EXAMPLE.read_text())
    assert cfg.path == EXAMPLE
    assert cfg.base_dir == EXAMPLE.parent
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    mock = cfg.channels[0]
    assert (mock.name, mock.type) == ("mock", "mock")
    assert {"mock-1", "gpt-4o-mini"} <= set(mock.models)
    assert dict(cfg.aliases) == {"fast": "mock-1"}
    (token,) = cfg.tokens
    demo_key = raw["tokens"][0]["key"]
    assert token.name == "demo"
    assert KEY_RE.match(demo_key)
    assert token.sha256 == hashlib.sha256(demo_key.encode()).hexdigest()
    assert {p.model for p in cfg.prices} == {"mock-1", "mock-claude", "gpt-4o-mini"}
    assert [(g.name, g.ratio) for g in cfg.groups] == [("default", 1.0)]
    # The curl line in the header comment uses the very key the file defines.
    assert f"Bearer {demo_key}" in EXAMPLE.read_text()


def _uncommented_example() -> str:
    """The example with every commented-out TOML line (`# key = ...`, `# [[...]]`) enabled."""
    return re.sub(r"(?m)^# (?=\[|[A-Za-z_]\w* = )", "", EXAMPLE.read_text())


def test_example_commented_lines_are_valid_and_show_defaults(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(_uncommented_example()), base_dir=tmp_path)
    # Every provider type has an example channel.
    assert {c.type for c in cfg.channels} == set(CHANNEL_TYPES)
    # The commented values of the plain sections are exactly the defaults.
    assert cfg.server == ServerConfig()
    assert cfg.admin == AdminConfig()
    assert cfg.routing == RoutingConfig()
    assert cfg.ratelimit == RateLimitConfig()
    assert cfg.cache == CacheConfig()
    assert cfg.logging == LoggingConfig()
    defaults = parse_config({}, base_dir=tmp_path)
    assert cfg.database == defaults.database
    # Uncommenting the optional keys of the demo token/mock channel changes nothing.
    plain = parse_config(tomllib.loads(EXAMPLE.read_text()), base_dir=tmp_path)
    assert cfg.tokens == plain.tokens
    assert cfg.channels[0] == plain.channels[0]


def test_example_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(EXAMPLE)) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"OK: {EXAMPLE}: 2 channels, 1 tokens, 3 prices"


# --------------------------------------------------------------------------- defaults


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config({}, base_dir=tmp_path)
    s = cfg.server
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)
    assert s.max_body_bytes == 32 * 1024 * 1024
    assert s.max_header_bytes == 64 * 1024
    assert (s.connect_timeout, s.first_byte_timeout, s.idle_timeout) == (10.0, 300.0, 120.0)
    assert (s.header_timeout, s.keepalive_timeout, s.drain_timeout) == (10.0, 75.0, 30.0)
    assert (s.upstream_max_connections, s.upstream_keepalive) == (512, 60.0)
    assert (cfg.admin.host, cfg.admin.port, cfg.admin.token, cfg.admin.token_env) == (
        "127.0.0.1",
        8081,
        "",
        "",
    )
    assert cfg.database.url == "sqlite:///" + str(tmp_path / "fastgate.db")
    assert cfg.database.sqlite_path == str(tmp_path / "fastgate.db")
    assert cfg.database.refresh_interval == 5.0
    assert (cfg.routing.max_attempts, cfg.routing.breaker_failures) == (3, 5)
    assert cfg.routing.breaker_cooldown == 30.0
    assert cfg.ratelimit == RateLimitConfig("memory", "redis://127.0.0.1:6379/0", "fastgate:")
    assert cfg.cache == CacheConfig(
        False, "memory", 3600.0, 10000, 262144, "redis://127.0.0.1:6379/0", "fastgate:"
    )
    assert cfg.logging == LoggingConfig("", "", "info")
    assert dict(cfg.aliases) == {}
    assert (cfg.channels, cfg.tokens, cfg.prices, cfg.groups) == ((), (), (), ())
    assert cfg.path is None and cfg.base_dir == tmp_path
    assert cfg.group_ratio("default") == 1.0


def test_channel_defaults() -> None:
    cfg = parse_config({"channels": [chan()]})
    c = cfg.channels[0]
    assert (c.api_key, c.api_key_env, c.priority, c.weight) == ("", "", 0, 1)
    assert c.groups == ("default",) and c.enabled is True
    assert (c.rpm, c.default_max_tokens, c.anthropic_version) == (0, 4096, "2023-06-01")
    assert (c.delay_ms, c.timeout) == (0.0, 0.0)
    assert dict(c.model_map) == {} and dict(c.headers) == {} and dict(c.deployments) == {}
    assert isinstance(c.models, tuple) and c.models == ("m1", "m2")


def test_mock_channel_needs_no_url_or_models() -> None:
    cfg = parse_config({"channels": [{"name": "m", "type": "mock"}]})
    assert cfg.channels[0].models == ("mock-1",)
    assert cfg.channels[0].base_url == ""


def test_token_and_price_defaults() -> None:
    cfg = parse_config({"tokens": [{"name": "t", "key_sha256": SHA_A}], "prices": [{"model": "m"}]})
    t = cfg.tokens[0]
    assert (t.group, t.quota_usd, t.quota_micros, t.expires_at) == ("default", -1.0, -1, None)
    assert (t.models, t.rpm, t.tpm, t.max_concurrency, t.enabled, t.cache) == (
        (),
        0,
        0,
        0,
        True,
        False,
    )
    assert t.sha256 == SHA_A and t.key == ""
    p = cfg.prices[0]
    assert (p.input, p.output, p.cache_read, p.cache_write) == (0.0, 0.0, None, None)
    assert (p.alias_of, p.tiers, p.tier_mode) == ("", (), "whole")
    assert (p.batch_multiplier, p.priority_multiplier) == (1.0, 1.0)


def test_frozen_and_read_only() -> None:
    cfg = parse_config({"channels": [chan(model_map={"m1": "x"})], "aliases": {"a": "m1"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.aliases["b"] = "m2"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.channels[0].model_map["m2"] = "y"  # type: ignore[index]


# --------------------------------------------------------------------------- type errors


def test_wrong_type_names_path() -> None:
    assert one_problem({"server": {"port": "80"}}) == "server.port: expected integer, got string"


def test_bool_is_not_an_int() -> None:
    assert one_problem({"server": {"workers": True}}) == (
        "server.workers: expected integer, got boolean"
    )


def test_float_is_not_an_int_but_int_is_a_float() -> None:
    assert one_problem({"server": {"port": 80.0}}) == "server.port: expected integer, got float"
    cfg = parse_config({"server": {"connect_timeout": 5}})
    assert cfg.server.connect_timeout == 5.0
    assert type(cfg.server.connect_timeout) is float


def test_nested_wrong_types() -> None:
    probs = problems_of(
        {
            "channels": [chan(models=["m1", 7], headers={"x-a": 1}, enabled="yes")],
        }
    )
    assert "channels[0].models[1]: expected string, got integer" in probs
    assert "channels[0].headers.x-a: expected string, got integer" in probs
    assert "channels[0].enabled: expected boolean, got string" in probs


def test_section_of_wrong_shape() -> None:
    probs = problems_of({"server": 3, "channels": {"name": "x"}})
    assert "server: expected table ([server]), got integer" in probs
    assert "channels: expected array of tables ([[channels]]), got table" in probs


def test_non_finite_number_rejected() -> None:
    assert one_problem({"routing": {"breaker_cooldown": float("inf")}}) == (
        "routing.breaker_cooldown: must be a finite number"
    )


# --------------------------------------------------------------------------- unknown keys


def test_unknown_key_in_nested_channel() -> None:
    probs = problems_of({"channels": [chan("a"), chan("b", typo_key=1)]})
    assert probs == ["channels[1].typo_key: unknown key"]


def test_unknown_key_suggests_close_match() -> None:
    assert one_problem({"channels": [chan(wieght=3)]}) == (
        'channels[0].wieght: unknown key (did you mean "weight"?)'
    )


def test_unknown_section() -> None:
    probs = problems_of({"sevrer": {"port": 1}, "frobnicate": {}})
    assert 'sevrer: unknown section (did you mean "server"?)' in probs
    assert "frobnicate: unknown section" in probs


def test_unknown_key_in_section_and_tier() -> None:
    probs = problems_of(
        {
            "cache": {"ttl_seconds": 5},
            "prices": [{"model": "m", "tiers": [{"up_to": 10, "inptu": 1.0}]}],
        }
    )
    assert any(p.startswith("cache.ttl_seconds: unknown key") for p in probs)
    assert any(p.startswith("prices[0].tiers[0].inptu: unknown key") for p in probs)


# --------------------------------------------------------------------------- ranges, choices


def test_negative_weight() -> None:
    probs = problems_of({"channels": [chan("a"), chan("b"), chan("c", weight=-1)]})
    assert probs == ["channels[2].weight: must be >= 0"]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("server", "port", 70000, "must be between 0 and 65535"),
        ("server", "workers", 0, "must be >= 1"),
        ("server", "max_header_bytes", 512, "must be >= 1024"),
        ("server", "idle_timeout", 0, "must be > 0"),
        ("routing", "max_attempts", 0, "must be >= 1"),
        ("cache", "backend", "disk", 'must be one of "memory", "redis"; got "disk"'),
        ("ratelimit", "redis_url", "http://x", 'must start with "redis://", "rediss://", '),
        ("logging", "level", "loud", "must be one of"),
        ("database", "url", "mysql://x", 'must start with "sqlite:///"'),
    ],
)
def test_section_value_rules(section: str, key: str, value: Any, message: str) -> None:
    problem = one_problem({section: {key: value}})
    assert problem.startswith(f"{section}.{key}: {message}")


@pytest.mark.parametrize(
    ("ctype", "key", "value", "types"),
    [
        ("openai", "delay_ms", 5, '"mock"'),
        ("anthropic", "delay_ms", 5, '"mock"'),
        ("openai", "anthropic_version", "2023-06-01", '"anthropic"'),
        ("gemini", "api_version", "2024-10-21", '"azure"'),
        ("openai", "deployments", {"m1": "d1"}, '"azure"'),
        ("openai", "access_key_id_env", "AWS_KEY", '"bedrock"'),
        ("azure", "region", "us-east-1", '"bedrock"'),
        ("openai", "default_max_tokens", 100, '"anthropic", "bedrock", "mock"'),
    ],
)
def test_keys_of_other_channel_types_are_refused(
    ctype: str, key: str, value: Any, types: str
) -> None:
    """A key only other types use would be accepted and do nothing: refused."""
    c = chan(type=ctype, **{key: value})
    prob = one_problem({"channels": [c]})
    assert prob == (
        f'channels[0].{key}: is only for channels of type {types}; this one is "{ctype}"'
    )


def test_keys_of_their_own_type_are_taken() -> None:
    cfg = parse_config(
        {
            "channels": [
                {"name": "m", "type": "mock", "delay_ms": 2, "default_max_tokens": 9},
                chan("a", type="anthropic", anthropic_version="2023-01-01"),
                chan("z", type="azure", api_version="v1", deployments={"m1": "d1"}),
            ]
        }
    )
    m, a, z = cfg.channels
    assert m.delay_ms == 2 and m.default_max_tokens == 9
    assert a.anthropic_version == "2023-01-01"
    assert z.api_version == "v1" and dict(z.deployments) == {"m1": "d1"}


def test_admin_port_must_differ_from_server_port() -> None:
    assert one_problem({"server": {"port": 9000}, "admin": {"port": 9000}}) == (
        "admin.port: must differ from server.port (9000)"
    )


def test_env_name_fields_reject_secrets() -> None:
    problem = one_problem({"channels": [chan(api_key_env="sk-live-123")]})
    assert problem.startswith("channels[0].api_key_env: must be an environment variable name")
    assert "sk-live-123" not in problem


def test_logging_level_case_insensitive() -> None:
    assert parse_config({"logging": {"level": "DEBUG"}}).logging.level == "debug"


# --------------------------------------------------------------------------- duplicates


def test_duplicate_names_mention_both_indices() -> None:
    probs = problems_of(
        {
            "channels": [chan("x"), chan("y"), chan("x")],
            "tokens": [{"name": "t", "key_sha256": SHA_A}, {"name": "t", "key": "fg-2"}],
            "prices": [{"model": "m"}, {"model": "m"}],
            "groups": [{"name": "g"}, {"name": "g"}],
        }
    )
    assert 'channels[2].name: duplicate name "x" (first at channels[0].name)' in probs
    assert 'tokens[1].name: duplicate name "t" (first at tokens[0].name)' in probs
    assert 'prices[1].model: duplicate model "m" (first at prices[0].model)' in probs
    assert 'groups[1].name: duplicate name "g" (first at groups[0].name)' in probs


def test_duplicate_token_keys() -> None:
    probs = problems_of(
        {
            "tokens": [
                {"name": "a", "key": "fg-same"},
                {"name": "b", "key_sha256": hashlib.sha256(b"fg-same").hexdigest()},
            ]
        }
    )
    assert probs == ["tokens[1].key_sha256: same key as tokens[0]"]


def test_duplicate_model_in_list() -> None:
    assert one_problem({"channels": [chan(models=["a", "b", "a"])]}) == (
        'channels[0].models[2]: duplicate "a"'
    )


# --------------------------------------------------------------------------- channels


@pytest.mark.parametrize(
    ("ctype", "url", "expected"),
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com"),
        ("openai", "https://api.openai.com/v1/", "https://api.openai.com"),
        ("openai", "https://api.openai.com/", "https://api.openai.com"),
        ("openai", "http://10.0.0.5:8000/proxy/v1", "http://10.0.0.5:8000/proxy"),
        ("openai", "https://host/v1/v1", "https://host/v1"),  # only one /v1 is stripped
        ("openai", "https://host/apiv1", "https://host/apiv1"),
        ("openai", "https://v1", "https://v1"),  # a host named v1 is not a path
        ("openrouter", "https://openrouter.ai/api/v1", "https://openrouter.ai/api"),
        ("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com"),
        ("azure", "https://r.openai.azure.com/v1/", "https://r.openai.azure.com"),
        ("mock", "http://127.0.0.1:9/v1", "http://127.0.0.1:9"),
        ("gemini", "https://g.googleapis.com/v1beta", "https://g.googleapis.com"),
        ("gemini", "https://g.googleapis.com/v1/", "https://g.googleapis.com"),
        ("ollama", "http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("ollama", "http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
    ],
)
def test_base_url_normalisation(ctype: str, url: str, expected: str) -> None:
    cfg = parse_config({"channels": [chan(type=ctype, base_url=url)]})
    assert cfg.channels[0].base_url == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com", 'must be an http:// or https:// URL, got "ftp://example.com"'),
        ("api.openai.com/v1", "must be an http:// or https:// URL"),
        ("https://", 'has no host: "https://"'),
        ("https://h/v1?x=1", "must not have a query string or fragment"),
        ("https://h:99999", "invalid URL"),
        ("https://user:pw@h", "must not contain credentials"),
    ],
)
def test_bad_base_url(url: str, message: str) -> None:
    problem = one_problem({"channels": [chan(base_url=url)]})
    assert problem.startswith(f"channels[0].base_url: {message}")


def test_base_url_required_except_mock() -> None:
    d = chan()
    del d["base_url"]
    assert one_problem({"channels": [d]}) == 'channels[0].base_url: required for type "openai"'


def test_bedrock_region() -> None:
    base = {"name": "b", "type": "bedrock", "models": ["m"]}
    assert one_problem({"channels": [base]}) == 'channels[0].region: required for type "bedrock"'
    cfg = parse_config({"channels": [{**base, "region": "eu-west-3"}]})
    assert cfg.channels[0].base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    probs = problems_of({"channels": [{**base, "base_url": "https://x.example"}]})
    assert probs == ['channels[0].region: required for type "bedrock"']


def test_required_channel_keys_and_type() -> None:
    probs = problems_of({"channels": [{"type": "nope", "models": []}]})
    assert "channels[0].name: required key is missing" in probs
    assert any(p.startswith('channels[0].type: must be one of "openai"') for p in probs)
    assert "channels[0].models: must not be empty" in probs


def test_model_map_key_not_in_models() -> None:
    assert one_problem({"channels": [chan(model_map={"m1": "up-1", "gpt-5": "x"})]}) == (
        'channels[0].model_map.gpt-5: "gpt-5" is not in this channel\'s models'
    )
    cfg = parse_config({"channels": [chan(model_map={"m1": "up-1"})]})
    assert cfg.channels[0].upstream_model("m1") == "up-1"
    assert cfg.channels[0].upstream_model("m2") == "m2"


def test_azure_deployments_keys_checked() -> None:
    problem = one_problem({"channels": [chan(type="azure", deployments={"zz": "dep"})]})
    assert problem.startswith("channels[0].deployments.zz: ")


def test_header_rules() -> None:
    probs = problems_of(
        {"channels": [chan(headers={"x-ok": "a\r\nx-evil: 1", "Content-Length": "5", "b d": "1"})]}
    )
    assert "channels[0].headers.x-ok: header value must not contain CR, LF or NUL" in probs
    assert "channels[0].headers.Content-Length: is managed by the gateway and cannot be set" in (
        probs
    )
    assert 'channels[0].headers."b d": invalid header name' in probs


def test_resolve_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FG_TEST_KEY", "sk-from-env")
    monkeypatch.delenv("FG_TEST_MISSING", raising=False)
    cfg = parse_config(
        {
            "channels": [
                chan("env", api_key_env="FG_TEST_KEY"),
                chan("lit", api_key="sk-lit", api_key_env="FG_TEST_KEY"),
                chan("missing", api_key_env="FG_TEST_MISSING"),
            ]
        }
    )
    assert [c.resolve_api_key() for c in cfg.channels] == ["sk-from-env", "sk-lit", ""]
    assert "sk-lit" not in repr(cfg.channels[1])


# --------------------------------------------------------------------------- tokens


def test_token_key_is_hashed() -> None:
    cfg = parse_config({"tokens": [{"name": "t", "key": "fg-hello"}]})
    assert cfg.tokens[0].sha256 == hashlib.sha256(b"fg-hello").hexdigest()
    assert hash_key("fg-hello") == hashlib.sha256(b"fg-hello").hexdigest()
    assert hash_key("fg-é") == hashlib.sha256("fg-é".encode()).hexdigest()
    assert TokenConfig(name="x", key="fg-hello").sha256 == cfg.tokens[0].sha256


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"key": "fg-a", "key_sha256": SHA_A}, "tokens[0]: set either key or key_sha256"),
        ({}, "tokens[0]: one of key or key_sha256 is required"),
        ({"key": ""}, "tokens[0]: one of key or key_sha256 is required"),
        ({"key": "sk-abc"}, 'tokens[0].key: must start with "fg-"'),
        ({"key": "fg-a b"}, "tokens[0].key: must not contain whitespace"),
        ({"key_sha256": "A" * 64}, "tokens[0].key_sha256: must be 64 lowercase hex"),
        ({"key_sha256": "abc"}, "tokens[0].key_sha256: must be 64 lowercase hex"),
        ({"key": 5}, "tokens[0].key: expected string, got integer"),
    ],
)
def test_token_key_rules(token: dict[str, Any], message: str) -> None:
    problem = one_problem({"tokens": [{"name": "t", **token}]})
    assert problem.startswith(message)


def test_quota() -> None:
    def tok(q: Any) -> dict[str, Any]:
        return {"tokens": [{"name": "t", "key_sha256": SHA_A, "quota_usd": q}]}

    assert parse_config(tok(1.5)).tokens[0].quota_micros == 1_500_000
    assert parse_config(tok(0)).tokens[0].quota_micros == 0
    assert parse_config(tok(-1)).tokens[0].quota_micros == -1
    assert parse_config(tok(0.1 + 0.2)).tokens[0].quota_micros == 300_000
    assert one_problem(tok(-0.5)) == "tokens[0].quota_usd: must be -1 (unlimited) or >= 0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:00Z", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01t00:00:00z", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01T02:00:00+02:00", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-06-30 12:30:15.5-01:00", dt.datetime(2030, 6, 30, 13, 30, 15, 500000, dt.UTC)),
        (dt.datetime(2031, 5, 5, tzinfo=dt.UTC), dt.datetime(2031, 5, 5, tzinfo=dt.UTC)),
    ],
)
def test_expires_at_valid(value: Any, expected: dt.datetime) -> None:
    cfg = parse_config({"tokens": [{"name": "t", "key_sha256": SHA_A, "expires_at": value}]})
    assert cfg.tokens[0].expires_at == expected.timestamp()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tomorrow", "expected RFC 3339"),
        ("2030-01-01", "expected RFC 3339"),
        ("2030-01-01T00:00:00", "expected RFC 3339"),
        ("2030-13-01T00:00:00Z", "invalid date-time"),
        (dt.datetime(2030, 1, 1), "needs a time zone offset"),
        (dt.date(2030, 1, 1), "expected RFC 3339 date-time string, got date"),
        (17, "expected RFC 3339 date-time string, got integer"),
    ],
)
def test_expires_at_invalid(value: Any, message: str) -> None:
    problem = one_problem({"tokens": [{"name": "t", "key_sha256": SHA_A, "expires_at": value}]})
    assert problem.startswith(f"tokens[0].expires_at: {message}")


def test_expires_at_empty_means_never() -> None:
    cfg = parse_config({"tokens": [{"name": "t", "key_sha256": SHA_A, "expires_at": ""}]})
    assert cfg.tokens[0].expires_at is None


# --------------------------------------------------------------------------- aliases


def test_alias_rules() -> None:
    probs = problems_of(
        {
            "channels": [chan(models=["gpt-4o"])],
            "aliases": {"gpt4": "x", "self": "self", "a": "gpt4", "n": 3},
        }
    )
    assert 'aliases.gpt4: target "x" is not served by any channel' in probs
    assert "aliases.self: alias maps to itself" in probs
    assert any(p.startswith('aliases.a: target "gpt4" is itself an alias') for p in probs)
    assert "aliases.n: expected string, got integer" in probs
    assert len(probs) == 4


def test_alias_to_served_model() -> None:
    cfg = parse_config({"channels": [chan(models=["gpt-4o"])], "aliases": {"claude-3.5": "gpt-4o"}})
    assert cfg.aliases["claude-3.5"] == "gpt-4o"
    # A key that is not a bare TOML key is quoted in paths.
    probs = problems_of({"aliases": {"claude-3.5": "nope"}})
    assert probs == ['aliases."claude-3.5": target "nope" is not served by any channel']


# --------------------------------------------------------------------------- prices, groups


def test_price_tiers() -> None:
    cfg = parse_config(
        {
            "prices": [
                {
                    "model": "m",
                    "tiers": [
                        {"up_to": 1000, "input": 1, "output": 2},
                        {"input": 2, "output": 4, "cache_read": 0.5},
                    ],
                    "tier_mode": "segmented",
                }
            ]
        }
    )
    p = cfg.prices[0]
    assert [t.up_to for t in p.tiers] == [1000, None]
    assert p.tiers[1].cache_read == 0.5 and p.tiers[0].cache_read is None
    assert p.tier_mode == "segmented"


def test_price_rules() -> None:
    probs = problems_of(
        {
            "prices": [
                {"model": "a", "input": -1},
                {"model": "b", "alias_of": "zzz"},
                {"model": "c", "alias_of": "c"},
                {"model": "d", "alias_of": "a", "output": 3},
                {"model": "e", "tiers": [{"up_to": 100}, {"up_to": 50}]},
                {"model": "f", "tiers": [{"input": 1}, {"up_to": 50}]},
                {"model": "g", "tier_mode": "mixed"},
                {"model": "h", "alias_of": "b"},
            ]
        }
    )
    assert "prices[0].input: must be >= 0" in probs
    assert 'prices[1].alias_of: "zzz" is not the model of any [[prices]] entry' in probs
    assert "prices[2].alias_of: a price cannot be an alias of itself" in probs
    assert "prices[3].alias_of: cannot be combined with output" in probs
    assert "prices[4].tiers[1].up_to: must be greater than the previous tier's up_to (100)" in (
        probs
    )
    assert "prices[5].tiers[0].up_to: required on every tier but the last" in probs
    assert any(p.startswith('prices[6].tier_mode: must be one of "whole"') for p in probs)
    assert any(p.startswith('prices[7].alias_of: "b" is itself an alias') for p in probs)


def test_price_alias_ok() -> None:
    cfg = parse_config({"prices": [{"model": "a", "input": 1}, {"model": "b", "alias_of": "a"}]})
    assert cfg.prices[1].alias_of == "a"


def test_groups() -> None:
    cfg = parse_config({"groups": [{"name": "vip", "ratio": 0.5}]})
    assert cfg.group_ratio("vip") == 0.5
    assert cfg.group_ratio("other") == 1.0
    assert one_problem({"groups": [{"name": "g", "ratio": -1}]}) == (
        "groups[0].ratio: must be >= 0"
    )
    # A group used by tokens/channels needs no [[groups]] entry.
    parse_config(
        {
            "channels": [chan(groups=["team-a"])],
            "tokens": [{"name": "t", "key_sha256": SHA_A, "group": "team-b"}],
        }
    )


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "logging": {"access_log": "logs/access.log", "usage_spool_dir": "spool"},
            "database": {"url": "sqlite:///data/fg.db"},
        },
        base_dir=tmp_path,
    )
    assert cfg.logging.access_log == str(tmp_path / "logs" / "access.log")
    assert cfg.logging.usage_spool_dir == str(tmp_path / "spool")
    assert cfg.database.url == "sqlite:///" + str(tmp_path / "data" / "fg.db")
    assert cfg.database.sqlite_path == str(tmp_path / "data" / "fg.db")


def test_absolute_and_special_paths_kept(tmp_path: Path) -> None:
    abs_log = tmp_path / "elsewhere.log"
    cfg = parse_config(
        {"logging": {"access_log": str(abs_log)}, "database": {"url": "sqlite:///:memory:"}},
        base_dir=Path("/nonexistent"),
    )
    assert cfg.logging.access_log == str(abs_log)
    assert cfg.database.url == "sqlite:///:memory:"
    assert parse_config({"logging": {"access_log": "-"}}).logging.access_log == "-"
    pg = parse_config({"database": {"url": "postgresql://u@h/db"}}).database
    assert pg.url == "postgresql://u@h/db" and pg.is_postgres and pg.sqlite_path is None


def test_load_config_sets_path_and_base_dir(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "fg.toml"
    f.parent.mkdir()
    f.write_text('[logging]\naccess_log = "a.log"\n')
    cfg = load_config(f)
    assert cfg.path == f and cfg.base_dir == f.parent
    assert cfg.logging.access_log == str(f.parent / "a.log")
    assert cfg.database.url == "sqlite:///" + str(f.parent / "fastgate.db")


# --------------------------------------------------------------------------- many problems


def test_multiple_problems_reported_at_once() -> None:
    data = {
        "server": {"port": "x", "workers": 0},
        "channels": [chan("a", weight=-2, surprise=1), chan("b", base_url="gopher://x")],
        "tokens": [{"name": "t", "key_sha256": SHA_A, "expires_at": "soon"}],
        "nonsense": {},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    exc = info.value
    expected_prefixes = [
        "server.port: expected integer",
        "server.workers: must be >= 1",
        "channels[0].weight: must be >= 0",
        "channels[0].surprise: unknown key",
        "channels[1].base_url: must be an http:// or https:// URL",
        "tokens[0].expires_at: expected RFC 3339",
        "nonsense: unknown section",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in exc.problems), (prefix, exc.problems)
    assert len(exc.problems) == len(expected_prefixes)
    assert str(exc) == "\n".join(exc.problems)


def test_load_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: file not found"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = \n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{bad}: invalid TOML: ")

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path}: ")


# --------------------------------------------------------------------------- keys


def test_generate_key_format() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert KEY_RE.match(k), k
        raw = base64.urlsafe_b64decode(k[3:] + "=")
        assert len(raw) == 32
    # A generated key is accepted as a token key.
    k = next(iter(keys))
    assert parse_config({"tokens": [{"name": "t", "key": k}]}).tokens[0].sha256 == hash_key(k)


# --------------------------------------------------------------------------- check-config


def test_check_config_main_ok_and_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FG_TEST_UNSET_KEY", raising=False)
    f = tmp_path / "c.toml"
    f.write_text(
        '[[channels]]\nname = "o"\ntype = "openai"\nbase_url = "https://x.example/v1"\n'
        'api_key_env = "FG_TEST_UNSET_KEY"\nmodels = ["m"]\n'
        '[[tokens]]\nname = "t"\nkey = "fg-x"\n'
    )
    assert check_config_main(str(f)) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == f"OK: {f}: 1 channels, 1 tokens, 0 prices"
    assert "WARNING" in cap.err and "channels[0].api_key_env" in cap.err
    assert "FG_TEST_UNSET_KEY" in cap.err

    monkeypatch.setenv("FG_TEST_UNSET_KEY", "sk-1")
    assert check_config_main(str(f)) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_check_config_main_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[server]\nport = "80"\n[[channels]]\nname = "o"\ntype = "openai"\n'
        'base_url = "https://x"\nmodels = ["m"]\nweight = -1\n'
    )
    assert check_config_main(str(f)) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert "server.port: expected integer, got string" in lines
    assert "channels[0].weight: must be >= 0" in lines


def test_check_config_main_missing_and_syntax(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config_main(str(tmp_path / "absent.toml")) == 2
    assert "file not found" in capsys.readouterr().err
    f = tmp_path / "bad.toml"
    f.write_text("this is = = not toml")
    assert check_config_main(str(f)) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_config_constructible_directly() -> None:
    """Other modules' tests build configs by hand; defaults must make that easy."""
    cfg = Config(tokens=(TokenConfig(name="t", key="fg-k", quota_usd=2.5),))
    assert cfg.tokens[0].quota_micros == 2_500_000
    assert cfg.database == DatabaseConfig()


def test_parse_entry_validates_one_entry_like_the_file() -> None:
    """The store validates admin input with the file's own entry rules."""
    ch, kw, problems = parse_entry(
        "channel", {"name": "o", "type": "openai", "base_url": "https://x/v1/", "models": ["m"]}
    )
    assert problems == [] and ch.base_url == "https://x" and kw["base_url"] == "https://x"
    assert "weight" not in kw  # unset keys keep following the defaults
    _, _, problems = parse_entry("channel", {"name": "o", "type": "openai", "weight": -1})
    assert "channel.weight: must be >= 0" in problems
    assert 'channel.base_url: required for type "openai"' in problems
    _, _, problems = parse_entry("group", {"name": "g", "colour": 1})
    assert problems == ["group.colour: unknown key"]
    tok, _, problems = parse_entry("token", {"name": "t", "key": "fg-abc"})
    assert problems == [] and tok.sha256 == hash_key("fg-abc")
    _, _, problems = parse_entry("price", {})
    assert problems == ["price.model: required key is missing"]


def test_config_imports_nothing_above_it() -> None:
    """config sits below store, server, admin and the CLI (layering)."""
    code = (
        "import sys, fastgate.config\n"
        "print(' '.join(m for m in sys.modules if m.startswith('fastgate')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout.split()
    assert out and all(m == "fastgate" or m.startswith("fastgate.config") for m in out), out


def test_budgets_need_both_keys_with_a_clear_message() -> None:
    tok = {"name": "t", "key": "fg-" + "a" * 43}
    msg = one_problem({"tokens": [{**tok, "budget_usd": 5}]})
    assert msg.startswith("tokens[0].budget_period:") and "day, week, month" in msg
    msg = one_problem({"tokens": [{**tok, "budget_period": "week"}]})
    assert msg.startswith("tokens[0].budget_usd:") and "required" in msg
    msg = one_problem({"groups": [{"name": "g", "budget_usd": 1, "budget_period": "year"}]})
    assert msg.startswith("groups[0].budget_period:")
    msg = one_problem({"groups": [{"name": "g", "budget_usd": -2, "budget_period": "day"}]})
    assert msg.startswith("groups[0].budget_usd:")
    cfg = parse_config(
        {
            "tokens": [{**tok, "budget_usd": 1.5, "budget_period": "month"}],
            "groups": [{"name": "g", "budget_usd": 0, "budget_period": "day"}],
        }
    )
    assert (cfg.tokens[0].budget_micros, cfg.tokens[0].budget_period) == (1_500_000, "month")
    assert (cfg.groups[0].budget_micros, cfg.groups[0].budget_period) == (0, "day")
    assert parse_config({"tokens": [tok]}).tokens[0].budget_micros == -1


def test_budget_periods_are_utc_days_iso_weeks_and_months() -> None:
    from fastgate.vocab.periods import period_bounds

    t = dt.datetime(2026, 12, 6, 23, 59, 59, tzinfo=dt.UTC).timestamp()  # a Sunday
    day = period_bounds("day", t)
    week = period_bounds("week", t)
    month = period_bounds("month", t)
    utc = dt.UTC
    assert day == (int(dt.datetime(2026, 12, 6, tzinfo=utc).timestamp()), int(t) + 1)
    assert dt.datetime.fromtimestamp(week[0], utc) == dt.datetime(2026, 11, 30, tzinfo=utc)
    assert week[1] - week[0] == 7 * 86400
    assert dt.datetime.fromtimestamp(month[1], utc) == dt.datetime(2027, 1, 1, tzinfo=utc)
