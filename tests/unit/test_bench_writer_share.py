"""`bench/run.py` reports the usage writer's share of fastgate's CPU per request:
the ticks of the processes of the tree that run `fastgate.store.writer`, and
none of the others'."""

from __future__ import annotations

import importlib.util
import os
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
    procs = [
        subprocess.Popen([sys.executable, "-c", BUSY, *argv], stdout=subprocess.PIPE, text=True)
        for argv in (["-m", "fastgate.store.writer"], ["-m", "fastgate", "serve"])
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "done\n"
        writer, other = procs
        share = run.writer_cpu_ticks(os.getpid())
        assert share == _ticks(writer.pid) > 0
        assert run.tree_cpu_ticks(os.getpid()) >= share + _ticks(other.pid)
        assert run.writer_cpu_ticks(other.pid) == 0  # a tree without a writer
    finally:
        for p in procs:
            p.kill()
            p.wait()
