"""Macro benchmark: direct stub vs nginx reverse proxy vs fastgate, in one run.

Why this shape: the number that matters is what a gateway *adds* to a request, so
the same wrk load hits (1) a stub upstream directly, (2) an nginx reverse proxy in
front of it, the practical floor for a proxy, (3) bench/floor_proxy.py, the least
a Python proxy on uvloop does (what the platform costs before any gateway logic),
and (4) fastgate in front of it, with usage records on. Runs are interleaved
(direct -> nginx -> pyfloor -> fastgate per scenario and round) so that drift from a shared machine hits all three alike; the report is the
median of rounds. CPU per request comes from /proc (utime+stime of the process
tree under test), which is less sensitive to a noisy neighbour than req/s.

Usage: python bench/run.py [--duration S] [--rounds N] [--quick] [--only T,..]
       [--scenarios S,..] [--append] [--profile] [--results PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# pyfloor: bench/floor_proxy.py, the least a Python proxy on uvloop does per request
# (what the platform costs before any gateway logic; not fastgate).
TARGETS = ("direct", "nginx", "pyfloor", "fastgate")
TARGET_LABEL = {
    "direct": "direct (stub)",
    "nginx": "nginx proxy",
    "pyfloor": "Python floor proxy",
    "fastgate": "fastgate",
}
# A KVM guest's idle loop (the cpuidle "haltpoll" driver): how long an idle vCPU
# polls for work before it halts. A halted vCPU costs a VM exit and a wake-up by
# the host when a task is woken on it; at one connection a proxied request wakes
# tasks across the CPUs four times (bench/RESULTS.md, "Stop 27").
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
HISTORY_MARK = "<!-- history: entries below are kept when the file is regenerated -->"
UPSTREAM_KEY = "sk-bench-upstream"


@dataclass(frozen=True)
class Scenario:
    """One load shape: which stub, which request body, how many connections."""

    name: str
    title: str
    connections: int
    stream: bool
    body: Path
    path: str = "/v1/chat/completions"
    fastgate_only: bool = False  # conversion: only the gateway can do it


SCENARIOS = {
    "nonstream": Scenario(
        "nonstream", "Non-stream chat completion", 32, False, BENCH / "wrk/request_chat.json"
    ),
    "stream": Scenario(
        "stream", "Stream (22 SSE events + [DONE])", 16, True, BENCH / "wrk/request_stream.json"
    ),
    "latency": Scenario(
        "latency", "Latency, one connection (non-stream)", 1, False, BENCH / "wrk/request_chat.json"
    ),
    # Anthropic clients served by the same OpenAI stub: request, response and
    # stream converted (compare with nonstream / stream, the passthrough path).
    "convert": Scenario(
        "convert", "Conversion, Anthropic client -> OpenAI channel (non-stream)", 32, False,
        BENCH / "wrk/request_anthropic.json", "/v1/messages", True,
    ),
    "convert-stream": Scenario(
        "convert-stream", "Conversion, Anthropic client -> OpenAI channel (stream)", 16, True,
        BENCH / "wrk/request_anthropic_stream.json", "/v1/messages", True,
    ),
    # The other direction: an OpenAI client's stream from an Anthropic channel (a stub
    # serving the same text as Anthropic events: bench/stub/messages_stream.sse).
    "from-anthropic": Scenario(
        "from-anthropic", "Conversion, OpenAI client -> Anthropic channel (stream)", 16, True,
        BENCH / "wrk/request_claude_stream.json", fastgate_only=True,
    ),
    # And from a Gemini channel (Google's alt=sse: bench/stub/gemini_stream.sse).
    "from-gemini": Scenario(
        "from-gemini", "Conversion, OpenAI client -> Gemini channel (stream)", 16, True,
        BENCH / "wrk/request_gemini_stream.json", fastgate_only=True,
    ),
}  # fmt: skip


@dataclass
class RunResult:
    """One wrk run against one target, plus what /proc said meanwhile."""

    target: str
    scenario: str
    round: int
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float | None  # process tree under test (stub for direct)
    wrk_cpu_pct: float
    other_cpu_pct: float  # CPU used by processes outside the benchmark, % of one core
    loadavg: str
    rss_mb: float | None = None  # fastgate only, right after the run: the whole tree
    worker_rss_mb: float | None = None  # fastgate only: the serving process alone
    pss_mb: float | None = None  # fastgate only: the whole tree's PSS (shared pages once)
    writer_cpu_us: float | None = None  # fastgate only: its usage writer's share of cpu_us


@dataclass
class Stack:
    """Everything the run started, so that it can all be stopped."""

    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], log: Path, **kw) -> subprocess.Popen:
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        self.procs.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM the leader, then SIGKILL whatever is left of its process group."""
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop_all(self) -> None:
        for _, p in reversed(list(self.procs)):
            self.stop(p)


