"""Does compiling the hot path with Cython (plain Python source, no type
declarations) pay? Builds a copy of the checkout's HEAD with the hot modules
compiled in place, then runs, alternately on the plain and the compiled tree:

- `bench/inproc_bench.py --stub` (the interpreter's share, no sockets), and
- `bench/writer_probe.py` (end to end under wrk: CPU per request of the worker's
  data-plane thread and of its usage writer).

    pip install cython && python bench/cython_probe.py --rounds 2
    python bench/cython_probe.py --cdef-classes   # the slotted hot classes as cdef classes

`--cdef-classes` also makes the hot path's slotted classes extension types: an
augmenting `.pxd` beside each module declares `cdef class` with a `cdef public
object` field per `__slots__` entry (and the protocols lose their
`asyncio.Protocol` base, which an extension type cannot have), so attribute
access is a struct read instead of a descriptor call. `--keep DIR` leaves the
compiled copy in DIR (for callgrind: `bench/inproc_bench.py --root DIR`).

Needs Cython and a C compiler; it commits nothing and installs nothing (the
compiled copy lives in a temporary directory).
"""

from __future__ import annotations

import argparse
import ast
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


# `--cdef-classes`: the slotted classes of the hot path, by module.
CDEF = {
    "fastgate/http/cork.py": ["WriteQueue"],
    "fastgate/http/head.py": ["RequestHead"],
    "fastgate/http/client.py": ["ClientProtocol"],
    "fastgate/http/upstream.py": ["UpstreamProtocol", "_Origin"],
    "fastgate/gateway/writer.py": ["ResponseWriter"],
    "fastgate/gateway/fast.py": ["FastExchange"],
}
CDEF_BASES = {"ResponseWriter": "fastgate.gateway.writer"}


def cdef_classes(dest: Path) -> None:
    """Augmenting .pxd files: each slotted class of `CDEF` an extension type."""
    for module, names in CDEF.items():
        path = dest / module
        src = path.read_text()
        pxd: list[str] = []
        for node in ast.parse(src).body:
            if not (isinstance(node, ast.ClassDef) and node.name in names):
                continue
            slots: list[str] = []
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id == "__slots__"
                ):
                    slots = [ast.literal_eval(e) for e in stmt.value.elts]  # type: ignore[attr-defined]
            bases = [ast.unparse(b) for b in node.bases if ast.unparse(b) != "asyncio.Protocol"]
            if bases:
                pxd.append(f"from {CDEF_BASES[bases[0]]} cimport {bases[0]}")
                pxd.append(f"cdef class {node.name}({bases[0]}):")
            else:
                pxd.append(f"cdef class {node.name}:")
            pxd += [f"    cdef public object {slot}" for slot in slots]
        path.with_suffix(".pxd").write_text("\n".join(pxd) + "\n")
        path.write_text(src.replace("(asyncio.Protocol):", ":"))


def build(dest: Path, cdef: bool = False) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # cythonize reads pyproject.toml through setuptools; the copy needs none.
    (dest / "pyproject.toml").unlink()
    modules = HOT + [m for m in CDEF if m not in HOT] if cdef else HOT
    if cdef:
        cdef_classes(dest)
    subprocess.run(["cythonize", "-i", "-3", "-q", *modules], cwd=dest, check=True)
    missing = [m for m in modules if not list((dest / m).parent.glob(Path(m).stem + ".*.so"))]
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
    ap.add_argument("--cdef-classes", action="store_true", help="the hot classes as cdef classes")
    ap.add_argument("--keep", type=Path, help="build the compiled copy here and keep it")
    args = ap.parse_args()
    if shutil.which("cythonize") is None:
        raise SystemExit("cythonize not found: pip install cython")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="cython-probe-"))
    if args.keep:
        tmp.mkdir(parents=True)
    try:
        build(tmp, args.cdef_classes)
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
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
