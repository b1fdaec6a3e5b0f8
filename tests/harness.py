"""Run a real fastgate process for functional tests, and a few raw-socket helpers.

`Gateway` writes a TOML config into a temp dir, spawns `python -m fastgate serve
--config FILE --port 0`, learns the port from the one "listening on" line the server
prints to stderr, and reads the JSONL access log the harness configures. stderr and
stdout are drained by threads so the child can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTEN_RE = re.compile(r"listening on http://([^:\s]+):(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _die_with_parent() -> None:
    """Child-side: ask Linux to SIGKILL us when the test process dies, so a killed
    pytest never leaves an orphaned gateway behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def make_key() -> str:
    """A fastgate key of the documented shape: "fg-" + 43 base64url characters."""
    return "fg-" + secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- TOML rendering


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """Render a Python value as a TOML value (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {type(v).__name__} as TOML")


def toml_table(name: str, values: dict[str, Any], *, array: bool = False) -> str:
    """`[name]` (or `[[name]]`) followed by key = value lines; None values are skipped."""
    head = f"[[{name}]]" if array else f"[{name}]"
    lines = [head]
    lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def channel(
    name: str, base_url: str, models: list[str], *, api_key: str | None = None, **kw: Any
) -> dict[str, Any]:
    """A `[[channels]]` entry of type openai (override with type=...)."""
    d: dict[str, Any] = {
        "name": name,
        "type": "openai",
        "base_url": base_url,
        "api_key": api_key if api_key is not None else f"sk-upstream-{name}",
        "models": list(models),
    }
    d.update(kw)
    return d


def token(name: str, key: str, **kw: Any) -> dict[str, Any]:
    """A `[[tokens]]` entry with a plaintext key."""
    d: dict[str, Any] = {"name": name, "key": key}
    d.update(kw)
    return d


def gateway_config(
    channels: list[dict[str, Any]] = (),  # type: ignore[assignment]
    tokens: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    server: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
    aliases: dict[str, str] | None = None,
    logging: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
    prices: list[dict[str, Any]] | None = None,
    extra: str = "",
) -> str:
    """Render a fastgate TOML config (docs/contract.md section 2 key names)."""
    parts: list[str] = []
    if server:
        parts.append(toml_table("server", server))
    if routing:
        parts.append(toml_table("routing", routing))
    if aliases:
        parts.append(toml_table("aliases", aliases))
    if logging:
        parts.append(toml_table("logging", logging))
    parts += [toml_table("channels", c, array=True) for c in channels]
    parts += [toml_table("tokens", t, array=True) for t in tokens]
    parts += [toml_table("groups", g, array=True) for g in groups or ()]
    parts += [toml_table("prices", p, array=True) for p in prices or ()]
    if extra:
        parts.append(extra.strip() + "\n")
    return "\n".join(parts)


def _ensure_access_log(toml_text: str, path: Path) -> str:
    """Point `[logging] access_log` at `path` unless the config sets one already."""
    if re.search(r"(?m)^\s*access_log\s*=", toml_text):
        return toml_text
    line = f"access_log = {json.dumps(str(path))}"
    m = re.search(r"(?m)^\[logging\]\s*$", toml_text)
    if m:
        return toml_text[: m.end()] + "\n" + line + toml_text[m.end() :]
    # Prepend so the table cannot swallow keys of a following [[array]] table.
    return f"[logging]\n{line}\n\n" + toml_text


# --------------------------------------------------------------------------- the process


class Gateway:
    """One fastgate server process with its own config directory."""

    def __init__(
        self,
        tmp_path: Path | str,
        toml_text: str,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.access_log_path = self.dir / "access.jsonl"
        self.config_path = self.dir / "fastgate.toml"
        self.toml_text = _ensure_access_log(toml_text, self.access_log_path)
        self.config_path.write_text(self.toml_text)
        self.args = list(args or [])
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self._stderr = bytearray()
        self._stdout = bytearray()
        self._buf_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "fastgate", "serve", "--config", str(self.config_path)]
        if "--port" not in self.args:
            cmd += ["--port", "0"]
        if "--host" not in self.args:
            cmd += ["--host", "127.0.0.1"]
        return cmd + self.args

    def start(self, timeout: float = 15) -> Gateway:
        """Spawn the server and wait for its listening line."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(self.dir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._threads = [
            threading.Thread(
                target=self._drain, args=(self.proc.stderr, self._stderr), daemon=True
            ),
            threading.Thread(
                target=self._drain, args=(self.proc.stdout, self._stdout), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.stderr_text())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                if self.host in ("0.0.0.0", "::", "[::]"):
                    self.host = "127.0.0.1"
                return self
            if self.proc.poll() is not None:
                time.sleep(0.05)  # let the drain threads catch the last words
                raise RuntimeError(
                    f"fastgate exited with {self.proc.returncode} before listening:\n"
                    f"{self.stderr_text()}\n{self.stdout_text()}"
                )
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"fastgate did not listen within {timeout} s:\n{self.stderr_text()}")

    def _drain(self, pipe: Any, buf: bytearray) -> None:
        while True:
            data = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not data:
                break
            with self._buf_lock:
                buf.extend(data)

    def stderr_text(self) -> str:
        with self._buf_lock:
            return self._stderr.decode("utf-8", "replace")

    def stdout_text(self) -> str:
        with self._buf_lock:
            return self._stdout.decode("utf-8", "replace")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 35) -> int:
        """Signal the server and wait for it to exit; return its exit code.

        Raises TimeoutError (after killing it) if it does not exit in time.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(
                    f"fastgate did not exit within {timeout} s after signal {sig}:\n"
                    f"{self.stderr_text()[-4000:]}"
                ) from None
        self._join_drains()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group leader if it is still running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._join_drains()

    def close(self) -> None:
        """Stop gracefully if possible, else kill. Never raises."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(5)
        self.kill()

    def _join_drains(self) -> None:
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> Gateway:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ access log

    def access_log_records(self) -> list[dict[str, Any]]:
        """Every complete JSON line of the access log so far."""
        try:
            data = self.access_log_path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # the last piece is "" or a partial line
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def wait_records(self, n: int, timeout: float = 5) -> list[dict[str, Any]]:
        """Wait until the access log holds at least n records; return all of them."""
        deadline = time.monotonic() + timeout
        recs = self.access_log_records()
        while len(recs) < n and time.monotonic() < deadline:
            time.sleep(0.05)
            recs = self.access_log_records()
        if len(recs) < n:
            raise AssertionError(f"expected >= {n} access log records, got {len(recs)}: {recs}")
        return recs

    def record_for(self, request_id: str, timeout: float = 5) -> dict[str, Any]:
        """The access log record with this request_id (waits for it to be flushed)."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.access_log_records():
                if rec.get("request_id") == request_id:
                    return rec
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no access log record for {request_id!r}: {self.access_log_records()}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ resources

    def _pids(self, include_children: bool) -> list[int]:
        pids = [self.pid]
        if include_children:
            pids += children_pids(self.pid)
        return pids

    def rss_bytes(self, include_children: bool = False) -> int:
        """Resident set size from /proc/PID/status (summed over workers if asked)."""
        total = 0
        for pid in self._pids(include_children):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def cpu_seconds(self, include_children: bool = False) -> float:
        """utime + stime from /proc/PID/stat, in seconds."""
        total = 0.0
        for pid in self._pids(include_children):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return total

    def open_fds(self) -> int:
        """Number of open file descriptors of the main process."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def children_pids(pid: int) -> list[int]:
    """Direct children of pid (from /proc/PID/task/*/children)."""
    out: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                out += [int(x) for x in text.split()]
    return out


