"""What the usage writer costs the data-plane thread: CPU per request, by thread and
by process, and futex calls per request, for `fastgate serve --workers 1` in front
of the bench stub with the default SQLite store (no access log).

Short on purpose (the machine is shared): one warm-up, one timed wrk run (CPU from
/proc, per thread of the worker and per child process), one wrk run under
`strace -f -e trace=futex` (calls counted per thread). CPU per request, not
throughput, is the figure to compare.

    python bench/writer_probe.py                 # 5 s timed + 3 s under strace
    python bench/writer_probe.py --duration 8 --connections 8
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as br


def thread_ticks(pid: int) -> dict[int, int]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = br._read(f"/proc/{pid}/task/{tid}/stat")
        if stat:
            f = stat.rsplit(")", 1)[1].split()
            out[int(tid)] = int(f[11]) + int(f[12])
    return out


def user_sys(pid: int) -> tuple[int, int]:
    """(utime, stime) ticks of a process's main thread."""
    stat = br._read(f"/proc/{pid}/task/{pid}/stat")
    f = stat.rsplit(")", 1)[1].split() if stat else ["0"] * 13
    return int(f[11]), int(f[12])


def proc_ticks(pid: int) -> int:
    stat = br._read(f"/proc/{pid}/stat")
    if not stat:
        return 0
    f = stat.rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def wrk(port: int, key: str, conns: int, duration: float, log: Path, stack: br.Stack) -> int:
    body = br.SCENARIOS["nonstream"].body
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(br.BENCH / "wrk/post.lua"),
    ]
    cmd.append(f"http://127.0.0.1:{port}/v1/chat/completions")
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_KEY=key)
    p = stack.start("wrk", cmd, log, env=env)
    p.wait(duration + 30)
    stack.procs = [(n, q) for n, q in stack.procs if q is not p]
    return br.parse_wrk(log.read_text())["requests"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--strace", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument(
        "--no-store", action="store_true", help="database unreachable: records go nowhere"
    )
    args = ap.parse_args()
    stack = br.Stack()
    tmp = Path(tempfile.mkdtemp(prefix="writer-probe-"))
    try:
        sj, ss = br.free_ports(2)
        www = br.BENCH / "stub"
        servers = [
            br.STUB_SERVER.format(
                port=sj, www=www, ctype="application/json", file="chat_completion.json"
            ),
            br.STUB_SERVER.format(
                port=ss, www=www, ctype="text/event-stream", file="chat_stream.sse"
            ),
        ]
        stub = br.start_nginx(stack, "stub", tmp / "stub", servers)
        br.wait_port(sj, stub, tmp / "stub" / "error.log")
        key = "fg-" + secrets.token_hex(16)
        url = "postgresql://nobody@127.0.0.1:1/none" if args.no_store else ""
        cfg = br.fastgate_config(tmp, sj, ss, 0, key, database_url=url)
        proc, port, _ = br.start_fastgate(stack, tmp, cfg, 1)
        pid = proc.pid
        wrk(port, key, args.connections, 1.0, tmp / "warm.log", stack)
        time.sleep(0.3)
        t0 = thread_ticks(pid)
        us0 = user_sys(pid)
        kids0 = {c: proc_ticks(c) for c in br.proc_tree(pid) if c != pid}
        n = wrk(port, key, args.connections, args.duration, tmp / "timed.log", stack)
        time.sleep(0.3)  # let the writer finish the last batch
        t1 = thread_ticks(pid)
        us1 = user_sys(pid)
        kids1 = {c: proc_ticks(c) for c in br.proc_tree(pid) if c != pid}
        us = 1e6 / br.CLK_TCK / n
        main_t = (t1.get(pid, 0) - t0.get(pid, 0)) * us
        other_t = sum(v - t0.get(k, 0) for k, v in t1.items() if k != pid) * us
        kids = sum(v - kids0.get(k, 0) for k, v in kids1.items()) * us
        print(f"requests {n}  ({n / args.duration:.0f}/s)")
        print(f"cpu us/req: data-plane thread {main_t:.1f}  other threads {other_t:.1f}")
        print(f"            child processes {kids:.1f}  total {main_t + other_t + kids:.1f}")
        print(
            f"data-plane thread: user {(us1[0] - us0[0]) * us:.1f}"
            f"  system {(us1[1] - us0[1]) * us:.1f}"
        )
        if args.strace <= 0:  # `--strace 0`: no strace run
            return 0
        # futex calls per thread under strace (slows everything: counts only)
        out = tmp / "strace.txt"
        st = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=futex", "-o", str(out), "-p", str(pid)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        n2 = wrk(port, key, args.connections, args.strace, tmp / "strace-wrk.log", stack)
        time.sleep(0.3)
        st.terminate()
        st.wait(10)
        per: collections.Counter[str] = collections.Counter()
        for line in out.read_text(errors="replace").splitlines():
            m = re.match(r"(\d+)\s+futex", line)
            if m:
                per["data-plane" if int(m.group(1)) == pid else "others"] += 1
        print(
            f"futex per request (strace run, {n2} requests): "
            + "  ".join(f"{k} {v / max(n2, 1):.3f}" for k, v in sorted(per.items()))
        )
    finally:
        stack.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
