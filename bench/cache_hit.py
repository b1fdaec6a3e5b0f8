"""CPU per request of a response cache hit vs a passthrough request.

Starts a keep-alive stub upstream (its own process, answering the bench's
stored chat completion or SSE stream) and fastgate (memory cache on, usage
records to SQLite), then drives N requests per mode over C kept-alive
connections and reports fastgate's CPU (worker + usage writer, /proc utime +
stime) per request:

- passthrough: a plain key, no header (the fast path);
- general: `x-fastgate-cache: off` (the general exchange, not cacheable);
- hit: `x-fastgate-cache: on`, the same body every time (one miss first).

Usage: python bench/cache_hit.py [--requests N] [--connections C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KEY = "fg-bench-cache-00000000000000000000000000000000000"
TICK = os.sysconf("SC_CLK_TCK")

STUB = r"""
import asyncio, sys, uvloop
JSON = open(sys.argv[2], "rb").read()
SSE = open(sys.argv[3], "rb").read()
def resp(body, ctype):
    return b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n%b" % (ctype, len(body), body)
R_JSON = resp(JSON, b"application/json")
R_SSE = resp(SSE, b"text/event-stream")
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i].lower()
            j = head.find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n", 1)[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: return
            body = self.buf[i + 4:i + 4 + n]
            self.buf = self.buf[i + 4 + n:]
            self.t.write(R_SSE if b'"stream":true' in body.replace(b" ", b"") else R_JSON)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_ticks(pid: int) -> int:
    total = 0
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            pids += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            pass
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except FileNotFoundError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        total += int(f[11]) + int(f[12])
    return total


def request(body: bytes, header: bytes) -> bytes:
    extra = b"x-fastgate-cache: %b\r\n" % header if header else b""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer %b\r\n"
        b"content-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b"
        % (KEY.encode(), extra, len(body), body)
    )


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if m:
        await reader.readexactly(int(m.group(1)))
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return head


async def drive(port: int, req: bytes, n: int, conns: int) -> list[bytes]:
    heads: list[bytes] = []

    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(req)
            heads.append(await read_response(reader))
        writer.close()

    per = n // conns
    await asyncio.gather(*(one(per) for _ in range(conns)))
    return heads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fg-cache-bench-"))
    stub_port = free_port()
    stub = subprocess.Popen(
        [
            sys.executable,
            "-c",
            STUB,
            str(stub_port),
            str(BENCH / "stub/chat_completion.json"),
            str(BENCH / "stub/chat_stream.sse"),
        ]
    )
    cfg = tmp / "fastgate.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{tmp}/fastgate.db"
[cache]
enabled = true
[[channels]]
name = "stub"
type = "openai"
base_url = "http://127.0.0.1:{stub_port}"
api_key = "sk-stub"
models = ["bench-chat"]
[[tokens]]
name = "bench"
key = "{KEY}"
[[prices]]
model = "bench-chat"
input = 0.15
output = 0.6
"""
    )
    log = open(tmp / "fastgate.log", "wb")  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(REPO))
    gw = subprocess.Popen(
        [sys.executable, "-m", "fastgate", "serve", "--config", str(cfg), "--port", "0"],
        stderr=log,
        stdout=log,
        env=env,
    )
    try:
        port = 0
        deadline = time.monotonic() + 20
        while not port and time.monotonic() < deadline:
            m = re.search(rb"listening on http://[^:]+:(\d+)", (tmp / "fastgate.log").read_bytes())
            port = int(m.group(1)) if m else 0
            time.sleep(0.05)
        assert port, (tmp / "fastgate.log").read_text()
        plain = b'{"model":"bench-chat","messages":[{"role":"user","content":"Say hi"}]}'
        stream = (
            b'{"model":"bench-chat","stream":true,"messages":[{"role":"user","content":"Say hi"}]}'
        )
        modes = {
            "passthrough": request(plain, b""),
            "general (off)": request(plain, b"off"),
            "hit": request(plain, b"on"),
            "stream passthrough": request(stream, b""),
            "stream general (off)": request(stream, b"off"),
            "stream hit": request(stream, b"on"),
        }
        results: dict[str, list[float]] = {m: [] for m in modes}
        for name, req in modes.items():  # warm up (and the one miss of "hit")
            heads = asyncio.run(drive(port, req, 2000, args.connections))
            if "hit" in name:
                assert heads[-1].find(b"x-fastgate-cache: hit") > 0, heads[-1]
        for _ in range(args.rounds):
            for name, req in modes.items():
                t0 = tree_ticks(gw.pid)
                w0 = time.perf_counter()
                asyncio.run(drive(port, req, args.requests, args.connections))
                wall = time.perf_counter() - w0
                cpu = (tree_ticks(gw.pid) - t0) / TICK
                results[name].append(cpu / args.requests * 1e6)
                print(
                    f"{name:22} {cpu / args.requests * 1e6:7.1f} us CPU/req  "
                    f"{args.requests / wall:8.0f} req/s",
                    flush=True,
                )
        print("\nmedian CPU per request (fastgate worker + usage writer):")
        for name, v in results.items():
            print(f"  {name:22} {statistics.median(v):7.1f} us")
    finally:
        gw.terminate()
        gw.wait(30)
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()
