"""Instructions per request of a live fastgate serving process (callgrind).

`bench/inproc_bench.py` counts what the interpreter does for a request with fake
transports; this counts the real thing: a fastgate server (`--workers 1`, the
bench's config and stub, as `bench/run.py` starts them) runs under `valgrind
--tool=callgrind --instr-atstart=no`; after a warm-up the instrumentation is
switched on (`callgrind_control -i on`), N requests go through on C kept-alive
connections (a small asyncio client in another process), it is switched off and
the counts dumped. The figure is the dump's total over N: the serving process's
user-space instructions per request, uvloop, httptools and the transports
included; the usage writer (another process) and the kernel are not counted.
Instruction counts do not depend on the host's speed.

    python bench/live_callgrind.py                       # 3000 non-stream requests, c=32
    python bench/live_callgrind.py --stream -n 2000 -c 16
    callgrind_annotate --inclusive=no bench/out/live-callgrind.out.1 | head -40

Needs valgrind (Debian's package) and the interpreter's real binary (a pyenv shim
is not traced): `sys.executable` resolved, or `--python PATH`.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as R  # bench/run.py: the stub, the config, the process helpers

CLIENT = """
import asyncio, sys
port, key, n, conns, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
body = open(path, "rb").read()
req = (f"POST /v1/chat/completions HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n"
       f"Content-Type: application/json\\r\\nAuthorization: Bearer {key}\\r\\n"
       f"Content-Length: {len(body)}\\r\\n\\r\\n").encode() + body
left = n
async def one():
    global left
    r, w = await asyncio.open_connection("127.0.0.1", port)
    while left > 0:
        left -= 1
        w.write(req)
        head = await r.readuntil(b"\\r\\n\\r\\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"not a 200: {head[:200]!r}")
        if b"chunked" in head.lower():
            while True:
                size = int((await r.readuntil(b"\\r\\n")).split(b";")[0], 16)
                await r.readexactly(size + 2)
                if size == 0:
                    break
        else:
            m = [ln for ln in head.split(b"\\r\\n") if ln.lower().startswith(b"content-length:")]
            await r.readexactly(int(m[0].split(b":")[1]))
    w.close()
async def main():
    await asyncio.gather(*(one() for _ in range(conns)))
asyncio.run(main())
"""


def total(path: Path) -> int:
    """The dump's instructions: its `totals:` line (a dump taken with the
    instrumentation switched off says `summary: 0` at its head)."""
    m = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
    if not m:
        raise SystemExit(f"no totals in {path}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000, help="requests counted")
    ap.add_argument("-c", type=int, default=32, help="client connections")
    ap.add_argument("--stream", action="store_true", help="the 22-event stream scenario")
    ap.add_argument("--warmup", type=int, default=300, help="requests before counting")
    ap.add_argument("--python", default=os.path.realpath(sys.executable))
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    out_dir = R.OUT
    out_dir.mkdir(exist_ok=True)
    out = out_dir / "live-callgrind.out"
    for old in out_dir.glob("live-callgrind.out*"):
        old.unlink()
    stack = R.Stack()
    tmp = Path(tempfile.mkdtemp(prefix="fastgate-callgrind-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the stub files
    try:
        stub_json, stub_sse, admin = R.free_ports(3)
        www = tmp / "www"
        shutil.copytree(R.BENCH / "stub", www)
        servers = [
            R.STUB_SERVER.format(port=stub_json, www=www, file="chat_completion.json",
                                 ctype="application/json"),
            R.STUB_SERVER.format(port=stub_sse, www=www, file="chat_stream.sse",
                                 ctype="text/event-stream"),
        ]  # fmt: skip
        stub = R.start_nginx(stack, "stub", tmp / "stub", servers)
        R.wait_port(stub_json, stub, tmp / "stub/error.log")
        R.wait_port(stub_sse, stub, tmp / "stub/error.log")
        key = "fg-" + secrets.token_urlsafe(32)
        valgrind = ("valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={out}")  # fmt: skip
        config = R.fastgate_config(tmp, stub_json, stub_sse, admin, key)
        fg, port, _ = R.start_fastgate(
            stack, tmp, config, 1, launcher=valgrind, python=args.python, timeout=120
        )
        body = R.SCENARIOS["stream" if args.stream else "nonstream"].body

        def load(n: int) -> float:
            t0 = time.monotonic()
            client = [sys.executable, "-c", CLIENT, str(port), key, str(n), str(args.c), str(body)]
            subprocess.run(client, check=True)
            return time.monotonic() - t0

        load(args.warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(fg.pid)], check=True,
                       capture_output=True)  # fmt: skip
        took = load(args.n)
        subprocess.run(["callgrind_control", "-i", "off", str(fg.pid)], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(["callgrind_control", "-d", str(fg.pid)], check=True,
                       capture_output=True)  # fmt: skip
        dumps = sorted(p for p in out_dir.glob("live-callgrind.out.*"))
        if not dumps:
            raise SystemExit("callgrind wrote no dump")
        n_instr = total(dumps[-1])
        scenario = "stream (22 events)" if args.stream else "non-stream"
        print(
            f"{scenario}, {args.n} requests on {args.c} connections ({took:.1f} s under valgrind)"
        )
        print(f"serving process: {n_instr / args.n:,.0f} instructions per request ({dumps[-1]})")
    finally:
        stack.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
