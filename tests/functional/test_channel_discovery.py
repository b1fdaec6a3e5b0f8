"""Model discovery (`fastgate channel models`, `GET /admin/channels/{id}/models`) and the
one-token probe (`fastgate channel test`, `POST /admin/channels/{id}/test`) for every
channel type, against the provider fakes on real sockets.

The CLI runs as a subprocess (`python -m fastgate`) on a SQLite store, with the
channels in its config file (and one added to the store); the admin API runs on a
real port over a SQLite store, with the channels created through the API (so their
keys are encrypted at rest and decrypted for the upstream). Expectations come from
what each fake is told to list and from the channel specs written here; what the
upstream saw is read from the fake's request records.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.web_request import BaseRequest

from fastgate.admin.discovery import discover_models
from fastgate.config import parse_config
from fastgate.store.base import Store
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.base import Behaviour, FakeUpstream, Recorded
from tests.fakes.bedrock_fake import FakeBedrock
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.ollama_fake import FakeOllama
from tests.fakes.openai_fake import Fail, FakeOpenAI, Hang, Ok, closed_port
from tests.functional import test_admin_api as admin_tests
from tests.functional import test_store_backends as store_tests
from tests.functional.test_admin_api import AdminServer, MakeAdmin
from tests.functional.test_cli import Cli, _env
from tests.functional.test_store_backends import ENV

# Fixtures reused by name: started stores, and the admin app on a real port.
make_store = store_tests.make_store
make_admin = admin_tests.make_admin

OPENAI_KEY = "sk-oai-" + secrets.token_hex(8)
OPENROUTER_KEY = "sk-or-" + secrets.token_hex(8)
AZURE_KEY = "az-" + secrets.token_hex(8)
ANTHROPIC_KEY = "sk-ant-" + secrets.token_hex(8)
GEMINI_KEY = "AIza-" + secrets.token_hex(8)
STORE_KEY = "sk-store-" + secrets.token_hex(8)
SECRETS = (OPENAI_KEY, OPENROUTER_KEY, AZURE_KEY, ANTHROPIC_KEY, GEMINI_KEY, STORE_KEY)
AZURE_401 = "Access denied due to invalid subscription key or wrong API endpoint."
ANTHROPIC_VERSION = "2023-06-01"
AZURE_DATED = "2024-10-21"


# --------------------------------------------------------------------------- an Azure fake


class FakeAzure(FakeOpenAI):
    """Azure OpenAI's paths over FakeOpenAI's answers: `api-key` checked (401 like
    Azure otherwise), dated `/openai/deployments/{d}/chat/completions?api-version=`
    and `/openai/models?api-version=`, and the v1 API under `/openai/v1/`."""

    def __init__(self, name: str, *, api_key: str, models: list[str]) -> None:
        super().__init__(name, models=models)
        self.api_key = api_key

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        if rec.headers.get("api-key") != self.api_key:
            return self._fail_response(
                rec, Fail(401, body={"error": {"code": "401", "message": AZURE_401}})
            )
        path = request.path
        version = rec.query_params.get("api-version", "")
        dep = re.fullmatch(r"/openai/deployments/([^/]+)(/chat/completions)", path)
        if dep and version:
            rec.notes["deployment"] = unquote(dep.group(1))
            inner = "/v1" + dep.group(2)
        elif path == "/openai/models" and version:
            inner = "/v1/models"
        elif path.startswith("/openai/v1/") and not version:
            inner = path[len("/openai") :]
        else:
            return self._fail_response(
                rec, Fail(404, body={"error": {"code": "404", "message": "Resource not found"}})
            )
        return await super()._route(_AtPath(request, inner), rec, behaviour)  # type: ignore[arg-type]


class _AtPath:
    """The request as FakeOpenAI's router should see it: the same, at another path
    (aiohttp cannot clone a request whose body was read)."""

    def __init__(self, request: BaseRequest, path: str) -> None:
        self._request = request
        self.path = path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One channel: its spec, its upstream, what discovery must find."""

    spec: dict[str, Any]
    fake: FakeUpstream | None
    listed: list[str]  # what the upstream lists (what the fake was told)
    in_channel: dict[str, list[str]]  # listed id -> public names serving it (by hand)
    missing: list[str] = field(default_factory=list)  # channel models not listed
    list_path: str = ""  # where the listing request goes

    @property
    def name(self) -> str:
        return self.spec["name"]


