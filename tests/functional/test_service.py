"""fastgate as a service: sd_notify, signals, workers, ports (issue 9 items 1 and 3,
issue 11 item 4).

Real `fastgate serve` subprocesses (tests/harness.py) on the built-in mock
channel. systemd is played by a unix datagram socket the test binds and names
in NOTIFY_SOCKET (a path, or the abstract '@' form); each datagram is read
with the sender's pid (SCM_CREDENTIALS), so the test checks who said what and
when. Workers are told apart by /ready's pid and the scrape's
`fastgate_worker_info{worker,pid}`; usage rows are read from the default SQLite
file directly and counted against the responses the client read in full.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import REPO_ROOT, Gateway, children_pids, gateway_config, make_key, token

MOCK = {"name": "m", "type": "mock", "models": ["mock-1"]}
SLOW = {"name": "slow", "type": "mock", "models": ["slow-1"], "delay_ms": 20}
ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
ADMIN_RE = re.compile(r"admin on http://([^:\s]+):(\d+)")
UCRED = struct.Struct("iII")  # pid, uid, gid


# --------------------------------------------------------------------------- helpers


class Notify:
    """A fake NOTIFY_SOCKET: every datagram as (monotonic time, sender pid, fields)."""

    def __init__(self, tmp_path: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"fastgate-test-{secrets.token_hex(8)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = tmp_path / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, int, dict[str, str]]] = []
        self.on_first_ready: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(blob[: UCRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            first_ready = fields.get("READY") == "1" and not any(
                m[2].get("READY") == "1" for m in self.messages
            )
            if first_ready and self.on_first_ready is not None:
                self.on_first_ready()  # the moment READY=1 arrived
            with self._cond:
                self.messages.append((time.monotonic(), pid, fields))
                self._cond.notify_all()

    def wait(self, key: str, start: int = 0, timeout: float = 15) -> int:
        """Index of the first message from `start` on that has `key`=1."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if self.messages[i][2].get(key) == "1":
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {key}=1 after message {start}: {self.messages}")
                self._cond.wait(left)

    def events(self) -> list[str]:
        """The non-watchdog notifications, in order (READY, RELOADING, STOPPING)."""
        out = []
        for _t, _pid, fields in list(self.messages):
            out += [k for k in ("READY", "RELOADING", "STOPPING") if fields.get(k) == "1"]
        return out

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None):
    """GET on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ready_pid(port: int) -> int:
    status, body = get(port, "/ready")
    assert status == 200, body
    return int(json.loads(body)["pid"])


def chat(port: int, key: str, model: str = "mock-1") -> int:
    """One chat completion on a fresh connection; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def worker_pids(port: int) -> dict[int, int]:
    """{worker index: pid} from the instance's scrape (fastgate_worker_info)."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(rb'fastgate_worker_info\{worker="(\d+)",pid="(\d+)"\} 1', body)
    }


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
            if got:
                return got
        except (OSError, http.client.HTTPException, AssertionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    """The process exited: every thread of it (a zombie group leader whose other
    threads still run keeps the descriptors open), reaped or not."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return tasks == [str(pid)] and stat[stat.rindex(")") + 2] in "ZX"


def both_workers_answer(port: int, pids: set[int], tries: int = 40) -> bool:
    """Fresh connections reach every one of `pids` (the kernel spreads them)."""
    seen = set()
    for _ in range(tries):
        seen.add(ready_pid(port))
        if seen == pids:
            return True
    return False


def config(keys: list[str], gw_dir: Path | None = None, extra: str = "", **kw: Any) -> str:
    logging = {"access_log": str(gw_dir / "access.jsonl")} if gw_dir is not None else None
    return gateway_config(
        channels=[MOCK, SLOW],
        tokens=[token(f"t{i}", k) for i, k in enumerate(keys)],
        logging=logging,
        extra=extra,
        **kw,
    )


def admin_toml(port: int = 0) -> str:
    return f'[admin]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{ADMIN_TOKEN}"\n'


# --------------------------------------------------------------------------- sd_notify


