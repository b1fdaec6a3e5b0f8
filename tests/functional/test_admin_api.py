"""The admin API on a real port, over real HTTP, against real databases.

The admin app is served by aiohttp's AppRunner + TCPSite on 127.0.0.1:0 in the
test's event loop, with a started Store (a SQLite file in a temp dir, or a fresh
schema in the session's Postgres database), and driven by aiohttp.ClientSession.
`AdminServer` and the `make_admin` / `admin` fixtures are meant for reuse by
end-to-end tests (import them like the store fixtures are imported here).

Every response body the client receives is kept, so tests can check that no
secret (a provider key, a plaintext fastgate key after creation) ever comes back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fastgate.admin.app import STATIC_DIR, AdminContext, build_admin_app
from fastgate.config import Config, parse_config
from fastgate.store.base import Store
from tests.fakes.openai_fake import Fail, FakeOpenAI, closed_port
from tests.functional import test_store_backends as store_tests
from tests.functional.test_store_backends import KEY_RE, usage
from tests.harness import make_key

# The store tests' fixtures, registered here by name: db_url runs each test on SQLite and
# on Postgres (a per-session database), make_store starts stores and stops them after.
db_url = store_tests.db_url
make_store = store_tests.make_store
pg_database = store_tests.pg_database
pg_url = store_tests.pg_url

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
FILE_KEY = make_key()
FILE_UPSTREAM_SECRET = "sk-file-" + secrets.token_hex(8)
UPSTREAM_SECRET = "sk-store-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- harness


def file_config(base_dir: Path, **extra: Any) -> Config:
    """A config file's entries: one of each kind, plus a channel with a literal key."""
    doc: dict[str, Any] = {
        "channels": [
            {"name": "file-mock", "type": "mock", "models": ["mock-1"]},
            {
                "name": "file-openai",
                "type": "openai",
                "base_url": "http://127.0.0.1:9",
                "api_key": FILE_UPSTREAM_SECRET,
                "models": ["gpt-4o"],
            },
        ],
        "tokens": [{"name": "file-token", "key": FILE_KEY, "group": "default"}],
        "prices": [{"model": "file-model", "input": 1.0, "output": 2.0}],
        "groups": [{"name": "file-group", "ratio": 2.0}],
    }
    doc.update(extra)
    return parse_config(doc, base_dir=base_dir)


def sample_status() -> dict[str, Any]:
    """What the data plane's status callable returns (shape of server.status())."""
    return {
        "snapshot_version": 7,
        "ready": True,
        "store": {"ok": True, "error": ""},
        "channels": [
            {
                "name": "file-mock",
                "type": "mock",
                "enabled": True,
                "models": ["mock-1"],
                "priority": 0,
                "weight": 1,
                "source": "file",
            }
        ],
        "breakers": {"file-mock/mock-1": {"state": "open", "failures": 5}},
        "inflight": 0,
    }


class AdminServer:
    """The admin app on 127.0.0.1:<ephemeral> plus a client that records every body."""

    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self.bodies: list[bytes] = []

    async def start(self) -> AdminServer:
        self.runner = web.AppRunner(build_admin_app(self.ctx), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        token: str | None = ADMIN_TOKEN,
        headers: dict[str, str] | None = None,
        allow_redirects: bool = True,
    ) -> tuple[int, bytes, Any]:
        assert self.session is not None
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method,
            self.url + path,
            json=json,
            data=data,
            headers=hdrs,
            allow_redirects=allow_redirects,
        ) as resp:
            body = await resp.read()
            self.bodies.append(body)
            return resp.status, body, resp.headers

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """(status, decoded JSON) for an API call."""
        status, body, headers = await self.raw(method, path, **kw)
        assert headers["Content-Type"].startswith("application/json"), (status, body)
        import json as _json

        return status, _json.loads(body)

    def leaked(self, secret: str) -> bool:
        needle = secret.encode()
        return any(needle in b for b in self.bodies)


MakeAdmin = Callable[..., Awaitable[AdminServer]]


