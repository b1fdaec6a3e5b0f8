"""No silent surprises at start: every expected failure of the `fastgate` command
is a short message on stderr and a documented exit code (README "Exit codes"),
never a Python traceback.

Each case runs the real command (`python -m fastgate ...`) in a subprocess, in
an empty temp directory (so no default config file is found by accident), and
checks the exit code, the message and that stderr has no "Traceback".
Permission cases need a process that file and port permissions apply to: as
root, the command runs under `setpriv` without the capabilities that bypass
them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_BIND_SERVICE).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastgate.cli.parser import build_parser
from tests.fakes.openai_fake import closed_port
from tests.harness import REPO_ROOT

OK, FAILED, USAGE, UNREACHABLE, INTERRUPTED, PIPE = 0, 1, 2, 3, 130, 141

MOCK_CONFIG = """
[[channels]]
name = "m"
type = "mock"
models = ["mock-1"]
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTGATE_SECRET_KEY"}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _unprivileged() -> list[str]:
    """A command prefix that takes away root's permission bypass (empty when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions would not apply")
    caps = "-dac_override,-dac_read_search,-net_bind_service"
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps]


def fastgate(
    *args: str, cwd: Path, prefix: list[str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "fastgate", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The exit code is `code`, stderr is one "fastgate: ..." line holding every needle."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastgate: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr
    return lines[0]


def usage_error(proc: subprocess.CompletedProcess[str], command: str, *needles: str) -> None:
    """Exit 2 with argparse's shape for COMMAND: its own usage, then "COMMAND: error: ..."."""
    assert proc.returncode == USAGE, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith(f"usage: {command} "), proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"{command}: error: "), proc.stderr
    for needle in needles:
        assert needle in error, proc.stderr


# --------------------------------------------------------------------------- version


def test_version(tmp_path: Path) -> None:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    for args in (["--version"], ["version"]):
        proc = fastgate(*args, cwd=tmp_path)
        assert proc.returncode == OK, proc.stderr
        assert proc.stdout == f"fastgate {declared}\n"
        assert proc.stderr == ""


# --------------------------------------------------------------------------- the config file