# ---------------------------------------------------------------- /proc helpers


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (workers of nginx / fastgate)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat is None:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_ticks(pid: int) -> int:
    """utime+stime (all threads) of one live process, in clock ticks (0: gone)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def tree_cpu_ticks(root: int) -> int:
    """utime+stime (all threads) summed over the live process tree, in clock ticks."""
    return sum(map(cpu_ticks, proc_tree(root)))


def writer_cpu_ticks(root: int) -> int:
    """utime+stime of the usage writer processes in the tree (`python -m
    fastgate.store.writer`), in clock ticks: their share of tree_cpu_ticks."""
    return sum(
        cpu_ticks(pid)
        for pid in proc_tree(root)
        if "fastgate.store.writer" in (_read(f"/proc/{pid}/cmdline") or "")
    )


def tree_rss_mb(root: int) -> float:
    return sum(rss_by_process(root).values())


def rss_by_process(root: int) -> dict[int, float]:
    """VmRSS in MB of each live process of the tree (the root first)."""
    out: dict[int, float] = {}
    for pid in proc_tree(root):
        status = _read(f"/proc/{pid}/status") or ""
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            out[pid] = int(m.group(1)) / 1024
    return out


def tree_pss_mb(root: int) -> float:
    """PSS of the tree in MB (/proc/PID/smaps_rollup): pages the processes share
    (libpython, libc, the usage ring) counted once, split between them."""
    total = 0.0
    for pid in proc_tree(root):
        m = re.search(r"^Pss:\s+(\d+) kB", _read(f"/proc/{pid}/smaps_rollup") or "", re.M)
        if m:
            total += int(m.group(1)) / 1024
    return total


def worker_rss_mb(root: int) -> float | None:
    """RSS of the gateway's serving process alone (with --workers 1, the root;
    the usage writer is its child and is left out)."""
    return rss_by_process(root).get(root)


def system_ticks() -> tuple[int, int]:
    """(user+nice+system, steal) ticks of the whole machine from /proc/stat."""
    fields = [int(x) for x in (_read("/proc/stat") or "").splitlines()[0].split()[1:]]
    return fields[0] + fields[1] + fields[2], fields[7] if len(fields) > 7 else 0


def loadavg() -> str:
    return " ".join((_read("/proc/loadavg") or "?").split()[:3])


# ---------------------------------------------------------------- setup


def ensure_tools() -> None:
    """Install wrk and nginx with apt when they are missing."""
    missing = [t for t in ("wrk", "nginx") if not shutil.which(t)]
    if not missing:
        return
    print(f"installing missing tools: {missing}", flush=True)
    apt = ["apt-get", "install", "-y", "--no-install-recommends"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=False, env=env)
    if "wrk" in missing:
        subprocess.run([*apt, "wrk"], check=True, env=env)
    if "nginx" in missing and subprocess.run([*apt, "nginx-light"], env=env).returncode != 0:
        subprocess.run([*apt, "nginx"], check=True, env=env)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}); log:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s; log:\n{log.read_text()}")


NGINX_COMMON = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
{servers}
}}
"""

# The stub serves static files; nginx answers POST to a static file with 405, and
# error_page turns that into a 200 with the file (Content-Length, keep-alive).
STUB_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        sendfile on;
        etag off;
        open_file_cache max=16 inactive=1h;
        open_file_cache_valid 1h;
        location / {{
            root {www};
            types {{ }}
            default_type {ctype};
            try_files /{file} =404;
            error_page 405 =200 $uri;
        }}
    }}"""

PROXY_SERVER = """\
    upstream {name} {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_buffering {buffering};
        }}
    }}"""


def start_nginx(stack: Stack, name: str, workdir: Path, servers: list[str]) -> subprocess.Popen:
    workdir.mkdir(parents=True)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_COMMON.format(dir=workdir, servers="\n".join(servers)))
    log = workdir / "stdout.log"
    cmd = ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    return stack.start(name, cmd, log)


def fastgate_config(
    tmp: Path,
    stub_json: int,
    stub_sse: int,
    admin_port: int,
    key: str,
    database_url: str = "",
    access_log: bool = False,
    stub_anthropic: int = 0,
    stub_gemini: int = 0,
) -> str:
    """The bench's fastgate config; `stub_anthropic` / `stub_gemini`: the ports of
    the stubs serving Anthropic's and Google's streams (the `bench-claude` and
    `bench-gemini` models on an Anthropic and a Gemini channel)."""
    db = database_url or f"sqlite:///{tmp}/fastgate.db"
    converted = "".join(
        f"""
[[channels]]
name = "stub-{kind}"
type = "{kind}"
base_url = "http://127.0.0.1:{port}"
api_key = "{UPSTREAM_KEY}"
models = ["{model}"]

[[prices]]
model = "{model}"
input = {price_in}
output = {price_out}
"""
        for kind, port, model, price_in, price_out in (
            ("anthropic", stub_anthropic, "bench-claude", 3.0, 15.0),
            ("gemini", stub_gemini, "bench-gemini", 0.3, 2.5),
        )
        if port
    )
    log = (
        f'access_log = "{tmp}/access.jsonl"' if access_log else "# usage records go to the database"
    )
    return f"""\
# generated by bench/run.py
[server]
host = "127.0.0.1"
port = 0

# no [admin] token: the admin API (and aiohttp.web) stays unloaded, as on a
# data-plane-only instance; the bench measures the data plane.

[database]
url = "{db}"

[logging]
{log}

[[channels]]
name = "stub-json"
type = "openai"
base_url = "http://127.0.0.1:{stub_json}"
api_key = "{UPSTREAM_KEY}"
models = ["bench-chat"]

[[channels]]
name = "stub-sse"
type = "openai"
base_url = "http://127.0.0.1:{stub_sse}"
api_key = "{UPSTREAM_KEY}"
models = ["bench-stream"]

[[tokens]]
name = "bench"
key = "{key}"
group = "default"

[[groups]]
name = "default"
ratio = 1.0

[[prices]]
model = "bench-chat"
input = 0.15
output = 0.6

