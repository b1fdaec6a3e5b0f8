"""`[webhooks]` config: defaults, the example's commented lines, and every refusal
naming its key path (an unknown event name above all)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fastgate.config import (
    WEBHOOK_EVENTS,
    ConfigError,
    WebhooksConfig,
    config_warnings,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
URL = "https://hooks.example.com/fastgate"


def problems(section: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"webhooks": section})
    return info.value.problems


def test_defaults_and_off_without_a_url() -> None:
    assert parse_config({}).webhooks == WebhooksConfig()
    assert WebhooksConfig().url == ""  # no webhooks
    hooks = parse_config({"webhooks": {"url": URL}}).webhooks
    assert (
        hooks.events
        == WEBHOOK_EVENTS
        == (
            "channel_down",
            "channel_up",
            "unpriced_model",
            "budget",
        )
    )
    assert (hooks.secret_env, hooks.timeout, hooks.max_attempts) == ("", 5.0, 5)
    assert (hooks.max_per_minute, hooks.queue_size, hooks.instance) == (60, 1000, "")


def test_the_example_shows_the_defaults() -> None:
    text = re.sub(r"(?m)^# (?=\[|[A-Za-z_]\w* = )", "", EXAMPLE.read_text())
    assert parse_config(tomllib.loads(text)).webhooks == WebhooksConfig(url=URL)


def test_every_key_is_read() -> None:
    hooks = parse_config(
        {
            "webhooks": {
                "url": "http://127.0.0.1:9000/h",
                "events": ["budget", "channel_down"],
                "secret_env": "HOOK_SECRET",
                "timeout": 2,
                "max_attempts": 3,
                "max_per_minute": 10,
                "queue_size": 50,
                "instance": "eu-1",
            }
        }
    ).webhooks
    assert hooks == WebhooksConfig(
        "http://127.0.0.1:9000/h", ("budget", "channel_down"), "HOOK_SECRET", 2.0, 3, 10, 50, "eu-1"
    )


def test_unknown_event_names_are_refused() -> None:
    assert problems({"url": URL, "events": ["channel_down", "chanel_up", "cost"]}) == [
        'webhooks.events[1]: unknown event "chanel_up" (did you mean "channel_up"?); the events '
        'are "channel_down", "channel_up", "unpriced_model", "budget"',
        'webhooks.events[2]: unknown event "cost"; the events are "channel_down", "channel_up", '
        '"unpriced_model", "budget"',
    ]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"events": ["budget"]}, "webhooks.url: required key is missing"),
        ({"url": ""}, "webhooks.url: must not be empty"),
        ({"url": "ftp://x/y"}, "webhooks.url: must be an http:// or https:// URL"),
        ({"url": "http://"}, "webhooks.url: must be an http:// or https:// URL"),
        ({"url": URL, "events": []}, "webhooks.events: must not be empty"),
        ({"url": URL, "events": ["budget", "budget"]}, 'webhooks.events[1]: duplicate "budget"'),
        ({"url": URL, "secret_env": "my secret"}, "webhooks.secret_env: must be an environment"),
        ({"url": URL, "timeout": 0}, "webhooks.timeout: must be > 0"),
        ({"url": URL, "max_attempts": 0}, "webhooks.max_attempts: must be between 1 and 20"),
        ({"url": URL, "max_per_minute": 0}, "webhooks.max_per_minute: must be >= 1"),
        ({"url": URL, "queue_size": 0}, "webhooks.queue_size: must be >= 1"),
        ({"url": URL, "evnts": ["budget"]}, 'webhooks.evnts: unknown key (did you mean "events"?)'),
    ],
)
def test_refusals_name_their_key(section: dict[str, Any], problem: str) -> None:
    (got,) = problems(section)
    assert got.startswith(problem), got


def test_a_url_is_not_echoed() -> None:
    (got,) = problems({"url": "ftp://user:s3cret@host/"})
    assert "s3cret" not in got


def test_an_unset_secret_env_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FG_UNIT_HOOK_SECRET", raising=False)
    cfg = parse_config({"webhooks": {"url": URL, "secret_env": "FG_UNIT_HOOK_SECRET"}})
    assert config_warnings(cfg) == [
        'webhooks.secret_env: environment variable "FG_UNIT_HOOK_SECRET" is not set'
    ]
    monkeypatch.setenv("FG_UNIT_HOOK_SECRET", "x")
    assert config_warnings(cfg) == []
    assert cfg.webhooks.resolve_secret() == "x"
