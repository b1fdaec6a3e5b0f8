"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by
Playwright for Python; no browser is downloaded), against a real gateway whose
admin port serves it, with usage made by tagged requests through the gateway.

- every page loads with no console error (CSP violations and failed loads
  count as errors);
- the charts draw what the API answers: one point per minute of a 1-hour range
  (60), the hover text of each minute equal to the API's counts, one latency dot
  per minute that has timed requests; axis labels inside the chart and not
  overlapping;
- the tag filter narrows every overview figure to one run;
- the Runs view: one row per run the API lists, a run's timeline bars, its
  percentiles, two runs side by side;
- the forms create what they say, checked through the admin API and by using
  the result through the gateway (a created key, an added channel).

Screenshots are kept in test-artifacts/dashboard/ (ignored by git).
Under CI=true a missing Chromium or Playwright fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastgate.cli.render import usd
from tests.fakes.base import Fail, Ok
from tests.fakes.openai_fake import FakeOpenAI
from tests.functional.test_durable_e2e import ADMIN_TOKEN, admin, admin_toml, admin_url, chat
from tests.functional.test_store_backends import ENV
from tests.harness import REPO_ROOT, Gateway, gateway_config, make_key, token

ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
KEY = make_key()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(msg: str) -> None:
    if _ci():
        pytest.fail(msg + " (CI=true: the dashboard tests need it; .ci/run installs it)")
    pytest.skip(msg)


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    _unavailable("no Chromium executable (apt-get install chromium)")
    raise AssertionError  # unreachable


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A gateway (SQLite store, admin API) with two tagged runs and untagged requests."""
    fake = FakeOpenAI("dash")
    fake.start()
    base = fake.url + "/v1"
    text = gateway_config(
        channels=[
            {
                "name": "file-ch",
                "type": "openai",
                "base_url": base,
                "api_key": "sk-x",
                "models": ["m-1"],
            }
        ],
        tokens=[token("dash", KEY)],
        routing={"max_attempts": 1, "breaker_failures": 100},
        prices=[{"model": "m-1", "input": 1.0, "output": 2.0}],
        extra=admin_toml(),
    )
    gw = Gateway(tmp_path_factory.mktemp("dash"), text, env=ENV)
    gw.start()
    try:
        run_a, run_b = "dash-a-" + secrets.token_hex(2), "dash-b-" + secrets.token_hex(2)
        n = 0
        for d in (0.005, 0.01, 0.02, 0.03):
            fake.script(Ok(first_byte_delay=d))
            assert chat(gw, KEY, "m-1", tag=run_a)[0] == 200
            n += 1
        fake.script(Fail(500))
        chat(gw, KEY, "m-1", tag=run_a)
        for d in (0.04, 0.06):
            fake.script(Ok(first_byte_delay=d))
            assert chat(gw, KEY, "m-1", tag=run_b)[0] == 200
        for _ in range(2):
            fake.script(Ok())
            chat(gw, KEY, "m-1")
        n += 5
        adm = admin_url(gw)
        deadline = time.monotonic() + 10
        while admin("GET", adm, "/admin/usage?group_by=")[1]["totals"]["requests"] < n + 0:
            assert time.monotonic() < deadline, "usage rows did not arrive"
            time.sleep(0.05)
        yield {"gw": gw, "admin": adm, "fake": fake, "runs": (run_a, run_b), "requests": n}
    finally:
        gw.close()
        fake.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A dashboard page that records console errors and takes screenshots."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url}"))
        self.responses: list[str] = []  # the failed ones, to say which request a log means
        self.page.on(
            "response",
            lambda r: (
                r.status >= 400 and self.responses.append(f"{r.status} {r.request.method} {r.url}")
            ),
        )
        self.page.goto(url + "/dashboard/")
        self.page.wait_for_selector("#message:not([hidden])")
        self.loaded = "0"
        self.expected = ""  # "STATUS METHOD" of a failed request the test provokes

    def login(self) -> None:
        self.page.fill("#token", ADMIN_TOKEN)
        self.page.click("#auth button[type=submit]")
        self.wait()

    def wait(self) -> None:
        """Until a load that began after the last one has ended."""
        self.page.wait_for_function(
            "prev => document.body.dataset.loaded && document.body.dataset.loaded !== prev"
            " && !document.body.dataset.loading",
            arg=self.loaded,
        )
        self.loaded = self.page.evaluate("document.body.dataset.loaded")

    def act(self, fn: Any) -> None:
        """Do something that reloads, and wait for that load."""
        fn()
        self.wait()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def titles(self, chart: str) -> list[str]:
        return self.page.eval_on_selector_all(
            f"#{chart} rect.hit title", "ns => ns.map(n => n.textContent)"
        )

    def close(self) -> None:
        errors = self.errors
        if self.expected:  # a refusal the test asked for: its own log line is fine
            assert [r for r in self.responses if r.startswith(self.expected)], self.responses
            code = self.expected.split()[0]
            errors = [e for e in errors if f"status of {code}" not in e]
        assert errors == [], (errors, self.responses)
        self.page.close()


def hover_counts(titles: list[str], name: str) -> dict[int, int]:
    """{bucket start: value of `name`} from the hover titles."""
    import datetime as dt

    out = {}
    for t in titles:
        head, *lines = t.split("\n")
        ts = int(
            dt.datetime.strptime(head, "%Y-%m-%d %H:%M UTC").replace(tzinfo=dt.UTC).timestamp()
        )
        values = dict(line.split(": ", 1) for line in lines)
        out[ts] = int(values[name].replace(",", ""))
    return out


def labels_fit(page: Any, chart: str) -> None:
    """Tick labels inside the 600-wide viewBox, x labels not overlapping."""
    boxes = page.eval_on_selector_all(
        f"#{chart} text.tick",
        "ns => ns.map(n => { const b = n.getBBox(); return [n.classList.contains('x'), b.x, b.width]; })",
    )
    assert boxes, chart
    xs = sorted((x, w) for is_x, x, w in boxes if is_x)
    for _, x, w in boxes:
        assert x >= 0 and x + w <= 600.5, (chart, x, w)
    for (x1, w1), (x2, _) in itertools.pairwise(xs):
        assert x1 + w1 <= x2, (chart, xs)


# --------------------------------------------------------------------------- tests


def test_overview_charts_draw_the_api_series(site: dict[str, Any], browser: Any) -> None:
    adm = site["admin"]
    run_a = site["runs"][0]
    p = Page(browser, adm)
    p.login()
    p.act(lambda: p.page.select_option("#range", "3600"))
    assert "one point per minute" in p.page.inner_text("#scope")

    titles = p.titles("chart-requests")
    assert len(titles) == 60  # a 1-hour range: 60 minutes
    points = p.page.get_attribute("#chart-requests g[data-series=requests] polyline", "points")
    assert len(points.split()) == 60
    shown = hover_counts(titles, "requests")
    since = min(shown)
    _, series = admin("GET", adm, f"/admin/usage?bucket=minute&since={since}")
    api = {r["bucket"]: r["requests"] for r in series["data"]}
    assert api and sum(api.values()) == site["requests"]
    assert shown == {t: api.get(t, 0) for t in shown}
    assert hover_counts(titles, "errors") == {
        t: next((r["errors"] for r in series["data"] if r["bucket"] == t), 0) for t in shown
    }
    # latency and TTFB: one dot per minute with timed requests, per percentile
    _, lat = admin("GET", adm, f"/admin/usage/latency?bucket=minute&since={since}")
    timed = [r for r in lat["data"] if r["latency_ms"]["p50"] is not None]
    assert timed
    for chart in ("chart-latency", "chart-ttfb"):
        for s in ("p50", "p95", "p99"):
            assert p.page.locator(f"#{chart} g[data-series={s}] circle").count() == len(timed)
    for chart in ("chart-requests", "chart-tokens", "chart-cost", "chart-latency", "chart-ttfb"):
        labels_fit(p.page, chart)
    assert p.page.inner_text("#totals").count(str(site["requests"])) >= 1
    # the breaker chips' legend
    legend = p.page.inner_text("#breaker-legend")
    assert "closed" in legend and "half_open" in legend and "open" in legend
    p.shot("overview-1h")

    # the tag filter narrows every figure to one run
    p.act(lambda: (p.page.fill("#tag", run_a), p.page.dispatch_event("#tag", "change")))
    assert run_a in p.page.inner_text("#scope")
    shown = hover_counts(p.titles("chart-requests"), "requests")
    _, tagged = admin("GET", adm, f"/admin/usage?bucket=minute&since={since}&tag={run_a}")
    assert sum(shown.values()) == tagged["totals"]["requests"] == 5
    cards = p.page.inner_text("#totals")
    assert re.search(r"Requests\s+5\b", cards, re.I), cards
    assert p.page.locator("#by-key tr").count() == 2  # head + the one key
    p.shot("overview-tag")

    # 24 hours: one point per hour, labels still fit
    p.act(lambda: (p.page.fill("#tag", ""), p.page.select_option("#range", "86400")))
    assert len(p.titles("chart-requests")) == 24
    p.act(lambda: p.page.select_option("#range", "604800"))
    assert len(p.titles("chart-requests")) == 168
    for chart in ("chart-requests", "chart-cost", "chart-latency"):
        labels_fit(p.page, chart)
    p.shot("overview-7d")
    p.close()


def test_runs_view(site: dict[str, Any], browser: Any) -> None:
    adm = site["admin"]
    run_a, run_b = site["runs"]
    p = Page(browser, adm)
    p.login()
    p.act(lambda: p.page.click("#tabs [data-view=runs]"))
    assert p.page.is_visible("#view-runs") and not p.page.is_visible("#view-overview")
    _, runs = admin("GET", adm, "/admin/runs")
    rows = p.page.eval_on_selector_all("#runs tr[data-row]", "ns => ns.map(n => n.dataset.row)")
    assert rows == [r["tag"] for r in runs["data"]] == [run_b, run_a]

    p.page.click(f"#runs tr[data-row='{run_a}'] button.link")
    p.page.wait_for_selector("#run-detail:not([hidden])")
    p.page.wait_for_function(
        "t => document.querySelector('#run-title').textContent.includes(t)", arg=run_a
    )
    _, show = admin("GET", adm, f"/admin/runs/{run_a}")
    bars = p.page.locator("#chart-run-timeline g[data-series=requests] rect.bar")
    assert bars.count() == len(show["timeline"])
    heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
    assert [h > 0 for h in heights] == [t["requests"] > 0 for t in show["timeline"]]
    cells = p.page.eval_on_selector_all(
        "#run-percentiles tr", "ns => ns.slice(1).map(n => [...n.cells].map(c => c.textContent))"
    )
    for (name, *vals), metric in zip(cells, ("latency_ms", "ttfb_ms", "gateway_ms"), strict=True):
        for text, q in zip(vals, ("p50", "p95", "p99"), strict=True):
            want = show["run"][metric][q]
            assert abs(float(text) - want) <= (0.5 if want >= 100 else 0.05), (name, q, text, want)
    model_rows = p.page.eval_on_selector_all(
        "#run-by-model tr[data-row]", "ns => ns.map(n => n.dataset.row)"
    )
    assert model_rows == [r["model"] for r in show["by_model"]]
    labels_fit(p.page, "chart-run-timeline")
    p.shot("run-detail")

    p.page.select_option("#compare-a", run_a)
    p.page.select_option("#compare-b", run_b)
    p.page.click("#compare-form button[type=submit]")
    p.page.wait_for_selector("#compare-out:not([hidden])")
    _, cmp = admin("GET", adm, f"/admin/runs?compare={run_a},{run_b}")
    req = p.page.eval_on_selector(
        "#compare-table tr[data-metric=requests]", "n => [...n.cells].map(c => c.textContent)"
    )
    assert (
        req[1:3]
        == [str(cmp["a"]["run"]["requests"]), str(cmp["b"]["run"]["requests"])]
        == ["5", "2"]
    )
    err = p.page.eval_on_selector(
        "#compare-table tr[data-metric=error_rate]", "n => n.cells[1].textContent"
    )
    assert err == "20.0%"
    # Costs read the same on this page as in the CLI's tables (cli/render.py usd).
    cost = p.page.eval_on_selector(
        "#compare-table tr[data-metric=cost_usd]", "n => [...n.cells].map(c => c.textContent)"
    )
    micros = [cmp["a"]["run"]["cost_micros"], cmp["b"]["run"]["cost_micros"]]
    assert cost[1:3] == ["$" + usd(m) for m in micros], (cost, micros)
    for m in (0, 5, 1_234_567, 3_500_000, 12_000_000_001):
        assert p.page.evaluate(f"FG.usd({m})") == "$" + usd(m)
    assert p.page.locator("#chart-compare rect.bar").count() == 12  # 6 percentiles x 2 runs
    labels_fit(p.page, "chart-compare")
    p.shot("runs-compare")
    p.close()


def test_management_forms(site: dict[str, Any], browser: Any) -> None:
    adm, gw = site["admin"], site["gw"]
    p = Page(browser, adm)
    p.login()
    p.act(lambda: p.page.click("#tabs [data-view=manage]"))
    pg = p.page

    # a key, shown once, that works through the gateway
    name = "dash-key-" + secrets.token_hex(3)
    pg.fill("#form-token [name=name]", name)
    pg.fill("#form-token [name=quota_usd]", "1")
    p.act(lambda: pg.click("#form-token button[type=submit]"))
    key = pg.inner_text("#form-token .new-key").strip()
    status, tok = admin("GET", adm, f"/admin/tokens/{name}")
    assert status == 200 and tok["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert tok["quota_micros"] == 1_000_000

    # a channel (mock: no upstream, no secret) that serves through the gateway
    ch = "dash-mock-" + secrets.token_hex(3)
    pg.fill("#form-channel [name=name]", ch)
    pg.select_option("#form-channel [name=type]", "mock")
    pg.fill("#form-channel [name=models]", "dash-model")
    p.act(lambda: pg.click("#form-channel button[type=submit]"))
    assert "added" in pg.inner_text("#form-channel .result")
    status, got = admin("GET", adm, f"/admin/channels/{ch}")
    assert status == 200 and got["type"] == "mock" and got["models"] == ["dash-model"]
    deadline = time.monotonic() + 5
    while chat(gw, key, "dash-model")[0] != 200:
        assert time.monotonic() < deadline, "the new key / channel never served"
        time.sleep(0.1)

    # a price: created, then replaced
    for inp, out, cache in (("1.5", "3", "0.5"), ("2", "4", "")):
        pg.fill("#form-price [name=model]", "dash-model")
        pg.fill("#form-price [name=input]", inp)
        pg.fill("#form-price [name=output]", out)
        pg.fill("#form-price [name=cache_read]", cache)
        p.act(lambda: pg.click("#form-price button[type=submit]"))
        status, price = admin("GET", adm, "/admin/prices/dash-model")
        assert status == 200, pg.inner_text("#form-price .result")
        assert (price["input"], price["output"]) == (float(inp), float(out))
        assert price.get("cache_read") == (float(cache) if cache else None)

    # a quota top-up: 1 + 2.5 USD
    pg.select_option("#form-topup [name=token]", name)
    pg.fill("#form-topup [name=amount]", "2.5")
    p.act(lambda: pg.click("#form-topup button[type=submit]"))
    assert admin("GET", adm, f"/admin/tokens/{name}")[1]["quota_micros"] == 3_500_000
    assert "$3.50" in pg.inner_text("#form-topup .result")

    # a refusal is shown, not thrown: the name is taken
    pg.fill("#form-token [name=name]", name)
    pg.click("#form-token button[type=submit]")
    pg.wait_for_function(
        "() => document.querySelector('#form-token .result').textContent.includes('Refused')"
    )
    p.expected = "409 POST"  # the browser logs the refused request: that log is expected
    p.shot("manage")

    # disable the new channel from the overview's channel table
    p.act(lambda: pg.click("#tabs [data-view=overview]"))
    button = pg.locator(f"#channels button.toggle[data-channel='{ch}']")
    assert button.inner_text() == "Disable"
    assert pg.locator("#channels button.toggle[data-channel='file-ch']").is_disabled()
    p.act(lambda: button.click())  # the table reloads once the gateways had time to see it
    assert admin("GET", adm, f"/admin/channels/{ch}")[1]["enabled"] is False
    pg.wait_for_function(
        "c => document.querySelector(`#channels tr[data-channel='${c}']`).textContent.includes('disabled')",
        arg=ch,
    )
    p.shot("overview-channel-disabled")
    p.close()
    assert chat(gw, key, "dash-model")[0] != 200  # no enabled channel serves it now


def test_artifacts_dir_is_ignored_by_git() -> None:
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert "test-artifacts/" in ignored
    assert Path(ARTIFACTS).is_relative_to(REPO_ROOT / "test-artifacts")