[[prices]]
model = "bench-stream"
input = 0.15
output = 0.6
{converted}"""


def start_fastgate(
    stack: Stack,
    tmp: Path,
    config: str,
    workers: int,
    launcher: tuple[str, ...] = (),
    python: str = sys.executable,
    timeout: float = 30.0,
) -> tuple[subprocess.Popen, int, Path]:
    """`fastgate serve` on `config`, once it listens: (process, port, log).
    `launcher`: a command to run it under (valgrind, say), with `python` the
    interpreter it runs and `timeout` how long it may take to listen."""
    path = tmp / "fastgate.toml"
    path.write_text(config)
    log = tmp / "fastgate.log"
    cmd = [*launcher, python, "-m", "fastgate", "serve", "--config", str(path), "--port", "0"]
    cmd += ["--workers", str(workers)]
    proc = stack.start("fastgate", cmd, log, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"listening on http://([^:]+):(\d+)", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(2)), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"fastgate did not start (rc={proc.poll()}); log:\n{log.read_text()}")


def stored_records(tmp: Path, args: argparse.Namespace) -> int | None:
    """Rows in usage_records of this run's own SQLite store (None: another database)."""
    if args.database_url:
        return None
    con = sqlite3.connect(f"file:{tmp / 'fastgate.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    finally:
        con.close()


def usage_records_check(
    tmp: Path, args: argparse.Namespace, before: int | None, served: int
) -> str:
    """The usage records fastgate stored during the timed runs, against the requests
    wrk saw completed in them.

    Every request fastgate answered has a record, including the few that wrk gave
    up on when a run's time ran out, so the records added since `before` (counted
    after the warm-up) must be at least `served`; fewer is a lost record and fails
    the run. The access log, when on, is held to the same count."""
    counts = []
    after = stored_records(tmp, args)
    if after is not None and before is not None:
        n = after - before
        counts.append(f"{n} usage records stored (SQLite)")
        if n < served:
            raise RuntimeError(f"usage records lost: {n} stored for {served} timed requests")
    if args.access_log:
        log = tmp / "access.jsonl"
        lines = log.read_bytes().count(b"\n") if log.exists() else 0
        counts.append(f"{lines} access log lines (warm-up included)")
        if lines < served:
            raise RuntimeError(f"access log lines lost: {lines} for {served} timed requests")
    if not counts:
        return f"not counted (records go to {args.database_url.split('://')[0]})"
    return f"{', '.join(counts)} for {served} requests wrk completed in the timed runs"


def check_target(port: int, scenario: Scenario, key: str, target: str) -> str:
    """One request before the load: the benchmark of an error page is worthless."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            scenario.path,
            body=scenario.body.read_bytes(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise RuntimeError(f"{target}/{scenario.name}: request failed: {exc!r}") from exc
    finally:
        conn.close()
    ctype = resp.getheader("content-type", "")
    if resp.status != 200:
        raise RuntimeError(f"{target}/{scenario.name}: HTTP {resp.status}: {body[:500]!r}")
    if scenario.path == "/v1/messages":
        done = b"event: message_stop" in body if scenario.stream else b'"type":"message"' in body
        if not done or b'"usage"' not in body:
            raise RuntimeError(f"{target}/{scenario.name}: not an Anthropic answer {body[:300]!r}")
        return f"{len(body)} B, {ctype}"
    if scenario.stream:
        if "text/event-stream" not in ctype or b"data: [DONE]" not in body:
            raise RuntimeError(
                f"{target}/{scenario.name}: not an SSE stream: {ctype} {body[:300]!r}"
            )
        events = body.count(b"data: ")
        usage_only = body.count(b'"choices":[]')
        return f"{len(body)} B, {events} events, usage-only chunks: {usage_only}"
    doc = json.loads(body)
    if doc.get("object") != "chat.completion" or "usage" not in doc:
        raise RuntimeError(f"{target}/{scenario.name}: unexpected body {body[:300]!r}")
    return f"{len(body)} B, {ctype}"


# ---------------------------------------------------------------- load


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(out: str) -> dict:
    """Pull req/s, request count, p50/p99 (in ms) and error counts out of wrk --latency."""
    lat = {
        m.group(1): _ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    reqs = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and reqs and "50" in lat and "99" in lat):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {
        "rps": float(rps.group(1)),
        "requests": int(reqs.group(1)),
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "errors": errors,
    }


def run_wrk(
    stack: Stack, port: int, scenario: Scenario, key: str, duration: float, log: Path
) -> tuple[str, float]:
    """Run wrk to completion; return its output and its own CPU seconds."""
    cmd = [
        "wrk", "-t1", f"-c{scenario.connections}", f"-d{duration:g}s", "--latency",
        "--timeout", "5s", "-s", str(BENCH / "wrk/post.lua"),
        f"http://127.0.0.1:{port}{scenario.path}",
    ]  # fmt: skip
    env = dict(os.environ, BENCH_BODY=str(scenario.body), BENCH_KEY=key)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = stack.start("wrk", cmd, log, env=env)
    try:
        proc.wait(duration + 30)
    finally:
        stack.stop(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return log.read_text(), cpu


@dataclass
class Env:
    """What one benchmark session runs against."""

    stack: Stack
    tmp: Path
    key: str
    ports: dict[tuple[str, str], int]  # (target, stream?) -> port
    roots: dict[str, int]  # target -> pid whose tree does the work
    all_roots: list[int]


def measure(env: Env, target: str, scenario: Scenario, rnd: int, duration: float) -> RunResult:
    port = env.ports[(target, "sse" if scenario.stream else "json")]
    root = env.roots[target]
    la = loadavg()
    ours0 = sum(tree_cpu_ticks(r) for r in env.all_roots)
    mine0 = tree_cpu_ticks(root)
    writer0 = writer_cpu_ticks(root) if target == "fastgate" else 0
    sys0, _ = system_ticks()
    t0 = time.monotonic()
    log = env.tmp / f"wrk-{target}-{scenario.name}-{rnd}.log"
    out, wrk_cpu = run_wrk(env.stack, port, scenario, env.key, duration, log)
    elapsed = time.monotonic() - t0
    mine = tree_cpu_ticks(root) - mine0
    writer = writer_cpu_ticks(root) - writer0 if target == "fastgate" else None
    ours = sum(tree_cpu_ticks(r) for r in env.all_roots) - ours0
    sys_busy = system_ticks()[0] - sys0
    w = parse_wrk(out)
    other = sys_busy - ours - wrk_cpu * CLK_TCK
    res = RunResult(
        target=target,
        scenario=scenario.name,
        round=rnd,
        cpu_us_per_req=(mine / CLK_TCK * 1e6 / w["requests"]) if w["requests"] else None,
        wrk_cpu_pct=100 * wrk_cpu / elapsed,
        other_cpu_pct=max(0.0, 100 * other / CLK_TCK / elapsed),
        loadavg=la,
        rss_mb=tree_rss_mb(root) if target == "fastgate" else None,
        worker_rss_mb=worker_rss_mb(root) if target == "fastgate" else None,
        pss_mb=tree_pss_mb(root) if target == "fastgate" else None,
        writer_cpu_us=(
            writer / CLK_TCK * 1e6 / w["requests"] if writer is not None and w["requests"] else None
        ),
        **w,
    )
    print(
        f"  {target:8} {scenario.name:9} r{rnd}: {res.rps:9.0f} req/s  p50 {res.p50_ms:7.3f} ms"
        f"  p99 {res.p99_ms:7.3f} ms  cpu {res.cpu_us_per_req or 0:6.1f} us/req"
        f"  wrk {res.wrk_cpu_pct:3.0f}%  other {res.other_cpu_pct:3.0f}%"
        f"  err {res.errors}  load {la}",
        flush=True,
    )
    return res


# ---------------------------------------------------------------- profile


def profile_fastgate(env: Env, duration: float, name: str = "nonstream") -> str:
    """Sample the fastgate process tree with py-spy during an extra run of `name`."""
    pyspy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if not pyspy:
        return "py-spy not found"
    OUT.mkdir(exist_ok=True)
    raw = OUT / "profile.raw.txt"
    cmd = [
        pyspy, "record", "--pid", str(env.roots["fastgate"]), "--subprocesses", "--rate", "500",
        "--duration", str(int(duration)), "--format", "raw", "-o", str(raw),
    ]  # fmt: skip
    log = env.tmp / "py-spy.log"
    spy = env.stack.start("py-spy", cmd, log)
    time.sleep(1.0)  # let py-spy attach before the load starts
    scenario = SCENARIOS[name]
    port = env.ports[("fastgate", "sse" if scenario.stream else "json")]
    out, _ = run_wrk(
        env.stack, port, scenario, env.key, duration,
        env.tmp / "wrk-profile.log",
    )  # fmt: skip
    try:
        spy.wait(duration + 30)
    finally:
        env.stack.stop(spy)
    if not raw.exists():
        return f"py-spy failed:\n{log.read_text()}"
    w = parse_wrk(out)
    summary = summarize_profile(raw.read_text(), duration, 500)
    header = (
        f"command: {shlex.join(cmd)}\nload: wrk -t1 -c{scenario.connections} {name}, "
        f"{w['rps']:.0f} req/s under sampling (not comparable to the timed runs)\n\n"
    )
    (OUT / "profile.txt").write_text(header + summary)
    return header + summary


_WAIT_LEAF = re.compile(r"(\S+\.)?(wait|select|poll|acquire|sleep) \((threading|selectors)\.py\)$")


def summarize_profile(raw: str, duration: float, rate: int, top: int = 30) -> str:
    """Self (leaf) and inclusive sample counts per function from py-spy's raw stacks."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    by_file: dict[str, int] = {}
    total = waits = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [
            re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if not f.startswith("process ")
        ]
        if not frames:
            continue
        if _WAIT_LEAF.match(frames[-1]):
            waits += n  # a thread parked in a wait: py-spy does not always see it as idle
            continue
        total += n
        self_c[frames[-1]] = self_c.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        files = {m.group(1) for f in frames if (m := re.search(r"\((.*)\)$", f))}
        for f in files:
            by_file[f] = by_file.get(f, 0) + n
    if not total:
        return "no samples\n"

    def table(title: str, counts: dict[str, int]) -> str:
        rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        body = "\n".join(f"{100 * c / total:6.1f}%  {c:7d}  {name}" for name, c in rows)
        return f"{title}\n{body}\n"

    # Frames on (nearly) every stack (runpy, cli, the event loop) say nothing; name them once.
    everywhere = sorted(f for f, c in incl.items() if c >= 0.95 * total)
    incl = {f: c for f, c in incl.items() if c < 0.95 * total}
    by_file = {f: c for f, c in by_file.items() if c < 0.95 * total}
    busy = 100 * total / (duration * rate)
    return (
        f"{total} busy samples = {busy:.0f}% of one core at {rate} Hz over {duration:g} s "
        f"({waits} samples of threads parked in a wait left out); a leaf in asyncio's "
        "Runner.run is time inside uvloop's C event loop (I/O, transport writes)\n\n"
        + table("-- self (leaf frame) --", self_c)
        + "\n"
        + table("-- inclusive (function anywhere on the stack) --", incl)
        + f"(on >= 95% of stacks, left out: {', '.join(everywhere) or 'none'})\n"
        + "\n"
        + table("-- inclusive by file --", by_file)
    )


# ---------------------------------------------------------------- report


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def idle_info() -> str:
    """The CPUs' idle driver, and the guest halt polling of a KVM guest's."""
    driver = (_read(str(CPUIDLE_DRIVER)) or "").strip() or "none"
    poll = (_read(str(HALT_POLL_NS)) or "").strip()
    return f"cpuidle {driver}" + (f", guest_halt_poll_ns {poll}" if poll else "")


@contextlib.contextmanager
def guest_halt_poll(ns: int | None) -> Iterator[str]:
    """Set the guest halt polling for the run (`--guest-halt-poll`) and put the
    machine's own value back after it; yields what the report says about it."""
    if ns is None:
        yield ""
        return
    try:
        own = HALT_POLL_NS.read_text().strip()
        HALT_POLL_NS.write_text(f"{ns}\n")
    except OSError as exc:
        raise SystemExit(
            f"--guest-halt-poll: cannot set {HALT_POLL_NS} ({exc}); it needs root in a KVM "
            "guest whose idle driver is haltpoll"
        ) from None
    try:
        yield f"set for this run; the machine's own: {own}"
    finally:
        HALT_POLL_NS.write_text(f"{own}\n")


def machine_info() -> dict[str, str]:
    cpuinfo = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "fastgate"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": m.group(1).strip() if m else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx_v.replace("nginx version: ", ""),
        "wrk": wrk_v[0].split(" Copyright")[0] if wrk_v else "?",
        "fastgate": f"git {rev or '?'}{' + uncommitted changes' if dirty else ''}",
    }