class Upstreams:
    """Every fake, started once for the module."""

    def __init__(self) -> None:
        self.openai = FakeOpenAI("oai", models=["gpt-4o", "gpt-4o-mini", "o3-mini"])
        self.openrouter = FakeOpenAI(
            "or",
            models=["openai/gpt-4o", "anthropic/claude-3.5-sonnet", "meta-llama/llama-3.1-8b"],
        )
        self.azure = FakeAzure("azure", api_key=AZURE_KEY, models=["gpt-4o", "gpt-4o-mini"])
        self.anthropic = FakeAnthropic(
            "anthropic",
            models=["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"],
            api_key=ANTHROPIC_KEY,
        )
        self.gemini = FakeGemini(
            "gemini", models=["gemini-2.0-flash", "gemini-2.5-pro"], api_key=GEMINI_KEY
        )
        self.ollama = FakeOllama("ollama", models=["llama3.2:latest", "qwen2.5:0.5b"])
        self.bedrock = FakeBedrock(
            "bedrock", models=["anthropic.claude-3-haiku-20240307-v1:0"], region="us-west-2"
        )
        self.all: list[FakeUpstream] = [
            self.openai,
            self.openrouter,
            self.azure,
            self.anthropic,
            self.gemini,
            self.ollama,
            self.bedrock,
        ]

    def cases(self) -> dict[str, Case]:
        """The discoverable channels (every type but bedrock), by channel name."""
        azure_models = list(self.azure.models)
        cases = [
            Case(
                spec={
                    "name": "openai",
                    "type": "openai",
                    "base_url": self.openai.url + "/v1",
                    "api_key": OPENAI_KEY,
                    "models": ["gpt-4o", "gpt-4.1"],
                },
                fake=self.openai,
                listed=list(self.openai.models),
                in_channel={"gpt-4o": ["gpt-4o"]},
                missing=["gpt-4.1"],
                list_path="/v1/models",
            ),
            Case(
                spec={
                    "name": "openrouter",
                    "type": "openrouter",
                    "base_url": self.openrouter.url + "/v1",
                    "api_key": OPENROUTER_KEY,
                    "models": ["claude"],
                    "model_map": {"claude": "anthropic/claude-3.5-sonnet"},
                },
                fake=self.openrouter,
                listed=list(self.openrouter.models),
                in_channel={"anthropic/claude-3.5-sonnet": ["claude"]},
                list_path="/v1/models",
            ),
            Case(
                spec={
                    "name": "azure-dated",
                    "type": "azure",
                    "base_url": self.azure.url,
                    "api_key": AZURE_KEY,
                    "api_version": AZURE_DATED,
                    "models": ["gpt-4o"],
                    "deployments": {"gpt-4o": "prod-4o"},
                },
                fake=self.azure,
                listed=azure_models,
                in_channel={"gpt-4o": ["gpt-4o"]},
                list_path="/openai/models",
            ),
            Case(
                spec={
                    "name": "azure-v1",
                    "type": "azure",
                    "base_url": self.azure.url + "/openai/v1",
                    "api_key": AZURE_KEY,
                    "api_version": "v1",
                    "models": ["mini"],
                    "model_map": {"mini": "gpt-4o-mini"},
                    "deployments": {"mini": "dep-mini"},
                },
                fake=self.azure,
                listed=azure_models,
                in_channel={"gpt-4o-mini": ["mini"]},
                list_path="/openai/v1/models",
            ),
            Case(
                spec={
                    "name": "anthropic",
                    "type": "anthropic",
                    "base_url": self.anthropic.url,
                    "api_key": ANTHROPIC_KEY,
                    "anthropic_version": ANTHROPIC_VERSION,
                    "models": ["haiku"],
                    "model_map": {"haiku": "claude-3-5-haiku-20241022"},
                },
                fake=self.anthropic,
                listed=list(self.anthropic.models),
                in_channel={"claude-3-5-haiku-20241022": ["haiku"]},
                list_path="/v1/models",
            ),
            Case(
                spec={
                    "name": "gemini",
                    "type": "gemini",
                    "base_url": self.gemini.url + "/v1beta",
                    "api_key": GEMINI_KEY,
                    "models": ["gemini-2.5-pro", "gemini-9"],
                },
                fake=self.gemini,
                listed=list(self.gemini.models),
                in_channel={"gemini-2.5-pro": ["gemini-2.5-pro"]},
                missing=["gemini-9"],
                list_path="/v1beta/models",
            ),
            Case(
                spec={
                    "name": "ollama",
                    "type": "ollama",
                    "base_url": self.ollama.url,
                    "models": ["llama3.2"],
                },
                fake=self.ollama,
                listed=list(self.ollama.models),
                # Ollama: a name without a tag is the ":latest" tag.
                in_channel={"llama3.2:latest": ["llama3.2"]},
                list_path="/api/tags",
            ),
            Case(
                spec={"name": "mock", "type": "mock", "models": ["mock-1", "mock-2"]},
                fake=None,
                listed=["mock-1", "mock-2"],
                in_channel={"mock-1": ["mock-1"], "mock-2": ["mock-2"]},
            ),
        ]
        return {c.name: c for c in cases}

    def bedrock_spec(self, name: str = "bedrock", **over: Any) -> dict[str, Any]:
        spec = {
            "name": name,
            "type": "bedrock",
            "base_url": self.bedrock.url,
            "region": self.bedrock.region,
            "access_key_id": self.bedrock.access_key,
            "secret_access_key": self.bedrock.secret_key,
            "models": list(self.bedrock.models),
        }
        spec.update(over)
        return spec

    def dead_spec(self) -> dict[str, Any]:
        return {
            "name": "dead",
            "type": "openai",
            "base_url": f"http://127.0.0.1:{closed_port()}",
            "api_key": OPENAI_KEY,
            "models": ["gpt-4o"],
        }

    def error_specs(self) -> list[dict[str, Any]]:
        """Channels whose upstream refuses them (wrong keys) or is not there."""
        return [
            self.dead_spec(),
            {
                "name": "anthropic-badkey",
                "type": "anthropic",
                "base_url": self.anthropic.url,
                "api_key": "sk-ant-wrong",
                "models": ["claude-3-5-haiku-20241022"],
            },
            {
                "name": "gemini-badkey",
                "type": "gemini",
                "base_url": self.gemini.url,
                "api_key": "AIza-wrong",
                "models": ["gemini-2.0-flash"],
            },
            {
                "name": "azure-badkey",
                "type": "azure",
                "base_url": self.azure.url,
                "api_key": "az-wrong",
                "api_version": AZURE_DATED,
                "models": ["gpt-4o"],
            },
            self.bedrock_spec("bedrock-badsecret", secret_access_key="wrong/secret/key"),
            self.bedrock_spec("bedrock-nocreds", access_key_id="", secret_access_key=""),
        ]


