"""The CLI's one renderer and its per-kind views, without a store or a subprocess
(tests/functional/test_cli.py runs the commands end to end)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastgate.cli.render import Column, Out, View, dec, pairs, show, table, usd
from fastgate.cli.views import CHANNEL, PRICE, TOKEN, usage_columns
from tests.harness import REPO_ROOT


def test_table_aligns_and_strips(capsys: pytest.CaptureFixture[str]) -> None:
    cols = (Column("NAME", lambda r: r["n"]), Column("N", lambda r: r.get("v"), right=True))
    table(cols, [{"n": "a", "v": 100}, {"n": "longer"}])
    assert capsys.readouterr().out == "NAME      N\na       100\nlonger\n"
    table(cols, [{"n": "a", "v": 1}], align=False)
    assert capsys.readouterr().out == "NAME  N\na     1\n"


def test_views_render_rows(capsys: pytest.CaptureFixture[str]) -> None:
    token = {"id": None, "name": "t", "shadowed": True, "source": "file", "group": "g"}
    token.update(enabled=True, quota_micros=2_500_000, models=["a", "b"], rpm=5, tpm=0)
    cells = [c.cell(token) for c in TOKEN.columns]
    want = [
        "-",
        "t (shadowed)",
        "file",
        "g",
        "yes",
        "2.50",
        "0.00",
        "never",
        "a,b",
        "rpm=5",
        "none",
    ]
    assert cells == want
    channel = {"id": 3, "name": "c", "source": "store", "type": "openai", "api_key_env": "K"}
    assert [c.cell(channel) for c in CHANNEL.columns][4:] == ["yes", 0, 1, "-", "env:K", "-"]
    Out(as_json=False).entry(PRICE, {"model": "m", "source": "store", "input": 0.00015})
    assert capsys.readouterr().out.splitlines()[1].split() == ["m", "store", "0.00015"] + ["-"] * 4
    Out(as_json=True).listing(PRICE, [{"model": "m"}])
    assert capsys.readouterr().out == '[\n  {\n    "model": "m"\n  }\n]\n'


def test_usage_columns() -> None:
    row = {"model": None, "requests": 2, "errors": 0, "prompt_tokens": 3}
    row.update(completion_tokens=4, cached_tokens=0, cost_micros=1_500)
    assert [c.cell(row) for c in usage_columns("model")] == ["(none)", 2, 0, 3, 4, 0, "0.0015"]
    assert usage_columns(None)[0].header == "TOTAL"
    assert usage_columns(None)[0].cell(row) == "all"


def test_pairs_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    pairs({"enabled": False, "name": "n", "created_at": 0, "id": 1, "tags": {}})
    assert capsys.readouterr().out.splitlines() == [
        "id          1",
        "name        n",
        "enabled     no",
        "created_at  1970-01-01T00:00:00Z",
        "tags        -",
    ]
    assert (usd(1_234_567), usd(-5), usd(0)) == ("1.234567", "-0.000005", "0.00")
    assert (dec(2.5), dec(1e-7), dec(-0.0), dec(None)) == ("2.5", "0.0000001", "0", "-")
    assert (show(""), show([]), show({"a": 1.0})) == ("-", "-", "a=1")


def test_view_is_declarative() -> None:
    assert isinstance(TOKEN, View) and TOKEN.kind == "token" and not TOKEN.show_as_row
    assert PRICE.show_as_row


def test_no_import_time_work() -> None:
    """Importing the entry point loads nothing else of fastgate."""
    code = "import sys, fastgate.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastgate'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['fastgate', 'fastgate.cli']"