# --------------------------------------------------------------------------- raw sockets


def raw_request(host: str, port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything received until the peer closes or
    `read_timeout` seconds pass without new data."""
    with socket.create_connection((host, port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                got = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not got:
                break
            chunks.append(got)
    return b"".join(chunks)


def http_request_bytes(
    method: str,
    path: str,
    host: str,
    body: bytes = b"",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    close: bool = True,
) -> bytes:
    """Build an HTTP/1.1 request with content-length (and Connection: close by default)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    names = {k.lower() for k, _ in pairs}
    lines += [f"{k}: {v}" for k, v in pairs]
    framed = "content-length" in names or "transfer-encoding" in names
    if (body or method in ("POST", "PUT", "PATCH")) and not framed:
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_sse(data: bytes) -> list[dict[str, str]]:
    """Split an SSE byte stream into events: dicts with "event" (if any) and "data"."""
    events = []
    for block in re.split(rb"\r?\n\r?\n", data):
        if not block.strip():
            continue
        ev: dict[str, str] = {}
        datas = []
        for line in block.splitlines():
            name, _, value = line.decode("utf-8", "replace").partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                datas.append(value)
            elif name == "event":
                ev["event"] = value
        if datas:
            ev["data"] = "\n".join(datas)
        if ev:
            events.append(ev)
    return events