@pytest.mark.parametrize("workers", [1, 2])
def test_sd_notify_ready_reload_and_stopping(tmp_path: Path, make_gateway, workers: int) -> None:
    """READY=1 once every worker serves; SIGHUP: RELOADING=1 (+ MONOTONIC_USEC) then
    READY=1 once the new config serves everywhere, the access log reopened; SIGTERM:
    STOPPING=1 and /ready 503 while draining; WATCHDOG=1 every half WATCHDOG_USEC.
    Every message comes from the main process. One worker: a socket path; two:
    the abstract '@' form."""
    key, new_key = make_key(), make_key()
    port = free_port()
    note = Notify(tmp_path, abstract=workers == 2)
    at_ready: dict[str, Any] = {}

    def probe() -> None:  # in the listener's thread, as READY=1 arrives
        answers = [get(port, "/ready", timeout=2) for _ in range(20)]
        at_ready["statuses"] = {s for s, _ in answers}
        at_ready["pids"] = {json.loads(b)["pid"] for s, b in answers if s == 200}

    note.on_first_ready = probe
    gw = make_gateway(
        config([key]),
        args=["--workers", str(workers), "--port", str(port)],
        env={"NOTIFY_SOCKET": note.address, "WATCHDOG_USEC": "1000000"},
    )
    try:
        note.wait("READY")
        wait_for(lambda: "statuses" in at_ready, "the probe at READY")
        assert at_ready["statuses"] == {200}, at_ready
        workers_now = set(children_pids(gw.pid)) if workers > 1 else {gw.pid}
        assert at_ready["pids"] == workers_now  # every worker served at READY=1

        # Watchdog: WATCHDOG=1 every 0.5 s from the main process's loop.
        time.sleep(1.3)
        pings = [m for m in note.messages if m[2].get("WATCHDOG") == "1"]
        assert len(pings) >= 2, note.messages

        # SIGHUP: a new key, and log rotation.
        for _ in range(3):
            assert chat(port, key) == 200
        gw.wait_records(3)
        rotated = gw.access_log_path.with_name("access.jsonl.1")
        gw.access_log_path.rename(rotated)
        gw.config_path.write_text(config([key, new_key], gw.dir))
        n = len(note.messages)
        t_hup = time.monotonic()
        gw.send_signal(signal.SIGHUP)
        i = note.wait("RELOADING", n)
        usec = int(note.messages[i][2]["MONOTONIC_USEC"])
        assert t_hup * 1e6 <= usec <= time.monotonic() * 1e6
        note.wait("READY", i + 1)
        # Once READY=1 came back, every worker runs the new file.
        assert [chat(port, new_key) for _ in range(20)] == [200] * 20
        recs = gw.wait_records(20)
        assert len(recs) == 20  # all in the new access.jsonl
        old = [json.loads(line) for line in rotated.read_text().splitlines()]
        assert len(old) == 3  # nothing written to the renamed file after SIGHUP

        # SIGTERM: STOPPING=1; a request whose head had started arriving is
        # answered, and /ready says 503 while the process drains.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: gw\r\n")
            time.sleep(0.2)
            n = len(note.messages)
            gw.send_signal(signal.SIGTERM)
            note.wait("STOPPING", n)
            time.sleep(0.2)
            s.sendall(b"\r\n")
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"draining"' in answer
        assert gw.proc is not None and gw.proc.wait(30) == 0, gw.stderr_text()[-3000:]
        assert note.events() == ["READY", "RELOADING", "READY", "STOPPING"]
        assert {pid for _t, pid, _f in note.messages} == {gw.pid}
    finally:
        note.close()


def test_watchdog_kills_a_stuck_worker(tmp_path: Path, make_gateway) -> None:
    """WatchdogSec with --workers 2: the supervisor pings systemd, and a worker whose
    loop stops answering (SIGSTOP) for a whole interval is killed and restarted."""
    key = make_key()
    note = Notify(tmp_path)
    gw = make_gateway(
        config([key]),
        args=["--workers", "2"],
        env={"NOTIFY_SOCKET": note.address, "WATCHDOG_USEC": "1000000"},
    )
    try:
        note.wait("READY")
        pids = wait_for(lambda: len(worker_pids(gw.port)) == 2 and worker_pids(gw.port), "pids")
        os.kill(pids[1], signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: gone(pids[1]), "the stuck worker to be killed", timeout=5)
        took = time.monotonic() - t0
        assert took < 3.0, took
        wait_for(lambda: "silent for" in gw.stderr_text(), "the watchdog's log line")
        new = wait_for(
            lambda: worker_pids(gw.port).get(1, pids[1]) != pids[1] and worker_pids(gw.port),
            "a new worker 1",
        )
        assert both_workers_answer(gw.port, set(new.values()))
        assert {pid for _t, pid, _f in note.messages} == {gw.pid}
        assert gw.stop() == 0
    finally:
        note.close()