@pytest.fixture
async def make_admin(tmp_path: Path) -> AsyncIterator[MakeAdmin]:
    """Factory: await make_admin(store, token=..., config=..., status=...) -> AdminServer."""
    servers: list[AdminServer] = []

    async def _make(
        store: Store,
        *,
        token: str = ADMIN_TOKEN,
        config: Config | None = None,
        status: Callable[[], dict[str, Any]] = sample_status,
    ) -> AdminServer:
        cfg = config if config is not None else file_config(tmp_path)
        srv = AdminServer(AdminContext(store=store, token=token, config=lambda: cfg, status=status))
        servers.append(srv)
        return await srv.start()

    try:
        yield _make
    finally:
        for srv in servers:
            await srv.close()


@pytest.fixture
async def admin(
    db_url: str, make_store: Callable[..., Store], make_admin: MakeAdmin
) -> AdminServer:
    """The admin API over a started store (both backends), FASTGATE_SECRET_KEY set."""
    return await make_admin(make_store(db_url))


def by_name(entries: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {e[key]: e for e in entries}


# --------------------------------------------------------------------------- auth and static


async def test_auth_required_and_checked(admin: AdminServer) -> None:
    for token, code in ((None, "missing_token"), ("wrong", "invalid_token"), ("", "invalid_token")):
        status, body, headers = await admin.raw("GET", "/admin/channels", token=token)
        assert status == 401, (token, body)
        import json

        err = json.loads(body)["error"]
        assert set(err) >= {"message", "type", "code"}
        assert err["code"] == code
        assert "Bearer" in headers.get("WWW-Authenticate", "")
    # Basic auth with the right secret is not a bearer token.
    status, _, _ = await admin.raw(
        "GET", "/admin/channels", token=None, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}
    )
    assert status == 401
    status, doc = await admin.call("GET", "/admin/channels")
    assert status == 200 and doc["object"] == "list"
    # Unknown admin paths are 401 without the token (no route discovery), JSON 404 with it.
    status, _, _ = await admin.raw("GET", "/admin/nothing-here", token=None)
    assert status == 401
    status, doc = await admin.call("GET", "/admin/nothing-here")
    assert status == 404 and doc["error"]["code"] == "not_found"
    status, doc = await admin.call("PUT", "/admin/channels")
    assert status == 405 and doc["error"]["code"] == "method_not_allowed"


async def test_admin_disabled_without_token(
    tmp_path: Path,
    make_store: Callable[..., Store],
    make_admin: MakeAdmin,
) -> None:
    store = make_store("sqlite:///" + str(tmp_path / "d.db"))
    srv = await make_admin(store, token="")
    for token in (None, "", "anything"):
        status, doc = await srv.call("GET", "/admin/status", token=token)
        assert status == 401
        assert doc["error"]["code"] == "admin_disabled"
        assert "token" in doc["error"]["message"]
    # The dashboard's static files still load (they hold no data).
    status, _, _ = await srv.raw("GET", "/dashboard/", token=None)
    assert status == 200