def test_config_missing(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.toml")
    one_line(fastgate("serve", "--config", absent, cwd=tmp_path), USAGE, absent, "not found")
    one_line(fastgate("token", "list", "-c", absent, cwd=tmp_path), USAGE, absent, "not found")
    # No --config and no default file here: the message says which defaults were tried.
    for args in (["serve"], ["token", "list"]):
        line = one_line(fastgate(*args, cwd=tmp_path), USAGE, "not found")
        assert "fastgate.toml" in line and "--config" in line
    proc = fastgate("check-config", absent, cwd=tmp_path)
    assert proc.returncode == USAGE and "not found" in proc.stderr


def test_config_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MOCK_CONFIG + "wieght = 3\n")
    for args in (["serve", "--port", "0"], ["token", "list"]):
        one_line(fastgate(*args, "--config", str(bad), cwd=tmp_path), USAGE, "channels[0].wieght")
    proc = fastgate("check-config", str(bad), cwd=tmp_path)
    assert proc.returncode == USAGE and "channels[0].wieght" in proc.stderr
    # Several problems: a header naming the file and how many, then one line each.
    two = tmp_path / "two.toml"
    two.write_text(MOCK_CONFIG + "wieght = 3\npriority = 'high'\n")
    proc = fastgate("serve", "--config", str(two), cwd=tmp_path)
    assert proc.returncode == USAGE
    head, *problems = proc.stderr.strip().splitlines()
    assert head.startswith(f"fastgate: config {two}: 2 problems")
    assert len(problems) == 2 and all(p.startswith("  channels[0].") for p in problems)
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[server\n")
    one_line(fastgate("serve", "--config", str(syntax), cwd=tmp_path), USAGE, "invalid TOML")


def test_config_permission_denied(tmp_path: Path) -> None:
    prefix = _unprivileged()
    secret = tmp_path / "secret.toml"
    secret.write_text(MOCK_CONFIG)
    secret.chmod(0)
    for args in (["serve", "--port", "0"], ["migrate"]):
        proc = fastgate(*args, "--config", str(secret), cwd=tmp_path, prefix=prefix)
        one_line(proc, USAGE, str(secret), "Permission denied")


# --------------------------------------------------------------------------- flags and usage


def test_bad_flag_values(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text(MOCK_CONFIG)
    for flag, value, needle in (
        ("--port", "70000", "must be 0 to 65535"),
        ("--port", "http", "expected a port number"),
        ("--workers", "0", "must be at least 1"),
        ("--log-level", "loud", "invalid choice"),
    ):
        proc = fastgate("serve", "--config", str(cfg), flag, value, cwd=tmp_path)
        usage_error(proc, "fastgate serve", flag, needle)
    proc = fastgate("token", "create", "t", "--quota-usd", "lots", "-c", str(cfg), cwd=tmp_path)
    usage_error(proc, "fastgate token create", "--quota-usd")
    # Found after parsing (by the command itself): the same shape.
    proc = fastgate("usage", "--since", "last week", "-c", str(cfg), cwd=tmp_path)
    usage_error(proc, "fastgate usage", "--since")


def _commands() -> list[tuple[str, ...]]:
    """Every command path the parser declares: groups ("token",) and leaves ("token", "create")."""
    found: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.append((*path, name))
                    walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def test_every_command_prints_its_own_usage(tmp_path: Path) -> None:
    """An unknown flag on any command, group, or a group's first action prints that
    command's own usage, exit 2 (commands added later are picked up from the parser)."""
    declared = _commands()
    for expected in ("serve", "check-config", "migrate", "usage", "version"):
        assert (expected,) in declared
    for group in ("token", "group", "channel", "price", "router"):
        assert (group, "list") in declared
    groups = {c[0] for c in declared if len(c) == 2}
    commands = [c for c in declared if len(c) == 1]
    commands += [next(c for c in declared if len(c) == 2 and c[0] == g) for g in sorted(groups)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: fastgate(*c, "--no-such-flag", cwd=tmp_path), commands))
    for command, proc in zip(commands, results, strict=True):
        usage_error(proc, " ".join(("fastgate", *command)))


def test_missing_arguments_print_the_subcommand_usage(tmp_path: Path) -> None:
    for command, args, needle in (
        ("token create", [], "name"),
        ("token show", [], "NAME|ID"),
        ("group create", [], "name"),
        ("channel add", ["c"], "--type"),
        ("channel test", [], "NAME|ID"),
        ("price set", [], "model"),
        ("price sync", [], "FILE|URL"),
        ("check-config", [], "file"),
    ):
        proc = fastgate(*command.split(), *args, cwd=tmp_path)
        usage_error(proc, f"fastgate {command}", "required", needle)
    for group in ("token", "group", "channel", "price", "router"):
        usage_error(fastgate(group, cwd=tmp_path), f"fastgate {group}", "required", "ACTION")
    usage_error(fastgate("usage", "--by", "colour", cwd=tmp_path), "fastgate usage", "--by")
    usage_error(fastgate(cwd=tmp_path), "fastgate", "required")
    usage_error(fastgate("frobnicate", cwd=tmp_path), "fastgate", "invalid choice")


# --------------------------------------------------------------------------- what it needs


def test_database_unreachable(tmp_path: Path) -> None:
    cfg = tmp_path / "pg.toml"
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"
    cfg.write_text(f'[database]\nurl = "{url}"\n' + MOCK_CONFIG)
    for args in (["token", "list"], ["migrate"], ["usage"]):
        one_line(
            fastgate(*args, "-c", str(cfg), cwd=tmp_path), UNREACHABLE, "cannot open the database"
        )


def test_database_permission_denied(tmp_path: Path) -> None:
    prefix = _unprivileged()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    cfg = tmp_path / "lite.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{locked}/fg.db"\n' + MOCK_CONFIG)
    proc = fastgate("migrate", "-c", str(cfg), cwd=tmp_path, prefix=prefix)
    one_line(proc, UNREACHABLE, "cannot open the database", str(locked))


def test_admin_api_unreachable_falls_back(tmp_path: Path) -> None:
    """`router list` asks the running gateway; with none answering it says so in one
    line and builds the order itself (exit 0)."""
    cfg = tmp_path / "admin.toml"
    cfg.write_text(
        f'[admin]\ntoken = "admin-secret"\nport = {closed_port()}\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/fg.db"\n' + MOCK_CONFIG
    )
    proc = fastgate("router", "list", "--models", "-c", str(cfg), cwd=tmp_path)
    line = one_line(proc, OK, "the running gateway was not asked", "/admin/routers")
    assert "Connection refused" in line
    assert "mock-1" in proc.stdout


def test_serve_cannot_bind(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text(MOCK_CONFIG)
    proc = fastgate(
        "serve", "-c", str(cfg), "--host", "no-such-host.invalid", "--port", "0", cwd=tmp_path
    )
    one_line(proc, FAILED, "cannot listen on no-such-host.invalid:0")
    prefix = _unprivileged()
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 81:
        pytest.skip("ports below 1024 are not privileged on this machine")
    proc = fastgate(
        "serve", "-c", str(cfg), "--host", "127.0.0.1", "--port", "81", cwd=tmp_path, prefix=prefix
    )
    one_line(proc, FAILED, "127.0.0.1:81", "Permission denied")


# --------------------------------------------------------------------------- signals and pipes


def test_interrupted_exits_130_quietly(tmp_path: Path) -> None:
    """Ctrl-C while a command waits on the network: exit 130, nothing on stderr."""
    hang = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    hang.settimeout(30)
    port = hang.getsockname()[1]
    cfg = tmp_path / "hang.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/fg.db"\n[[channels]]\nname = "slow"\n'
        f'type = "openai"\nbase_url = "http://127.0.0.1:{port}"\napi_key = "sk-x"\n'
        'models = ["a"]\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastgate",
            "channel",
            "models",
            "slow",
            "--timeout",
            "60",
            "-c",
            str(cfg),
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = hang.accept()  # the command is now waiting for the upstream's answer
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        hang.close()
    conn.close()
    assert proc.returncode == INTERRUPTED, err
    assert err == "" and out == ""


def test_closed_stdout_exits_141_quietly(tmp_path: Path) -> None:
    """`fastgate ... | head -1` where head is gone: no BrokenPipeError report."""
    cfg = tmp_path / "ok.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/fg.db"\n' + MOCK_CONFIG)
    for args in (["version"], ["channel", "list", "-c", str(cfg)]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody will read: the first write fails with EPIPE
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "fastgate", *args],
                cwd=tmp_path,
                env=_env(),
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=30,
            )
        finally:
            os.close(write_end)
        assert proc.returncode == PIPE, proc.stderr
        assert proc.stderr == ""


def test_a_connect_callback_racing_ctrl_c_is_not_printed() -> None:
    """The race behind an occasional traceback of the test above, played out: the
    SIGINT handler cancels the connect future inside `_sock_connect_cb`, after
    its done() check; the command's loop says nothing of that one error, and
    reports any other as before."""
    import asyncio
    import logging

    from fastgate.cli.session import _quiet_on_interrupt

    loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    try:
        fut = loop.create_future()
        fut.cancel()  # what Ctrl-C did between the check and set_result
        handle = asyncio.Handle(loop._sock_connect_cb, (fut, a, ("127.0.0.1", 1)), loop)
        loop.set_exception_handler(_quiet_on_interrupt)
        seen: list[logging.LogRecord] = []
        log = logging.getLogger("asyncio")
        catch = logging.Handler()
        catch.emit = seen.append  # type: ignore[method-assign]
        log.addHandler(catch)
        try:
            loop.call_exception_handler(
                {"message": "x", "exception": asyncio.InvalidStateError(), "handle": handle}
            )
            assert seen == []
            loop.call_exception_handler({"message": "other", "exception": ValueError("boom")})
            assert [r.getMessage() for r in seen] == ["other"]
        finally:
            log.removeHandler(catch)
    finally:
        a.close()
        b.close()
        loop.close()