# --------------------------------------------------------------------------- workers


def test_reload_reaches_respawned_workers_and_a_bad_file_keeps_the_last_good(
    tmp_path: Path, make_gateway
) -> None:
    """The supervisor re-reads the file on SIGHUP too: a worker killed after a reload
    comes back with the reloaded config, and after a reload of an invalid file
    with the last good one. Worker 0 comes back with its admin API."""
    key_a, key_b = make_key(), make_key()
    note = Notify(tmp_path)
    gw = make_gateway(
        config([key_a], extra=admin_toml()),
        args=["--workers", "2"],
        env={"NOTIFY_SOCKET": note.address},
    )
    try:
        note.wait("READY")
        port = gw.port
        pids = wait_for(lambda: len(worker_pids(port)) == 2 and worker_pids(port), "pids")
        gw.config_path.write_text(config([key_b], gw.dir, extra=admin_toml()))
        n = len(note.messages)
        gw.send_signal(signal.SIGHUP)
        note.wait("READY", note.wait("RELOADING", n) + 1)

        os.kill(pids[0], signal.SIGKILL)  # worker 0: the admin API's worker
        pids = wait_for(
            lambda: (p := worker_pids(port)).get(0, pids[0]) != pids[0] and len(p) == 2 and p,
            "a new worker 0",
        )
        try:  # the store may take its backoff (0.5 s doubling) to be reached again
            admins = wait_for(
                lambda: len(ADMIN_RE.findall(gw.stderr_text())) == 2, "admin again", timeout=45
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the gateway said:\n{gw.stderr_text()[-4000:]}") from None
        assert admins
        _host, aport = ADMIN_RE.findall(gw.stderr_text())[-1]
        status, body = get(
            int(aport), "/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert status == 200 and len(json.loads(body)["workers"]) == 2

        gw.config_path.write_text("[[channels]\nthis is not toml")
        n = len(note.messages)
        gw.send_signal(signal.SIGHUP)
        note.wait("READY", note.wait("RELOADING", n) + 1)  # reload failed: still READY
        wait_for(lambda: "reload failed" in gw.stderr_text(), "the reload error in the log")
        os.kill(pids[1], signal.SIGKILL)
        pids = wait_for(
            lambda: (p := worker_pids(port)).get(1, pids[1]) != pids[1] and len(p) == 2 and p,
            "a new worker 1",
        )
        # Both respawned workers run the last good file: key b, not a.
        assert both_workers_answer(port, set(pids.values()))
        assert [chat(port, key_b) for _ in range(30)] == [200] * 30
        assert [chat(port, key_a) for _ in range(30)] == [401] * 30
        assert gw.stop() == 0
    finally:
        note.close()


def test_new_connections_after_any_worker_is_killed(make_gateway) -> None:
    """kill -9 of worker 1, then of worker 0: 200 fresh connections in a row all
    answered within 5 s of the kill (the dead worker's socket left the group with
    it; the supervisor holds no listening socket); then both workers serve again."""
    gw = make_gateway(config([make_key()]), args=["--workers", "2"])
    port = gw.port
    pids = wait_for(lambda: len(worker_pids(port)) == 2 and worker_pids(port), "pids")
    for index in (1, 0):
        victim = pids[index]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda v=victim: gone(v), "the worker to die", timeout=5)
        slowest = 0.0
        for _ in range(200):
            t = time.monotonic()
            status, _ = get(port, "/health", timeout=1.0)
            assert status == 200
            slowest = max(slowest, time.monotonic() - t)
        took = time.monotonic() - t0
        print(f"worker {index} killed: 200 connections in {took:.2f} s, slowest {slowest:.3f} s")
        assert took < 5.0
        pids = wait_for(
            lambda v=victim, i=index: (p := worker_pids(port)).get(i, v) != v and len(p) == 2 and p,
            f"a new worker {index}",
        )
        assert both_workers_answer(port, set(pids.values()))
    assert gw.stop() == 0


async def _send(
    session: aiohttp.ClientSession, url: str, key: str, rid: str, tag: str, stream: bool
):
    """One chat request; (rid, done_at) if the client read the whole answer, else None."""
    body: dict[str, Any] = {"model": "slow-1" if stream else "mock-1", "max_tokens": 4}
    body["messages"] = [{"role": "user", "content": rid}]
    if stream:
        body["stream"] = True
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid, "x-fastgate-tag": tag}
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200 or (stream and b"data: [DONE]" not in data):
                return None
            if not stream:
                json.loads(data)
            return rid, time.monotonic()
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