async def test_dashboard_static_files(admin: AdminServer) -> None:
    status, body, headers = await admin.raw("GET", "/", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = body.decode()
    assert html == (STATIC_DIR / "index.html").read_text()
    # Every asset the page loads is local and served without auth.
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        assert "://" not in asset and not asset.startswith("//"), asset
        if asset.startswith("data:"):  # the empty favicon: no request at all
            continue
        status, body, headers = await admin.raw("GET", "/dashboard/" + asset, token=None)
        assert status == 200, asset
        assert body == (STATIC_DIR / asset).read_bytes()
    status, _, headers = await admin.raw("GET", "/dashboard/app.js", token=None)
    assert headers["Content-Type"].startswith("text/javascript")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for script in STATIC_DIR.glob("*.js"):
        js = script.read_text()
        assert "http://" not in js.replace("http://www.w3.org/2000/svg", ""), script
        assert "https://" not in js, script
    # Nothing outside the static directory is reachable.
    for path in ("/dashboard/..%2Fapp.py", "/dashboard/%2e%2e/app.py", "/dashboard/nope.js"):
        status, _, _ = await admin.raw("GET", path, token=None)
        assert status == 404, path


# --------------------------------------------------------------------------- channels


async def test_channels_crud(admin: AdminServer) -> None:
    status, doc = await admin.call(
        "POST",
        "/admin/channels",
        json={
            "name": "up-a",
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": UPSTREAM_SECRET,
            "models": ["gpt-4o", "gpt-4o-mini"],
            "weight": 3,
        },
    )
    assert status == 201, doc
    assert doc["name"] == "up-a" and doc["source"] == "store" and doc["read_only"] is False
    assert doc["api_key_set"] is True and "api_key" not in doc
    assert doc["base_url"] == "http://127.0.0.1:9"  # the trailing /v1 is not doubled later
    cid = doc["id"]
    assert isinstance(cid, int)

    status, doc = await admin.call("GET", "/admin/channels")
    assert status == 200
    chans = by_name(doc["data"])
    assert set(chans) == {"file-mock", "file-openai", "up-a"}
    assert chans["file-mock"]["source"] == "file" and chans["file-mock"]["read_only"] is True
    assert chans["file-openai"]["api_key_set"] is True
    assert "api_key" not in chans["file-openai"]
    assert chans["up-a"]["weight"] == 3

    for ref in (str(cid), "up-a"):
        status, doc = await admin.call("GET", f"/admin/channels/{ref}")
        assert status == 200 and doc["id"] == cid

    status, doc = await admin.call("PATCH", f"/admin/channels/{cid}", json={"weight": 7})
    assert status == 200 and doc["weight"] == 7 and doc["api_key_set"] is True
    status, doc = await admin.call("PATCH", "/admin/channels/up-a", json={"enabled": False})
    assert status == 200 and doc["enabled"] is False

    # Validation: 422 with the offending fields named.
    status, doc = await admin.call(
        "PATCH", "/admin/channels/up-a", json={"weight": -1, "priority": "high"}
    )
    assert status == 422, doc
    err = doc["error"]
    assert err["code"] == "validation_error" and err["type"] == "invalid_request_error"
    assert set(err["fields"]) == {"weight", "priority"}
    assert ">= 0" in err["fields"]["weight"]
    status, doc = await admin.call(
        "POST", "/admin/channels", json={"name": "bad", "type": "nope", "models": []}
    )
    assert status == 422
    assert {"type", "models"} <= set(doc["error"]["fields"])

    # Bodies that are not JSON objects.
    status, doc = await admin.call("POST", "/admin/channels", data=b"{not json")
    assert status == 400 and doc["error"]["code"] == "invalid_json"
    status, doc = await admin.call("POST", "/admin/channels", json=[1, 2])
    assert status == 400

    # Name taken (store) -> 409; unknown -> 404.
    status, doc = await admin.call(
        "POST",
        "/admin/channels",
        json={"name": "up-a", "type": "mock", "models": ["m"]},
    )
    assert status == 409 and doc["error"]["code"] == "conflict"
    for method in ("GET", "PATCH", "DELETE"):
        status, doc = await admin.call(method, "/admin/channels/ghost", json={"weight": 1})
        assert status == 404 and doc["error"]["code"] == "not_found", method
    status, doc = await admin.call("GET", "/admin/channels/99999")
    assert status == 404

    status, doc = await admin.call("DELETE", f"/admin/channels/{cid}")
    assert status == 200 and doc["name"] == "up-a"
    status, doc = await admin.call("GET", f"/admin/channels/{cid}")
    assert status == 404
    assert not admin.leaked(UPSTREAM_SECRET)
    assert not admin.leaked(FILE_UPSTREAM_SECRET)


async def test_a_channel_with_another_types_key_is_refused(admin: AdminServer) -> None:
    """The admin API validates like the config file: `delay_ms` on an openai
    channel is a 422 validation error naming the key, and nothing is created."""
    status, doc = await admin.call(
        "POST",
        "/admin/channels",
        json={
            "name": "up-delay",
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["gpt-4o"],
            "delay_ms": 50,
        },
    )
    assert status == 422, doc
    assert doc["error"]["code"] == "validation_error"
    assert doc["error"]["fields"]["delay_ms"].startswith('is only for channels of type "mock"')
    status, doc = await admin.call("GET", "/admin/channels")
    assert "up-delay" not in by_name(doc["data"])


async def test_file_entries_are_read_only(admin: AdminServer) -> None:
    cases = [
        ("channels", "file-mock", {"weight": 2}),
        ("tokens", "file-token", {"rpm": 5}),
        ("prices", "file-model", {"input": 9.0}),
        ("groups", "file-group", {"ratio": 3.0}),
    ]
    for plural, name, patch in cases:
        status, doc = await admin.call("GET", f"/admin/{plural}/{name}")
        assert status == 200 and doc["source"] == "file" and doc["read_only"] is True
        for method in ("PATCH", "DELETE"):
            status, doc = await admin.call(method, f"/admin/{plural}/{name}", json=patch)
            assert status == 409, (plural, method, doc)
            assert doc["error"]["code"] == "read_only"
            assert "config file" in doc["error"]["message"]
    # Creating a store entry with a file entry's name is refused (the file would win).
    creates = {
        "channels": {"name": "file-mock", "type": "mock", "models": ["x"]},
        "tokens": {"name": "file-token"},
        "prices": {"model": "file-model", "input": 1, "output": 1},
        "groups": {"name": "file-group", "ratio": 1},
    }
    for plural, spec in creates.items():
        status, doc = await admin.call("POST", f"/admin/{plural}", json=spec)
        assert status == 409, (plural, doc)
        assert "config file" in doc["error"]["message"]
    # ... and so is a store token with a file token's key, or a rename onto a file name.
    status, doc = await admin.call("POST", "/admin/tokens", json={"name": "x", "key": FILE_KEY})
    assert status == 409
    status, doc = await admin.call("POST", "/admin/groups", json={"name": "g1", "ratio": 1})
    assert status == 201
    status, doc = await admin.call("PATCH", "/admin/groups/g1", json={"name": "file-group"})
    assert status == 409
    # Nothing was written for the refused requests.
    status, doc = await admin.call("GET", "/admin/groups")
    assert [g["name"] for g in doc["data"] if g["source"] == "store"] == ["g1"]


# --------------------------------------------------------------------------- tokens


async def test_tokens_key_shown_once(admin: AdminServer) -> None:
    status, doc = await admin.call(
        "POST",
        "/admin/tokens",
        json={
            "name": "bench",
            "group": "default",
            "quota_usd": 12.5,
            "models": ["gpt-4o"],
            "rpm": 60,
            "expires_at": "2031-01-02T03:04:05Z",
        },
    )
    assert status == 201, doc
    key = doc["key"]
    assert KEY_RE.match(key)
    assert doc["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert doc["quota_micros"] == 12_500_000 and doc["rpm"] == 60
    expected_exp = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert dt.datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00")).timestamp() == (
        expected_exp
    )
    n_bodies = len(admin.bodies)

    status, doc = await admin.call("GET", "/admin/tokens")
    toks = by_name(doc["data"])
    assert set(toks) == {"file-token", "bench"}
    assert toks["file-token"]["key_sha256"] == hashlib.sha256(FILE_KEY.encode()).hexdigest()
    for t in toks.values():
        assert "key" not in t
    status, doc = await admin.call("GET", "/admin/tokens/bench")
    assert status == 200 and "key" not in doc
    status, doc = await admin.call("PATCH", "/admin/tokens/bench", json={"enabled": False})
    assert status == 200 and doc["enabled"] is False and "key" not in doc
    # After creation the plaintext key never comes back, nor does the file's key.
    assert not any(key.encode() in b for b in admin.bodies[n_bodies:])
    assert not admin.leaked(FILE_KEY)

    status, doc = await admin.call("POST", "/admin/tokens", json={"group": "default"})
    assert status == 422 and "name" in doc["error"]["fields"]
    status, doc = await admin.call(
        "POST", "/admin/tokens", json={"name": "t2", "expires_at": "tomorrow", "rpm": -3}
    )
    assert status == 422
    assert set(doc["error"]["fields"]) == {"expires_at", "rpm"}
    status, doc = await admin.call("DELETE", "/admin/tokens/bench")
    assert status == 200
    status, doc = await admin.call("GET", "/admin/tokens/bench")
    assert status == 404


# --------------------------------------------------------------------------- prices, groups


async def test_prices_and_groups_crud(admin: AdminServer) -> None:
    model = "azure/gpt-4o"  # LiteLLM-style names carry slashes
    status, doc = await admin.call(
        "POST",
        "/admin/prices",
        json={"model": model, "input": 2.5, "output": 10, "cache_read": 1.25},
    )
    assert status == 201, doc
    assert doc["input_micros"] == 2_500_000 and doc["cache_read_micros"] == 1_250_000
    for path in ("/admin/prices/azure/gpt-4o", "/admin/prices/azure%2Fgpt-4o"):
        status, doc = await admin.call("GET", path)
        assert status == 200 and doc["model"] == model, path
    status, doc = await admin.call("PATCH", "/admin/prices/azure%2Fgpt-4o", json={"output": 12})
    assert status == 200 and doc["output"] == 12 and doc["input"] == 2.5
    status, doc = await admin.call("PATCH", f"/admin/prices/{model}", json={"input": -1})
    assert status == 422 and set(doc["error"]["fields"]) == {"input"}
    status, doc = await admin.call(
        "POST", "/admin/prices", json={"model": "alias-m", "alias_of": model, "input": 1}
    )
    assert status == 422 and "alias_of" in doc["error"]["fields"]
    status, doc = await admin.call(
        "POST", "/admin/prices", json={"model": "alias-m", "alias_of": model}
    )
    assert status == 201 and doc["alias_of"] == model
    status, doc = await admin.call("GET", "/admin/prices")
    assert {p["model"] for p in doc["data"]} == {"file-model", model, "alias-m"}
    status, doc = await admin.call("DELETE", f"/admin/prices/{model}")
    assert status == 200
    status, doc = await admin.call("GET", f"/admin/prices/{model}")
    assert status == 404

    status, doc = await admin.call("POST", "/admin/groups", json={"name": "vip", "ratio": 0.5})
    assert status == 201 and doc["ratio"] == 0.5
    status, doc = await admin.call("PATCH", f"/admin/groups/{doc['id']}", json={"ratio": 0.8})
    assert status == 200 and doc["ratio"] == 0.8
    status, doc = await admin.call("PATCH", "/admin/groups/vip", json={"ratio": -2})
    assert status == 422 and set(doc["error"]["fields"]) == {"ratio"}
    status, doc = await admin.call("POST", "/admin/groups", json={"name": "vip", "extra": 1})
    assert status == 422 and "extra" in doc["error"]["fields"]
    status, doc = await admin.call("DELETE", "/admin/groups/vip")
    assert status == 200
    status, doc = await admin.call("DELETE", "/admin/groups/vip")
    assert status == 404


async def test_channel_key_needs_secret_key(
    db_url: str,
    make_store: Callable[..., Store],
    make_admin: MakeAdmin,
) -> None:
    srv = await make_admin(make_store(db_url, environ={}))
    spec = {"name": "k", "type": "openai", "base_url": "http://x.test", "models": ["m"]}
    status, doc = await srv.call(
        "POST", "/admin/channels", json={**spec, "api_key": UPSTREAM_SECRET}
    )
    assert status == 422, doc
    assert doc["error"]["code"] == "secret_key_missing"
    assert "FASTGATE_SECRET_KEY" in doc["error"]["message"]
    assert "api_key" in doc["error"]["fields"]
    status, doc = await srv.call("GET", "/admin/channels/k")
    assert status == 404  # nothing was written
    status, doc = await srv.call("POST", "/admin/channels", json={**spec, "api_key_env": "UP_KEY"})
    assert status == 201 and doc["api_key_env"] == "UP_KEY" and doc["api_key_set"] is False
    assert not srv.leaked(UPSTREAM_SECRET)


# --------------------------------------------------------------------------- usage and status


def _expected(records: list[dict[str, Any]], field: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        g = out.setdefault(
            r[field], {"requests": 0, "errors": 0, "prompt_tokens": 0, "cost_micros": 0}
        )
        g["requests"] += 1
        g["errors"] += r["status"] >= 400
        g["prompt_tokens"] += r["prompt_tokens"]
        g["cost_micros"] += r["cost_micros"]
    return out


async def test_usage_queries(
    db_url: str,
    make_store: Callable[..., Store],
    make_admin: MakeAdmin,
) -> None:
    store = make_store(db_url)
    base = 1_700_000_000.0 - (1_700_000_000 % 3600)  # an hour boundary
    records = [usage(i, ts=base + i * 600.0) for i in range(30)]  # 10 per 5 hours
    assert store.sync.write_usage(records) == len(records)
    srv = await make_admin(store)

    status, doc = await srv.call("GET", "/admin/usage?group_by=key")
    assert status == 200, doc
    want = _expected(records, "key_name")
    got = {r["key"]: r for r in doc["data"]}
    assert set(got) == set(want)
    for k, w in want.items():
        for field, v in w.items():
            assert got[k][field] == v, (k, field)
    assert doc["totals"]["requests"] == len(records)
    assert doc["totals"]["cost_micros"] == sum(r["cost_micros"] for r in records)
    costs = [r["cost_micros"] for r in doc["data"]]
    assert costs == sorted(costs, reverse=True)

    # A window given three ways: RFC 3339, unix seconds; since <= ts < until.
    lo, hi = base + 3600, base + 3 * 3600
    inside = [r for r in records if lo <= r["ts"] < hi]
    rfc = dt.datetime.fromtimestamp(lo, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for since in (rfc, str(int(lo))):
        status, doc = await srv.call("GET", f"/admin/usage?since={since}&until={int(hi)}")
        assert status == 200, doc
        assert doc["totals"]["requests"] == len(inside)
        assert doc["totals"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in inside)

    # Hourly time series by channel.
    status, doc = await srv.call("GET", "/admin/usage?group_by=channel&bucket=hour")
    assert status == 200
    series: dict[tuple[int, str], int] = {}
    for r in records:
        k = (int(r["ts"] // 3600 * 3600), r["channel"])
        series[k] = series.get(k, 0) + 1
    assert {(r["bucket"], r["channel"]): r["requests"] for r in doc["data"]} == series
    buckets = [r["bucket"] for r in doc["data"]]
    assert buckets == sorted(buckets)

    # Filters: tag, key; group by day and model.
    status, doc = await srv.call("GET", "/admin/usage?tag=bench")
    assert doc["totals"]["requests"] == sum(1 for r in records if r["tag"] == "bench")
    status, doc = await srv.call("GET", "/admin/usage?key=key-1&group_by=model")
    mine = [r for r in records if r["key_name"] == "key-1"]
    assert {r["model"]: r["requests"] for r in doc["data"]} == {
        m: c["requests"] for m, c in _expected(mine, "model").items()
    }
    status, doc = await srv.call("GET", "/admin/usage?group_by=day")
    days = {dt.datetime.fromtimestamp(r["ts"], dt.UTC).strftime("%Y-%m-%d") for r in records}
    assert {r["day"] for r in doc["data"]} == days

    # Bad parameters name the field.
    for query, field in (
        ("group_by=color", "group_by"),
        ("bucket=week", "bucket"),
        ("since=yesterday-ish", "since"),
        ("since=2024-02-01&until=2024-01-01", "until"),
    ):
        status, doc = await srv.call("GET", f"/admin/usage?{query}")
        assert status == 422, query
        assert field in doc["error"]["fields"], (query, doc)


async def test_status_merges_runtime_and_store_health(admin: AdminServer) -> None:
    status, doc = await admin.call("GET", "/admin/status")
    assert status == 200
    want = sample_status()
    assert doc["snapshot_version"] == want["snapshot_version"]
    assert doc["breakers"] == want["breakers"]
    assert doc["channels"] == want["channels"]
    health = doc["store"]["health"]
    assert health["ok"] is True and health["error"] is None
    assert health["backend"] == admin.ctx.store.dialect
    assert health["version"] == admin.ctx.store.sync.version()
    assert health["latency_ms"] >= 0
    assert doc["store"]["ok"] is True  # the data plane's own view is kept


async def test_status_survives_a_failing_runtime(
    tmp_path: Path,
    make_store: Callable[..., Store],
    make_admin: MakeAdmin,
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no app yet")

    srv = await make_admin(make_store("sqlite:///" + str(tmp_path / "s.db")), status=broken)
    status, doc = await srv.call("GET", "/admin/status")
    assert status == 200
    assert "no app yet" in doc["error"]
    assert doc["store"]["health"]["ok"] is True


# --------------------------------------------------------------------------- channel test


async def test_channel_probe(admin: AdminServer, fake_openai: FakeOpenAI) -> None:
    status, doc = await admin.call(
        "POST",
        "/admin/channels",
        json={
            "name": "fake",
            "type": "openai",
            "base_url": fake_openai.url + "/v1",
            "api_key": UPSTREAM_SECRET,
            "models": ["gpt-4o"],
            "model_map": {"gpt-4o": "gpt-4o-mini"},
            "headers": {"X-Team": "bench"},
        },
    )
    assert status == 201, doc
    status, doc = await admin.call("POST", "/admin/channels/fake/test")
    assert status == 200, doc
    assert doc["ok"] is True and doc["status"] == 200 and doc["error"] is None
    assert doc["latency_ms"] > 0 and doc["model"] == "gpt-4o"
    seen = fake_openai.last
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert seen.headers["X-Team"] == "bench"
    assert seen.json["max_tokens"] == 1 and seen.json["model"] == "gpt-4o-mini"

    message = "Incorrect API key provided: sk-****"
    fake_openai.script(
        Fail(401, body={"error": {"message": message, "type": "invalid_request_error"}})
    )
    status, doc = await admin.call("POST", "/admin/channels/fake/test", json={"model": "gpt-4o"})
    assert status == 200
    assert doc["ok"] is False and doc["status"] == 401 and doc["error"] == message

    # Nothing listening: no status, a reason.
    dead = {"name": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{closed_port()}"}
    status, doc = await admin.call("POST", "/admin/channels", json={**dead, "models": ["m"]})
    assert status == 201
    status, doc = await admin.call("POST", "/admin/channels/dead/test")
    assert doc["ok"] is False and doc["status"] == 0 and doc["error"]

    # mock answers without network; every other type is probed over the network.
    status, doc = await admin.call("POST", "/admin/channels/file-mock/test")
    assert doc["ok"] is True and doc["status"] == 200
    status, doc = await admin.call(
        "POST",
        "/admin/channels",
        json={"name": "anth", "type": "anthropic", "base_url": "http://x.test", "models": ["c"]},
    )
    status, doc = await admin.call("POST", "/admin/channels/anth/test")
    assert doc["ok"] is False and doc["status"] == 0 and "cannot reach" in doc["error"]
    status, doc = await admin.call("POST", "/admin/channels/ghost/test")
    assert status == 404
    status, doc = await admin.call("POST", "/admin/channels/fake/test", json={"timeout": -1})
    assert status == 422 and "timeout" in doc["error"]["fields"]
    assert not admin.leaked(UPSTREAM_SECRET)