def aggregate(results: list[RunResult]) -> dict[str, dict[str, dict[str, float | None]]]:
    agg: dict[str, dict[str, dict[str, float | None]]] = {}
    for sc in SCENARIOS:
        for t in TARGETS:
            rs = [r for r in results if r.scenario == sc and r.target == t]
            if not rs:
                continue
            agg.setdefault(sc, {})[t] = {
                "rps": med([r.rps for r in rs]),
                "p50_ms": med([r.p50_ms for r in rs]),
                "p99_ms": med([r.p99_ms for r in rs]),
                "cpu_us": med([r.cpu_us_per_req for r in rs]),
                "writer_cpu_us": med([r.writer_cpu_us for r in rs]),
                "rss_mb": max((r.rss_mb for r in rs if r.rss_mb is not None), default=None),
                "worker_rss_mb": max(
                    (r.worker_rss_mb for r in rs if r.worker_rss_mb is not None), default=None
                ),
                "pss_mb": max((r.pss_mb for r in rs if r.pss_mb is not None), default=None),
                "errors": sum(r.errors for r in rs),
                "wrk_cpu_pct": med([r.wrk_cpu_pct for r in rs]),
                "other_cpu_pct": med([r.other_cpu_pct for r in rs]),
            }
            if t == "nginx":  # its rounds not starved by the host (see STARVED)
                floor = {
                    r.round: r.rps for r in results if r.scenario == sc and r.target == "pyfloor"
                }
                fair = [
                    r.rps for r in rs if r.round not in floor or r.rps >= STARVED * floor[r.round]
                ]
                agg[sc][t]["rps_fair"] = med(fair) if fair else None
                agg[sc][t]["starved"] = len(rs) - len(fair)
                agg[sc][t]["rounds"] = len(rs)
    return agg