def test_no_usage_record_lost_or_doubled_by_kill_9_or_sigterm(make_gateway) -> None:
    """--workers 2 and the default SQLite store under load: a worker killed with -9,
    then SIGTERM. Every request whose answer the client read in full has exactly
    one row; no request has two; every row is a request the client sent."""
    key, tag = make_key(), "svc-" + secrets.token_hex(6)
    gw = make_gateway(config([key]), args=["--workers", "2"])
    db = gw.dir / "fastgate.db"  # no [database] section: beside the config
    pids = wait_for(lambda: len(worker_pids(gw.port)) == 2 and worker_pids(gw.port), "pids")
    victim = pids[1]
    writers = children_pids(victim)  # its usage writer process
    sent: list[str] = []
    done: list[tuple[str, float]] = []
    marks: dict[str, float] = {}
    pinned: list[str] = []

    def kill_right_after_answers() -> None:
        """A kept-alive connection that the victim accepted: 5 requests on it, and
        the kill as soon as the 5th answer is read (its record cannot have left
        the worker by a timer since)."""
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            conn.request("GET", "/ready")
            resp = conn.getresponse()
            if json.loads(resp.read())["pid"] == victim:
                break
            conn.close()
        body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]})
        for i in range(5):
            rid = f"{tag}-pinned-{i}"
            sent.append(rid)
            headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
            conn.request("POST", "/v1/chat/completions", body, headers | {"x-fastgate-tag": tag})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["choices"]
            pinned.append(rid)
        marks["kill"] = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        done.extend((rid, marks["kill"] - 1e-6) for rid in pinned)
        conn.close()

    async def drive() -> None:
        url = gw.url + "/v1/chat/completions"
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t0 = time.monotonic()

            async def client(c: int) -> None:
                i = 0
                while time.monotonic() - t0 < 3.0:
                    rid = f"{tag}-{c}-{i}"
                    sent.append(rid)
                    got = await _send(session, url, key, rid, tag, stream=i % 3 == 0)
                    if got:
                        done.append(got)
                    elif "term" in marks:
                        await asyncio.sleep(0.05)  # the listener is closed
                    i += 1

            async def signals() -> None:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(kill_right_after_answers)
                await asyncio.sleep(1.0)
                marks["term"] = time.monotonic()
                gw.send_signal(signal.SIGTERM)

            await asyncio.gather(signals(), *(client(c) for c in range(12)))

    asyncio.run(drive())
    assert gw.proc is not None and gw.proc.wait(30) == 0, gw.stderr_text()[-3000:]
    for pid in writers:  # the killed worker's writer writes what it had, then exits
        wait_for(lambda p=pid: gone(p), "the killed worker's writer to finish", timeout=15)
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = [
            r[0] for r in con.execute("SELECT request_id FROM usage_records WHERE tag = ?", (tag,))
        ]
    finally:
        con.close()
    complete = {rid for rid, _ in done}
    before_kill = [rid for rid, t in done if t < marks["kill"]]
    after_kill = [rid for rid, t in done if marks["kill"] < t < marks["term"]]
    print(
        f"sent {len(sent)}, complete {len(complete)} ({len(before_kill)} before the kill), "
        f"rows {len(rows)}"
    )
    assert before_kill and after_kill, "the kill and the SIGTERM came under load"
    assert len(complete) < len(sent), "SIGTERM stopped the accepting"
    assert len(rows) == len(set(rows)), "a request has two rows"
    assert complete <= set(rows), sorted(complete - set(rows))[:10]
    assert set(rows) <= set(sent)
    assert set(pinned) <= set(rows)  # answered by the victim just before the kill


# --------------------------------------------------------------------------- ports


def _serve(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "fastgate", "serve", "--config", str(config_path)]
    return subprocess.run(
        [*cmd, "--host", "127.0.0.1", *args], capture_output=True, text=True, timeout=30, env=env
    )


def _refused(res: subprocess.CompletedProcess[str], what: str) -> None:
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastgate: cannot listen on {what}"), lines