def expected_rows(case: Case) -> list[dict[str, Any]]:
    return [
        {"id": m, "in_channel": m in case.in_channel, "served_as": case.in_channel.get(m, [])}
        for m in case.listed
    ]


def check_listing_request(case: Case, rec: Recorded) -> None:
    """The listing went where the provider lists models, with the channel's auth."""
    assert rec.method == "GET" and rec.path == case.list_path, (case.name, rec.path)
    ctype = case.spec["type"]
    if ctype in ("openai", "openrouter"):
        assert rec.headers["Authorization"] == f"Bearer {case.spec['api_key']}"
    elif ctype == "azure":
        assert rec.headers["api-key"] == AZURE_KEY and "Authorization" not in rec.headers
        dated = case.spec["api_version"] == AZURE_DATED
        assert rec.query_params.get("api-version") == (AZURE_DATED if dated else None)
    elif ctype == "anthropic":
        assert rec.headers["x-api-key"] == ANTHROPIC_KEY
        assert rec.headers["anthropic-version"] == ANTHROPIC_VERSION
    elif ctype == "gemini":
        assert rec.headers["x-goog-api-key"] == GEMINI_KEY
        assert "key" not in rec.query_params  # the key never goes into a URL


def check_probe_request(case: Case, rec: Recorded) -> None:
    """The probe spoke the channel's protocol, asked for one token, with its auth."""
    spec, body = case.spec, rec.json
    upstream = spec.get("model_map", {}).get(spec["models"][0], spec["models"][0])
    ctype = spec["type"]
    assert rec.method == "POST", case.name
    if ctype in ("openai", "openrouter"):
        assert rec.path == case.list_path.removesuffix("/models") + "/chat/completions"
        assert rec.headers["Authorization"] == f"Bearer {spec['api_key']}"
        assert body["max_tokens"] == 1 and body["model"] == upstream
    elif ctype == "azure":
        deployment = spec["deployments"][spec["models"][0]]
        assert rec.headers["api-key"] == AZURE_KEY
        assert body["max_tokens"] == 1
        if spec["api_version"] == AZURE_DATED:
            assert rec.path == f"/openai/deployments/{deployment}/chat/completions"
            assert rec.query_params["api-version"] == AZURE_DATED
        else:
            assert rec.path == "/openai/v1/chat/completions" and not rec.query
            assert body["model"] == deployment  # v1 API: the deployment goes in the body
    elif ctype == "anthropic":
        assert rec.path == "/v1/messages"
        assert rec.headers["x-api-key"] == ANTHROPIC_KEY
        assert rec.headers["anthropic-version"] == ANTHROPIC_VERSION
        assert body["max_tokens"] == 1 and body["model"] == upstream
    elif ctype == "gemini":
        assert rec.path == f"/v1beta/models/{upstream}:generateContent"
        assert rec.headers["x-goog-api-key"] == GEMINI_KEY
        assert body["generationConfig"]["maxOutputTokens"] == 1
    elif ctype == "ollama":
        assert rec.path == "/api/chat"
        assert body["stream"] is False and body["options"]["num_predict"] == 1
        assert body["model"] == upstream
    elif ctype == "bedrock":
        sig = rec.notes["sigv4"]
        assert sig["valid"] is True and sig["error"] is None
        assert sig["region"] == spec["region"] and sig["access_key"] == spec["access_key_id"]
        assert rec.notes["model_id"] == upstream
        assert rec.path.endswith("/converse")
        assert body["inferenceConfig"]["maxTokens"] == 1
    else:  # pragma: no cover - a case without a check is a test bug
        raise AssertionError(f"no probe check for {ctype}")
    assert rec.status == 200 and rec.usage is not None
    if ctype in ("anthropic", "gemini", "ollama", "bedrock"):
        # These fakes cut their answer at the limit: one token came back.
        assert rec.usage["completion_tokens"] == 1