# An nginx round that served fewer requests than this share of the Python floor
# proxy's in the same round was starved by the host (the floor does nginx's
# forwarding in CPython; in the 84 rounds of bench/RESULTS.md before stop 25 it
# served 0.82-1.32x nginx's requests until a host with 60-70 % steal time): the ratio to nginx
# leaves such a round out, and is not judged when no round is left.
STARVED = 0.75


def targets_table(agg: dict) -> list[str]:
    """The issue's targets, pass/miss."""

    def get(sc: str, t: str, k: str) -> float | None:
        return agg.get(sc, {}).get(t, {}).get(k)

    rows = []

    def ratio(sc: str) -> float | None:
        # nginx's median over its rounds that were not starved (aggregate)
        fg, ng = get(sc, "fastgate", "rps"), get(sc, "nginx", "rps_fair")
        return fg / ng if fg and ng else None

    def added_p50() -> float | None:
        fg, d = get("latency", "fastgate", "p50_ms"), get("latency", "direct", "p50_ms")
        return fg - d if fg is not None and d is not None else None

    def max_of(key: str) -> float | None:
        return max(
            (v for sc in agg.values() for t, d in sc.items() if t == "fastgate" and
             (v := d.get(key)) is not None),
            default=None,
        )  # fmt: skip

    # Issue 7's targets (CPU: the whole process tree, usage writer included).
    checks = [
        ("throughput vs nginx, non-stream", ratio("nonstream"), ">= 0.5x", lambda v: v >= 0.5, ".2f", "x"),
        ("throughput vs nginx, stream", ratio("stream"), ">= 0.5x", lambda v: v >= 0.5, ".2f", "x"),
        ("CPU per request, non-stream", get("nonstream", "fastgate", "cpu_us"), "<= 45 µs",
         lambda v: v <= 45, ".1f", " µs"),
        ("CPU per request, stream (22 events)", get("stream", "fastgate", "cpu_us"), "<= 70 µs",
         lambda v: v <= 70, ".1f", " µs"),
        ("added p50 at c=1 over direct", added_p50(), "<= 0.1 ms", lambda v: v <= 0.1, ".3f", " ms"),
        ("RSS, serving process", max_of("worker_rss_mb"), "<= 50 MB", lambda v: v <= 50, ".1f", " MB"),
        ("RSS, whole tree (+ usage writer)", max_of("rss_mb"), "<= 50 MB", lambda v: v <= 50, ".1f", " MB"),
    ]  # fmt: skip

    def conversion(pass_sc: str, conv_sc: str) -> float | None:
        p, c = get(pass_sc, "fastgate", "rps"), get(conv_sc, "fastgate", "rps")
        return c / p if p and c else None

    checks += [
        ("conversion vs passthrough, non-stream", conversion("nonstream", "convert"), ">= 0.5x",
         lambda v: v >= 0.5, ".2f", "x"),
        ("conversion vs passthrough, stream", conversion("stream", "convert-stream"), ">= 0.5x",
         lambda v: v >= 0.5, ".2f", "x"),
    ]  # fmt: skip
    back = {name: conversion("stream", f"from-{name}") for name in ("anthropic", "gemini")}
    floor_rows = []
    for name, title in (("anthropic", "an Anthropic"), ("gemini", "a Gemini")):
        if back[name] is not None:
            floor_rows.append(
                f"| (conversion from {title} channel vs passthrough, stream: {back[name]:.2f}x) "
                "| | | context |"
            )
    pss = max_of("pss_mb")
    if pss is not None:
        floor_rows.append(
            f"| (whole tree PSS {pss:.1f} MB: the pages its processes share counted once) "
            "| | | context |"
        )
    for sc in ("nonstream", "stream"):
        fl, fg = get(sc, "pyfloor", "cpu_us"), get(sc, "fastgate", "cpu_us")
        if fl is not None and fg is not None:
            floor_rows.append(
                f"| ({sc}: Python floor proxy {fl:.1f} µs; fastgate above it {fg - fl:.1f} µs) "
                "| | | context |"
            )
        wr = get(sc, "fastgate", "writer_cpu_us")
        if wr is not None and fg is not None:
            floor_rows.append(
                f"| ({sc}: of fastgate's {fg:.1f} µs, the usage writer process {wr:.1f} µs) "
                "| | | context |"
            )
    starved = {}
    for sc, name in (("nonstream", "non-stream"), ("stream", "stream")):
        n = get(sc, "nginx", "starved")
        if n:
            starved[f"throughput vs nginx, {name}"] = (n, get(sc, "nginx", "rounds"))
    rows.append("| target | measured | threshold | result |")
    rows.append("|---|---:|---|---|")
    for name, value, threshold, ok, spec, unit in checks:
        verdict = "n/a" if value is None else ("**pass**" if ok(value) else "**MISS**")
        if name in starved:
            n, of = starved[name]
            why = f"{n} of {of} nginx rounds below {STARVED}x the Python floor's req/s"
            verdict = (
                f"**not judged** ({why}: starved)"
                if value is None
                else f"{verdict} ({why}: left out)"
            )
        rows.append(f"| {name} | {fmt(value, spec, unit)} | {threshold} | {verdict} |")
    return rows + floor_rows