def test_a_busy_port_or_admin_port_is_refused(tmp_path: Path, make_gateway) -> None:
    """A second fastgate on the port of a running one (1 or 2 workers each way), or
    on a port any other socket holds (with SO_REUSEPORT too, same user): one line,
    exit 1, and the running instance keeps all its connections. The same for a
    busy admin port."""
    key = make_key()
    gw = make_gateway(config([key]), args=["--workers", "2"])
    for workers in ("1", "2"):
        _refused(_serve(gw.config_path, "--port", str(gw.port), "--workers", workers),
                 f"127.0.0.1:{gw.port}: ")  # fmt: skip
    assert both_workers_answer(gw.port, set(children_pids(gw.pid)))
    one = make_gateway(config([key]))
    _refused(_serve(one.config_path, "--port", str(one.port), "--workers", "2"),
             f"127.0.0.1:{one.port}: ")  # fmt: skip
    assert ready_pid(one.port) == one.pid

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        busy = other.getsockname()[1]
        for workers in ("1", "2"):
            _refused(_serve(gw.config_path, "--port", str(busy), "--workers", workers),
                     f"127.0.0.1:{busy}: ")  # fmt: skip
        with_admin = tmp_path / "admin.toml"
        with_admin.write_text(config([key], extra=admin_toml(busy)))
        for workers in ("1", "2"):
            res = _serve(with_admin, "--port", "0", "--workers", workers)
            _refused(res, f"admin 127.0.0.1:{busy}: ")
            assert "Traceback" not in res.stderr


# --------------------------------------------------------------------------- systemd


def test_systemd_unit_is_the_shipped_one_and_verifies(tmp_path: Path) -> None:
    shipped = (REPO_ROOT / "fastgate" / "contrib" / "fastgate.service").read_text()

    def unit(*args: str) -> str:
        cmd = [sys.executable, "-m", "fastgate", "systemd-unit", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout

    # One source: the command prints the contrib file, ExecStart aside.
    assert unit("--exec", "/usr/local/bin/fastgate") == shipped
    printed = unit()
    diff = [
        (a, b) for a, b in zip(shipped.splitlines(), printed.splitlines(), strict=True) if a != b
    ]
    assert len(diff) == 1 and diff[0][1].startswith("ExecStart="), diff
    program = diff[0][1].removeprefix("ExecStart=").split()[0]
    assert os.access(program, os.X_OK)
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "StateDirectory=fastgate",
        "LogsDirectory=fastgate",
        "LimitNOFILE=65536",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in printed.splitlines(), line
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (an optional system tool)")
    path = tmp_path / "fastgate.service"
    path.write_text(printed)
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert str(path) not in res.stderr, res.stderr  # no warning about the unit itself


class _ReadOnlyConfigDir(Gateway):
    """The server in a mount namespace where its config directory is read-only, as
    ProtectSystem=strict makes /etc/fastgate."""

    def command(self) -> list[str]:
        d = str(self.dir)
        mount = f'mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec "$@"'
        return [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount,
            "sh",
            *super().command(),
        ]


def _can_mount_read_only(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    d = tmp / "probe"
    d.mkdir()
    script = f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && ! touch {d}/x 2>/dev/null"
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True)  # fmt: skip
    return res.returncode == 0


def test_state_and_logs_directories_keep_the_config_dir_untouched(tmp_path: Path) -> None:
    """$STATE_DIRECTORY and $LOGS_DIRECTORY (StateDirectory=, LogsDirectory=) hold the
    database, the spool and the access log when the config names none; the config's
    directory is read-only (where the kernel lets the test make it so) and nothing
    is written there."""
    key = make_key()
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    text = config([key])  # no [database], no access_log, no spool dir
    read_only = _can_mount_read_only(tmp_path)
    cls = _ReadOnlyConfigDir if read_only else Gateway
    gw = cls(tmp_path / "etc", text, args=["--workers", "2"],
             env={"STATE_DIRECTORY": str(state), "LOGS_DIRECTORY": str(logs)})  # fmt: skip
    gw.config_path.write_text(text)  # the harness added an access_log: not this time
    try:
        gw.start()
        assert [chat(gw.port, key) for _ in range(5)] == [200] * 5
        assert gw.stop() == 0, gw.stderr_text()[-2000:]
    finally:
        gw.close()
    assert sorted(p.name for p in gw.dir.iterdir()) == ["fastgate.toml"], read_only
    con = sqlite3.connect(state / "fastgate.db")
    try:
        rows = con.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    finally:
        con.close()
    lines = len((logs / "access.log").read_text().splitlines())
    spool = sorted(p.name for p in (state / "usage-spool").iterdir())
    assert (rows, lines) == (5, 5), (spool, gw.stderr_text()[-3000:])
    assert (state / "usage-spool").is_dir()
    print("config directory read-only:", read_only)
