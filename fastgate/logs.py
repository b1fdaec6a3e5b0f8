"""Application logs: plain text (default) or one JSON object per line.

`setup(level, fmt)` configures the root logger once per process (the
supervisor's setup is inherited by its forked workers; the usage writer
process calls it with the format it is given). `--log-format json` or
`[logging] format = "json"` gives lines like

    {"ts": "2026-12-04T20:45:01.123Z", "level": "WARNING", "logger": "fastgate.gateway",
     "message": "...", "pid": 4242, "request_id": "fg-...", "channel": "a", "kind": "HTTP 500"}

`ts` is UTC (ISO 8601, milliseconds); `request_id` (and any other field a call
passes with `extra=`) is there when the line concerns a request. An exception
comes as `exc` (its formatted traceback). `announce` prints the lines a person
or a script waits for ("listening on ..."): `fastgate: ...` as text, a JSON
line with the same message in JSON mode.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The format this process logs in (the writer process is started with it).
current = "text"

# What every LogRecord has: anything else was passed with `extra=` and is shown.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, pid, and extras."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        ms = int((t - int(t)) * 1000)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out).decode()


def setup(level: str | int, fmt: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """Log to stderr at `level` in `fmt` ("text" or "json"); replaces earlier handlers."""
    global current
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    current = fmt


def announce(message: str) -> None:
    """A line someone waits for on stderr: `fastgate: message`, or as a JSON log line."""
    if current == "json":
        record = logging.LogRecord("fastgate", logging.INFO, "", 0, message, None, None)
        line = JsonFormatter().format(record)
    else:
        line = f"fastgate: {message}"
    print(line, file=sys.stderr, flush=True)


__all__ = ["FORMATS", "JsonFormatter", "announce", "setup"]
