"""Does compiling the hot path with Cython (plain Python source, no type
declarations) pay? Builds a copy of the checkout's HEAD with the hot modules
compiled in place, then runs, alternately on the plain and the compiled tree:

- `bench/inproc_bench.py --stub` (the interpreter's share, no sockets), and
- `bench/writer_probe.py` (end to end under wrk: CPU per request of the worker's
  data-plane thread and of its usage writer).

    pip install cython && python bench/cython_probe.py --rounds 2

Needs Cython and a C compiler; it commits nothing and installs nothing (the
compiled copy lives in a temporary directory).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOT = [
    "fastgate/http/client.py",
    "fastgate/http/upstream.py",
    "fastgate/http/head.py",
    "fastgate/http/flow.py",
    "fastgate/gateway/fast.py",
    "fastgate/gateway/writer.py",
    "fastgate/gateway/accounting.py",
    "fastgate/gateway/billing.py",
    "fastgate/scan/jsonfind.py",
    "fastgate/vocab/usage.py",
    "fastgate/providers/openai.py",
    "fastgate/store/writer_sink.py",
    "fastgate/store/ring.py",
    "fastgate/store/usage.py",
    "fastgate/app.py",
]


def build(dest: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # cythonize reads pyproject.toml through setuptools; the copy needs none.
    (dest / "pyproject.toml").unlink()
    subprocess.run(["cythonize", "-i", "-3", "-q", *HOT], cwd=dest, check=True)
    missing = [m for m in HOT if not list((dest / m).parent.glob(Path(m).stem + ".*.so"))]
    if missing:
        raise SystemExit(f"not compiled: {missing}")


def run(root: Path, script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(root / "bench" / script), *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("cythonize") is None:
        raise SystemExit("cythonize not found: pip install cython")
    tmp = Path(tempfile.mkdtemp(prefix="cython-probe-"))
    try:
        build(tmp)
        trees = {"plain": REPO, "compiled": tmp}
        inproc: dict[str, list[float]] = {k: [] for k in trees}
        e2e: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for name, root in trees.items():
                out = run(root, "inproc_bench.py", "--stub")
                inproc[name].append(float(re.search(r"CPU per request.*?: ([\d.]+)", out)[1]))
                out = run(
                    root,
                    "writer_probe.py",
                    "--duration",
                    str(args.duration),
                    "--connections",
                    str(args.connections),
                    "--strace",
                    "0",
                )
                plane = float(re.search(r"data-plane thread ([\d.]+)", out)[1])
                total = float(re.search(r"total ([\d.]+)", out)[1])
                e2e[name].append((plane, total))
        print("| tree | in-process µs/req | data-plane thread µs/req | worker + writer µs/req |")
        print("|---|---:|---:|---:|")
        for name in trees:
            ip = ", ".join(f"{v:.1f}" for v in inproc[name])
            dp = ", ".join(f"{p:.1f}" for p, _ in e2e[name])
            tt = ", ".join(f"{t:.1f}" for _, t in e2e[name])
            med = statistics.median(t for _, t in e2e[name])
            print(f"| {name} | {ip} | {dp} | {tt} (median {med:.1f}) |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