def message_of(rec: Recorded) -> str:
    """The error message a fake answered with (from its own response body)."""
    doc = json.loads(rec.response_body)
    err = doc.get("error")
    return err["message"] if isinstance(err, dict) else (err or doc["message"])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ups() -> Iterator[Upstreams]:
    u = Upstreams()
    for f in u.all:
        f.start()
    try:
        yield u
    finally:
        for f in u.all:
            f.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    """Every test starts with quiet fakes answering normally."""
    if "ups" in request.fixturenames:
        for f in request.getfixturevalue("ups").all:
            f.set_behaviour(Ok())
            f.clear()


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def channels_toml(specs: list[dict[str, Any]]) -> str:
    out = []
    for spec in specs:
        out.append("[[channels]]")
        out += [f"{k} = {_toml(v)}" for k, v in spec.items() if v != ""]
        out.append("")
    return "\n".join(out)


@pytest.fixture(scope="module")
def cli(ups: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The CLI with every channel in its config file, on a SQLite store."""
    root = tmp_path_factory.mktemp("discovery-cli")
    work = root / "work"
    work.mkdir()
    specs = [c.spec for c in ups.cases().values()]
    specs += [ups.bedrock_spec(), *ups.error_specs()]
    config = root / "fastgate.toml"
    db = root / "state" / "fastgate.db"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n\n' + channels_toml(specs))
    return Cli(work, config, _env(**ENV))


# --------------------------------------------------------------------------- CLI: models


CASE_NAMES = [
    "openai",
    "openrouter",
    "azure-dated",
    "azure-v1",
    "anthropic",
    "gemini",
    "ollama",
    "mock",
]


def table_rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_models_every_type(cli: Cli, ups: Upstreams, name: str) -> None:
    case = ups.cases()[name]
    doc = cli.json("channel", "models", name)
    assert doc["channel"] == name and doc["type"] == case.spec["type"]
    assert doc["data"] == expected_rows(case)
    assert doc["missing"] == case.missing
    if case.fake is not None:
        check_listing_request(case, case.fake.last)

    proc = cli("channel", "models", name)
    rows = table_rows(proc.stdout)
    assert rows[0] == ["MODEL", "IN_CHANNEL", "SERVED_AS"]
    want = [
        [m, "yes" if m in case.in_channel else "no", ",".join(case.in_channel.get(m, [])) or "-"]
        for m in case.listed
    ]
    assert rows[1:] == want
    for public in case.missing:
        assert public in proc.stderr
    assert not cli.leaked(case.spec.get("api_key") or "no key")


def test_cli_models_store_channel(cli: Cli, ups: Upstreams) -> None:
    """A channel added to the store: its key is decrypted and sent upstream."""
    cli(
        "channel",
        "add",
        "stored-openai",
        "--type",
        "openai",
        "--base-url",
        ups.openai.url,
        "--api-key",
        STORE_KEY,
        "--models",
        "o3-mini",
    )
    doc = cli.json("channel", "models", "stored-openai")
    assert [m["id"] for m in doc["data"]] == ups.openai.models
    assert [m["id"] for m in doc["data"] if m["in_channel"]] == ["o3-mini"]
    assert ups.openai.last.headers["Authorization"] == f"Bearer {STORE_KEY}"
    doc = json.loads(cli("channel", "test", "stored-openai", "--json").stdout)
    assert doc["ok"] is True and doc["model"] == "o3-mini"
    assert ups.openai.last.json["model"] == "o3-mini"
    assert not cli.leaked(STORE_KEY)


def test_cli_models_errors(cli: Cli, ups: Upstreams) -> None:
    # Nothing listening: exit 3, and the message says where it tried.
    proc = cli("channel", "models", "dead", expect=3)
    assert "cannot reach" in proc.stderr and "127.0.0.1" in proc.stderr
    assert proc.stdout == ""

    # 401 from the upstream: exit 1 with the upstream's own message.
    proc = cli("channel", "models", "anthropic-badkey", expect=1)
    assert ups.anthropic.last.status == 401
    assert "401" in proc.stderr and message_of(ups.anthropic.last) in proc.stderr
    proc = cli("channel", "models", "azure-badkey", expect=1)
    assert ups.azure.last.status == 401 and AZURE_401 in proc.stderr
    message = "Incorrect API key provided: sk-oai-****"
    ups.openai.script(Fail(401, body={"error": {"message": message, "type": "auth"}}))
    proc = cli("channel", "models", "openai", expect=1)
    assert "401" in proc.stderr and message in proc.stderr
    # Gemini says 400 API_KEY_INVALID for a wrong key: refused too, with its message.
    proc = cli("channel", "models", "gemini-badkey", expect=1)
    assert ups.gemini.last.status == 400 and message_of(ups.gemini.last) in proc.stderr

    # An upstream that never answers: exit 3 after --timeout.
    ups.openai.set_behaviour(Hang())
    proc = cli("channel", "models", "openai", "--timeout", "0.5", expect=3)
    assert "no answer" in proc.stderr
    ups.openai.set_behaviour(Ok())

    # Bedrock's runtime API has no listing: said plainly, nothing sent.
    proc = cli("channel", "models", "bedrock", expect=1)
    assert "bedrock" in proc.stderr.lower() and "list" in proc.stderr
    assert ups.bedrock.request_count == 0

    proc = cli("channel", "models", "ghost", expect=1)
    assert "not found" in proc.stderr
    cli("channel", "models", "openai", "--timeout", "0", expect=2)
    for secret in SECRETS:
        assert not cli.leaked(secret)


# --------------------------------------------------------------------------- CLI: probes


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if n != "mock"] + ["bedrock"])
def test_cli_probe_every_type(cli: Cli, ups: Upstreams, name: str) -> None:
    if name == "bedrock":
        case = Case(spec=ups.bedrock_spec(), fake=ups.bedrock, listed=[], in_channel={})
    else:
        case = ups.cases()[name]
    assert case.fake is not None
    doc = json.loads(cli("channel", "test", name, "--json").stdout)
    assert doc["ok"] is True, doc
    assert doc["status"] == 200 and doc["error"] is None and doc["channel"] == name
    assert doc["model"] == case.spec["models"][0]
    assert case.fake.request_count == 1
    check_probe_request(case, case.fake.last)
    proc = cli("channel", "test", name)
    assert proc.stdout.startswith("ok")


def test_cli_probe_failures(cli: Cli, ups: Upstreams) -> None:
    cases: list[tuple[str, FakeUpstream | None, int]] = [
        ("anthropic-badkey", ups.anthropic, 401),
        ("gemini-badkey", ups.gemini, 400),
        ("azure-badkey", ups.azure, 401),
        ("bedrock-badsecret", ups.bedrock, 403),
        ("dead", None, 0),
    ]
    for name, fake, status in cases:
        doc = json.loads(cli("channel", "test", name, "--json", expect=1).stdout)
        assert doc["ok"] is False and doc["status"] == status, (name, doc)
        if fake is not None:
            assert fake.last.status == status
            assert doc["error"] == message_of(fake.last)
        else:
            assert "cannot reach" in doc["error"]
        proc = cli("channel", "test", name, expect=1)
        assert proc.stdout.startswith("FAILED") and doc["error"] in proc.stdout
    assert ups.bedrock.last.notes["sigv4"]["error"] == "InvalidSignatureException"

    # No credentials: refused before any request.
    before = ups.bedrock.request_count
    doc = json.loads(cli("channel", "test", "bedrock-nocreds", "--json", expect=1).stdout)
    assert doc["status"] == 0 and "access_key_id" in doc["error"]
    assert ups.bedrock.request_count == before
    for secret in SECRETS:
        assert not cli.leaked(secret)


# --------------------------------------------------------------------------- admin API


@pytest.fixture
async def admin(
    tmp_path: Path, make_store: Callable[..., Store], make_admin: MakeAdmin
) -> AdminServer:
    """The admin API over a SQLite store; only a mock channel in its config file."""
    store = make_store("sqlite:///" + str(tmp_path / "state" / "fastgate.db"))
    config = parse_config(
        {"channels": [{"name": "file-mock", "type": "mock", "models": ["m-a", "m-b"]}]},
        base_dir=tmp_path,
    )
    return await make_admin(store, config=config)


async def _create(admin: AdminServer, spec: dict[str, Any]) -> None:
    body = {k: v for k, v in spec.items() if v != ""}
    status, doc = await admin.call("POST", "/admin/channels", json=body)
    assert status == 201, doc


async def test_admin_models_and_probe_every_type(admin: AdminServer, ups: Upstreams) -> None:
    for case in ups.cases().values():
        await _create(admin, case.spec)
        status, doc = await admin.call("GET", f"/admin/channels/{case.name}/models")
        assert status == 200, (case.name, doc)
        assert doc["object"] == "list" and doc["channel"] == case.name
        assert doc["data"] == expected_rows(case), case.name
        assert doc["missing"] == case.missing
        if case.fake is None:
            continue
        check_listing_request(case, case.fake.last)
        case.fake.clear()
        status, doc = await admin.call("POST", f"/admin/channels/{case.name}/test")
        assert status == 200 and doc["ok"] is True, (case.name, doc)
        assert case.fake.request_count == 1
        check_probe_request(case, case.fake.last)

    await _create(admin, ups.bedrock_spec())
    status, doc = await admin.call("POST", "/admin/channels/bedrock/test")
    assert status == 200 and doc["ok"] is True, doc
    bedrock = Case(spec=ups.bedrock_spec(), fake=ups.bedrock, listed=[], in_channel={})
    check_probe_request(bedrock, ups.bedrock.last)

    # A file channel is discovered too (mock: its configured models).
    status, doc = await admin.call("GET", "/admin/channels/file-mock/models")
    assert status == 200 and [m["id"] for m in doc["data"]] == ["m-a", "m-b"]
    assert all(m["in_channel"] for m in doc["data"])
    for secret in SECRETS:
        assert not admin.leaked(secret)


async def test_admin_models_errors(admin: AdminServer, ups: Upstreams) -> None:
    for spec in [ups.bedrock_spec(), *ups.error_specs()]:
        await _create(admin, spec)
    await _create(admin, ups.cases()["openai"].spec)

    status, doc = await admin.call("GET", "/admin/channels/dead/models")
    assert status == 502 and doc["error"]["code"] == "upstream_unreachable"
    assert "cannot reach" in doc["error"]["message"]

    status, doc = await admin.call("GET", "/admin/channels/anthropic-badkey/models")
    assert status == 502 and doc["error"]["code"] == "upstream_error"
    assert doc["error"]["upstream_status"] == 401
    assert doc["error"]["message"] == message_of(ups.anthropic.last)

    ups.openai.set_behaviour(Hang())
    status, doc = await admin.call("GET", "/admin/channels/openai/models?timeout=0.5")
    assert status == 504 and doc["error"]["code"] == "upstream_timeout"
    ups.openai.set_behaviour(Ok())

    status, doc = await admin.call("GET", "/admin/channels/bedrock/models")
    assert status == 400 and doc["error"]["code"] == "not_discoverable"
    assert ups.bedrock.request_count == 0

    status, doc = await admin.call("GET", "/admin/channels/ghost/models")
    assert status == 404
    for bad in ("abc", "0", "500"):
        status, doc = await admin.call("GET", f"/admin/channels/openai/models?timeout={bad}")
        assert status == 422 and "timeout" in doc["error"]["fields"]
    status, _ = await admin.call("GET", "/admin/channels/openai/models", token="wrong")
    assert status == 401

    # The probe reports the same failures in its result, per type.
    status, doc = await admin.call("POST", "/admin/channels/gemini-badkey/test")
    assert doc["ok"] is False and doc["status"] == ups.gemini.last.status == 400
    assert doc["error"] == message_of(ups.gemini.last)
    status, doc = await admin.call("POST", "/admin/channels/bedrock-badsecret/test")
    assert doc["ok"] is False and doc["status"] == 403
    assert doc["error"] == message_of(ups.bedrock.last)
    for secret in SECRETS:
        assert not admin.leaked(secret)


# --------------------------------------------------------------------------- pagination


async def test_discovery_follows_pages() -> None:
    """Anthropic (after_id) and Gemini (pageToken) listings longer than one page."""
    many = [f"model-{i:04d}" for i in range(1234)]
    anthropic = FakeAnthropic("pages", models=many, api_key=ANTHROPIC_KEY)
    gemini = FakeGemini("pages", models=many, api_key=GEMINI_KEY)
    with anthropic, gemini:
        cfg = parse_config(
            {
                "channels": [
                    {
                        "name": "a",
                        "type": "anthropic",
                        "base_url": anthropic.url,
                        "api_key": ANTHROPIC_KEY,
                        "models": ["model-0001"],
                    },
                    {
                        "name": "g",
                        "type": "gemini",
                        "base_url": gemini.url,
                        "api_key": GEMINI_KEY,
                        "models": ["model-0001"],
                    },
                ]
            }
        )
        a, g = cfg.channels
        assert await discover_models(a) == many
        assert anthropic.request_count > 1
        first_page = json.loads(anthropic.requests[0].response_body)
        assert anthropic.requests[1].query_params["after_id"] == first_page["last_id"]
        assert await discover_models(g) == many
        assert gemini.request_count > 1
        assert "pageToken" in gemini.requests[1].query_params