def render(
    results: list[RunResult], args: argparse.Namespace, info: dict, checks: dict, started: str
) -> str:
    agg = aggregate(results)
    las = [float(r.loadavg.split()[0]) for r in results if r.loadavg[0].isdigit()]
    others = [r.other_cpu_pct for r in results]
    lines = [
        f"## Run of {started}",
        "",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
        f"idle: {info['idle']}" + (f" ({info['halt_poll']})" if info.get("halt_poll") else ""),
        f"- Software: Python {info['python']}, {info['nginx']}, {info['wrk']}, "
        f"fastgate {info['fastgate']}",
        f"- Command: `{args.command}` ({args.rounds} round(s) x {args.duration:g} s per run, "
        f"interleaved {' -> '.join(args.targets)}; medians of rounds)",
        f"- fastgate: `--workers {args.workers}`, usage records to "
        f"{'Postgres' if args.database_url.startswith('postgres') else 'SQLite'}"
        f"{' and the JSON access log' if args.access_log else ''}; "
        "nginx proxy: 1 worker, upstream keepalive 64, `proxy_buffering off` for streams",
    ]
    if las:
        lines.append(
            f"- Load average (1 min) before each run: {min(las):.2f} - {max(las):.2f}; "
            f"CPU used by processes outside the benchmark during runs: median "
            f"{statistics.median(others):.0f}%, max {max(others):.0f}% of one core"
        )
        if max(others) > 20 or max(las) > (os.cpu_count() or 1) * 1.5:
            lines.append(
                "- **Preliminary:** other work shared this machine's CPUs during the runs; "
                "req/s and latency are pessimistic and noisy (CPU per request is less affected)."
            )
    lines += ["", "### Targets", "", *targets_table(agg), ""]
    for sc_name, by_target in agg.items():
        sc = SCENARIOS[sc_name]
        lines += [
            f"### {sc.title}: `wrk -t1 -c{sc.connections}`",
            "",
            "| | req/s | p50 | p99 | CPU µs/req | RSS | errors | wrk CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t, d in by_target.items():
            lines.append(
                f"| {TARGET_LABEL[t]} | {fmt(d['rps'])} | {fmt(d['p50_ms'], '.3f', ' ms')} | "
                f"{fmt(d['p99_ms'], '.3f', ' ms')} | {fmt(d['cpu_us'], '.1f')} | "
                f"{fmt(d['rss_mb'], '.1f', ' MB')} | {d['errors']} | "
                f"{fmt(d['wrk_cpu_pct'], '.0f', '%')} |"
            )
        di, ng, fg = (by_target.get(t) for t in ("direct", "nginx", "fastgate"))
        fl = by_target.get("pyfloor")
        ratios = []
        for other, label in ((ng, "nginx"), (di, "direct"), (fl, "Python floor")):
            if fg and other and other["rps"]:
                ratios.append(
                    f"fastgate/{label}: {fg['rps'] / other['rps']:.2f}x req/s, "
                    f"p50 {fg['p50_ms'] - other['p50_ms']:+.3f} ms"
                )
        if ratios:
            lines += ["", "; ".join(ratios) + "."]
        lines.append("")
    lines += [
        "CPU µs/req is utime+stime of the process tree under test (the stub nginx for "
        "direct, the proxy nginx for nginx, bench/floor_proxy.py for the Python floor, "
        "fastgate for fastgate) over the requests wrk "
        "completed (for fastgate: the serving process and its usage writer process); "
        "RSS is fastgate's VmRSS after the throughput runs, summed over that tree (the "
        "targets table also gives the serving process alone).",
        "",
    ]
    if checks:
        lines += ["Pre-flight responses (one request each):", ""]
        lines += [f"- {k}: {v}" for k, v in checks.items()]
        lines.append("")
    lines += [
        "<details><summary>Per-round numbers</summary>",
        "",
        "| scenario | target | round | req/s | p50 ms | p99 ms | CPU µs/req | errors | "
        "loadavg | other CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.target} | {r.round} | {r.rps:.0f} | {r.p50_ms:.3f} | "
            f"{r.p99_ms:.3f} | {fmt(r.cpu_us_per_req, '.1f')} | {r.errors} | {r.loadavg} | "
            f"{r.other_cpu_pct:.0f}% |"
        )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_results(path: Path, section: str, append: bool) -> None:
    """Regenerate the top section; keep the history below the marker (and add to it)."""
    history = ""
    if path.exists():
        old = path.read_text()
        if HISTORY_MARK in old:
            history = old.split(HISTORY_MARK, 1)[1].strip("\n")
    if append:
        history = section.replace("## Run of", "### Run of", 1) + (
            "\n\n" + history if history else ""
        )
    head = (
        "# fastgate benchmark results\n\n"
        "Generated by `bash bench/run.sh` (see bench/README.md). The section below is "
        "rewritten on every run; `--append` also adds the run to the history.\n\n"
    )
    text = head + section + "\n## History\n\n" + HISTORY_MARK + "\n"
    if history:
        text += "\n" + history + "\n"
    path.write_text(text)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--quick", action="store_true", help="smoke: 2 s per run, 1 round")
    p.add_argument("--only", default=",".join(TARGETS), help="targets, e.g. direct,nginx")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="nonstream,stream,latency")
    p.add_argument("--workers", type=int, default=1, help="fastgate --workers")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    p.add_argument("--append", action="store_true", help="also add this run to the history")
    p.add_argument("--profile", action="store_true", help="py-spy the fastgate worker")
    p.add_argument(
        "--profile-scenario",
        default="nonstream",
        choices=sorted(SCENARIOS),
        help="the load run under --profile",
    )
    p.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument(
        "--database-url",
        default="",
        help='fastgate [database] url (default: a SQLite file in the run dir); "postgres" '
        "creates a throwaway database on 127.0.0.1:5432 and drops it afterwards",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="also write every usage record as a JSON line (on top of the database)",
    )
    p.add_argument(
        "--guest-halt-poll",
        type=int,
        metavar="NS",
        default=None,
        help="a KVM guest's cpuidle haltpoll: poll NS ns before an idle vCPU halts, for "
        "this run only (root; the machine's own value is put back after)",
    )
    p.add_argument("--no-results", action="store_true", help="print only, do not write files")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 2.0, 1, 1.0
    args.targets = [t for t in TARGETS if t in args.only.split(",")]
    args.scenario_list = [SCENARIOS[s] for s in args.scenarios.split(",") if s]
    unknown = set(args.only.split(",")) - set(TARGETS)
    if unknown or not args.targets:
        p.error(f"--only takes a subset of {','.join(TARGETS)}")
    args.command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]
    )
    return args


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def compile_bytecode() -> None:
    """Write fastgate's bytecode caches (`__pycache__`) before anything starts, as
    an install does (pip compiles what it installs; a checkout is compiled by its
    first import). Where PYTHONDONTWRITEBYTECODE is set (this machine sets it) no
    import writes them, and every process would compile fastgate from source at
    start: 0.16 s more, and 1.5 MB more RSS in the worker, 0.85 MB in the writer
    (the compiler's memory stays in the heap), which the RSS row would count."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "fastgate")], check=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    ensure_tools()
    compile_bytecode()
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    stack = Stack()
    tmp = Path(tempfile.mkdtemp(prefix="fastgate-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the stub files
    keep_tmp = False
    pg_db = ""
    if args.database_url == "postgres":
        pg_db = "fastgate_bench_" + secrets.token_hex(4)
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                f"CREATE DATABASE {pg_db}",
            ],
            check=True,
        )
        args.database_url = f"postgresql://postgres@127.0.0.1:5432/{pg_db}"
    try:
        with guest_halt_poll(args.guest_halt_poll) as halt_poll:
            idle = idle_info()  # as the runs find it
            results, checks, profile = session(args, stack, tmp)
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        keep_tmp = True
        print(f"bench failed: {exc}\nlogs kept in {tmp}", file=sys.stderr)
        return 1
    finally:
        stack.stop_all()
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if pg_db:
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-qc",
                    f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)",
                ],
                check=False,
            )
    info = machine_info() | {"idle": idle, "halt_poll": halt_poll}  # idle: as the runs found it
    section = render(results, args, info, checks, started)
    if profile:
        top = "\n".join(profile.splitlines()[:25])
        section += f"\nProfile (`--profile`, bench/out/profile.txt, top):\n\n```\n{top}\n```\n"
    print()
    print(section)
    if not args.no_results:
        write_results(args.results, section, args.append)
        OUT.mkdir(exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (OUT / f"results-{stamp}.json").write_text(
            json.dumps(
                {
                    "started": started,
                    "machine": info,
                    "command": args.command,
                    "runs": [asdict(r) for r in results],
                },
                indent=1,
            )
        )
        print(f"wrote {args.results}")
    return 0


def session(
    args: argparse.Namespace, stack: Stack, tmp: Path
) -> tuple[list[RunResult], dict[str, str], str]:
    ports9 = free_ports(9)  # one call: ports of separate calls could repeat
    stub_json, stub_sse, proxy_json, proxy_sse, admin_port, floor_json, floor_sse = ports9[:7]
    stub_a, stub_g = ports9[7:]
    key = "fg-" + secrets.token_urlsafe(32)
    www = tmp / "www"
    shutil.copytree(BENCH / "stub", www)
    stub = start_nginx(
        stack,
        "stub",
        tmp / "stub",
        [
            STUB_SERVER.format(
                port=stub_json, www=www, file="chat_completion.json", ctype="application/json"
            ),
            STUB_SERVER.format(
                port=stub_sse, www=www, file="chat_stream.sse", ctype="text/event-stream"
            ),
            STUB_SERVER.format(
                port=stub_a, www=www, file="messages_stream.sse", ctype="text/event-stream"
            ),
            STUB_SERVER.format(
                port=stub_g, www=www, file="gemini_stream.sse", ctype="text/event-stream"
            ),
        ],
    )
    wait_port(stub_json, stub, tmp / "stub/error.log")
    wait_port(stub_sse, stub, tmp / "stub/error.log")
    wait_port(stub_a, stub, tmp / "stub/error.log")
    wait_port(stub_g, stub, tmp / "stub/error.log")
    ports = {("direct", "json"): stub_json, ("direct", "sse"): stub_sse}
    roots = {"direct": stub.pid}
    if "nginx" in args.targets:
        proxy = start_nginx(
            stack,
            "proxy",
            tmp / "proxy",
            [
                PROXY_SERVER.format(name="stub_json", upstream_port=stub_json, port=proxy_json,
                                    key=UPSTREAM_KEY, buffering="on"),
                PROXY_SERVER.format(name="stub_sse", upstream_port=stub_sse, port=proxy_sse,
                                    key=UPSTREAM_KEY, buffering="off"),
            ],
        )  # fmt: skip
        wait_port(proxy_json, proxy, tmp / "proxy/error.log")
        wait_port(proxy_sse, proxy, tmp / "proxy/error.log")
        ports |= {("nginx", "json"): proxy_json, ("nginx", "sse"): proxy_sse}
        roots["nginx"] = proxy.pid
    if "pyfloor" in args.targets:
        floor = stack.start(
            "pyfloor",
            [sys.executable, str(BENCH / "floor_proxy.py"), f"{floor_json}:{stub_json}",
             f"{floor_sse}:{stub_sse}", "--key", UPSTREAM_KEY],
            tmp / "pyfloor.log",
        )  # fmt: skip
        wait_port(floor_json, floor, tmp / "pyfloor.log")
        wait_port(floor_sse, floor, tmp / "pyfloor.log")
        ports |= {("pyfloor", "json"): floor_json, ("pyfloor", "sse"): floor_sse}
        roots["pyfloor"] = floor.pid
    if "fastgate" in args.targets:
        config = fastgate_config(
            tmp, stub_json, stub_sse, admin_port, key, args.database_url, args.access_log,
            stub_a, stub_g,
        )  # fmt: skip
        fg, fg_port, _ = start_fastgate(stack, tmp, config, args.workers)
        ports |= {("fastgate", "json"): fg_port, ("fastgate", "sse"): fg_port}
        roots["fastgate"] = fg.pid
    env = Env(stack, tmp, key, ports, roots, list(roots.values()))

    checks = {}
    for t in args.targets:
        for sc in args.scenario_list:
            if sc.name == "latency" or (sc.fastgate_only and t != "fastgate"):
                continue
            port = ports[(t, "sse" if sc.stream else "json")]
            checks[f"{t}/{sc.name}"] = check_target(port, sc, key, t)
    for name, text in checks.items():
        print(f"check {name}: {text}")

    if args.warmup > 0:
        print(f"warm-up ({args.warmup:g} s per target and scenario)", flush=True)
        for sc in args.scenario_list:
            for t in args.targets:
                if sc.fastgate_only and t != "fastgate":
                    continue
                port = ports[(t, "sse" if sc.stream else "json")]
                run_wrk(stack, port, sc, key, args.warmup, tmp / "warmup.log")

    before = None
    if "fastgate" in args.targets:
        time.sleep(0.5)  # the warm-up's last records (the writer takes a batch every 100 ms)
        before = stored_records(tmp, args)
    results: list[RunResult] = []
    for rnd in range(1, args.rounds + 1):
        print(f"round {rnd}/{args.rounds}", flush=True)
        for sc in args.scenario_list:
            for t in args.targets:
                if sc.fastgate_only and t != "fastgate":
                    continue
                results.append(measure(env, t, sc, rnd, args.duration))

    if "fastgate" in args.targets:
        time.sleep(0.5)  # the usage writer takes a batch every 100 ms
        served = sum(r.requests for r in results if r.target == "fastgate")
        checks["fastgate usage records"] = usage_records_check(tmp, args, before, served)

    profile = ""
    if args.profile and "fastgate" in args.targets:
        print("profiling fastgate with py-spy", flush=True)
        profile = profile_fastgate(env, max(args.duration, 5), args.profile_scenario)
    return results, checks, profile


if __name__ == "__main__":
    sys.exit(main())
