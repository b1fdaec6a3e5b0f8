"""`fastgate.cli.main`'s policy for exceptions no command handles: an OSError is
the environment (one line, exit 1), anything else is a bug (its traceback, then
one line saying so, exit 70). The expected failures are run as real commands in
tests/functional/test_cli_surprises.py; these two cannot be provoked from the
outside without a bug, so a stand-in command raises them here."""

from __future__ import annotations

import argparse

import pytest

import fastgate.cli
import fastgate.cli.parser
from fastgate.cli import EXIT_BUG, main


def _parser_raising(exc: BaseException) -> argparse.ArgumentParser:
    def command(args: argparse.Namespace) -> int:
        raise exc

    p = argparse.ArgumentParser(prog="fastgate")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("boom").set_defaults(main=command)
    return p


@pytest.mark.parametrize(
    ("exc", "code", "traceback", "line"),
    [
        (RuntimeError("a bug"), EXIT_BUG, True, "unexpected error (RuntimeError)"),
        (PermissionError(13, "Permission denied", "/x"), 1, False, "/x: Permission denied"),
        (KeyboardInterrupt(), 130, False, None),
    ],
)
def test_main_exception_policy(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    traceback: bool,
    line: str | None,
) -> None:
    monkeypatch.setattr(fastgate.cli.parser, "build_parser", lambda: _parser_raising(exc))
    assert main(["boom"]) == code
    err = capsys.readouterr().err
    assert ("Traceback" in err) is traceback
    if line is None:
        assert err == ""
    else:
        assert err.strip().splitlines()[-1].startswith(f"fastgate: {line}")


def test_version_falls_back_to_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert fastgate.cli.package_version() == fastgate.__version__


def test_package_version_matches_pyproject() -> None:
    import tomllib

    from tests.harness import REPO_ROOT

    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        assert fastgate.__version__ == tomllib.load(f)["project"]["version"]
