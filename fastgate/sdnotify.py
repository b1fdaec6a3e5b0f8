"""sd_notify: tell systemd (or the supervisor) what the service is doing.

The protocol (sd_notify(3)): datagrams of newline-separated `KEY=VALUE` lines
to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace). fastgate sends `READY=1` once it serves (the port accepts
and the snapshot is loaded), `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP
reload starts and `READY=1` when it is done, `STOPPING=1` at SIGTERM/SIGINT,
and `WATCHDOG=1` every half `$WATCHDOG_USEC` from the event loop of the
process systemd watches. Without `$NOTIFY_SOCKET` every call does nothing.

With `--workers N` the supervisor is that process; its workers speak the same
lines to it over a socketpair (`Notifier(sock=...)`), and the supervisor
reports the instance: ready when every worker is, reloaded when every worker
has reloaded (`supervisor.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import MutableMapping

__all__ = ["Notifier", "parse"]

log = logging.getLogger("fastgate")

_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages to an address (`$NOTIFY_SOCKET`) or a connected
    socket (a worker's link to its supervisor). Never raises: a notification
    that cannot be sent is logged once and dropped."""

    def __init__(
        self,
        address: str = "",
        *,
        sock: socket.socket | None = None,
        watchdog_usec: int = 0,
    ) -> None:
        self.watchdog_usec = watchdog_usec
        self._address: str | bytes = ""
        self._sock = sock
        self._warned = False
        if sock is not None:
            sock.setblocking(False)
        elif address.startswith("@"):
            self._address = b"\0" + address[1:].encode()  # abstract namespace
        elif address.startswith("/"):
            self._address = address
        elif address:
            log.warning("NOTIFY_SOCKET=%r: only unix socket paths are supported; ignored", address)
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for, and the environment cleaned of it (as
        sd_notify's `unset_environment` does): the workers and writer processes
        this process starts must not talk to systemd themselves."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        usec = 0
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            with contextlib.suppress(ValueError):
                usec = max(0, int(env.get("WATCHDOG_USEC", "0")))
        for name in _ENV:
            env.pop(name, None)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float:
        """Seconds between two pings (half the watchdog timeout); 0 = no watchdog."""
        return self.watchdog_usec / 2e6 if self.enabled else 0.0

    def send(self, *lines: str) -> bool:
        sock = self._sock
        if sock is None:
            return False
        data = "\n".join(lines).encode()
        try:
            if self._address:
                sock.sendto(data, self._address)
            else:
                sock.send(data)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify %s failed: %s", lines[0] if lines else "", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def parse(data: bytes) -> dict[str, str]:
    """One sd_notify datagram as a dict (`READY=1` -> {"READY": "1"})."""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out
