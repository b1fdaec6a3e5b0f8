"""`bench/run.py --guest-halt-poll`: the machine's idle setting is set for a run
and always put back (a bench run that died with it changed would leave every
later run, and the machine, measured under a setting nobody chose)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("bench_run_under_test", RUN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look the module up
    spec.loader.exec_module(mod)
    knob = tmp_path / "guest_halt_poll_ns"
    knob.write_text("0\n")
    monkeypatch.setattr(mod, "HALT_POLL_NS", knob)
    monkeypatch.setattr(mod, "CPUIDLE_DRIVER", tmp_path / "current_driver")
    (tmp_path / "current_driver").write_text("haltpoll\n")
    return mod


def test_set_for_the_run_and_put_back(run) -> None:
    with run.guest_halt_poll(200000) as said:
        assert run.HALT_POLL_NS.read_text().strip() == "200000"
        assert run.idle_info() == "cpuidle haltpoll, guest_halt_poll_ns 200000"
        assert said == "set for this run; the machine's own: 0"
    assert run.HALT_POLL_NS.read_text().strip() == "0"


def test_put_back_when_the_run_fails(run) -> None:
    with pytest.raises(RuntimeError), run.guest_halt_poll(200000):
        raise RuntimeError("a bench run that failed")
    assert run.HALT_POLL_NS.read_text().strip() == "0"


def test_without_the_flag_nothing_is_written(run) -> None:
    run.HALT_POLL_NS.write_text("50000\n")
    with run.guest_halt_poll(None) as said:
        assert said == ""
    assert run.HALT_POLL_NS.read_text() == "50000\n"


def test_a_machine_without_the_knob_stops_with_a_message(run, tmp_path: Path) -> None:
    run.HALT_POLL_NS = tmp_path / "absent" / "guest_halt_poll_ns"
    with (
        pytest.raises(SystemExit, match=r"cannot set .*guest_halt_poll_ns"),
        run.guest_halt_poll(200000),
    ):
        pytest.fail("the run must not start")
    assert run.idle_info() == "cpuidle haltpoll"  # no polling figure to report
