"""The layer contract of docs/design.md holds (pyproject.toml [tool.importlinter]).

`.ci/run` runs `lint-imports` too; this test makes the README's test command
check it as well, and checks that the contract would notice a violation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_layer_contracts_are_kept() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "fastgate", copy / "fastgate", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "fastgate" / "vocab" / "record.py", "a") as f:
        f.write("\nimport fastgate.gateway.fast  # noqa\n")
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    if "No module named" in res.stderr and "importlinter" in res.stderr:
        pytest.fail("import-linter is not installed: " + res.stderr)
    assert res.returncode != 0
    assert "fastgate.vocab.record -> fastgate.gateway.fast" in res.stdout
