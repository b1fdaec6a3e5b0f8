"""`bench/run.py` reports the usage writer's share of fastgate's CPU per request:
the ticks of the processes of the tree that run `fastgate.store.writer`, and
none of the others'."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"
# Burns ~0.3 s of CPU, says so, then sleeps (so that its ticks stay readable).
BUSY = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.3: pass\n"
    "print('done', flush=True)\n"
    "time.sleep(30)\n"
)
# The root of the tree: starts a busy child named as the usage writer and one named
# as the serving process, says when both have burnt their CPU, then waits.
PARENT = (
    "import subprocess, sys\n"
    "kids = [subprocess.Popen([sys.executable, '-c', sys.argv[1], '-m', name],\n"
    "        stdout=subprocess.PIPE, text=True)\n"
    "        for name in ('fastgate.store.' + 'writer', 'fastgate')]\n"  # not in its own argv
    "for k in kids: k.stdout.readline()\n"
    "print(*(k.pid for k in kids), flush=True)\n"
    "sys.stdin.read()\n"
    "for k in kids: k.kill()\n"
)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("bench_run_writer_share", RUN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_the_writer_share_counts_the_writer_processes_only(run) -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", PARENT, BUSY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert root.stdout is not None
        writer, other = map(int, root.stdout.readline().split())
        share = run.writer_cpu_ticks(root.pid)
        assert share == _ticks(writer) > 0
        assert run.tree_cpu_ticks(root.pid) >= share + _ticks(other) > share
        assert run.writer_cpu_ticks(other) == 0  # a tree without a writer
    finally:
        root.kill()
        root.wait()
