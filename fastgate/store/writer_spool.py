"""The usage sink's backlogs: fsync'd JSON-lines spool files, or memory.

Split from logsink.py (which drives them) to keep each module readable; the
file format and locking rules are described in logsink.py's docstring.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson

from fastgate.vocab.record import record_dict

__all__ = ["_DiskSpool", "_MemoryBacklog", "_json_line"]

log = logging.getLogger("fastgate.sink")

_SPOOL_NAME = re.compile(r"spool-(\d+)\.jsonl")
_WRITE_CHUNK = 250  # records encoded per write() when a batch is spooled


def _json_line(record: Any) -> bytes:
    # One JSON object per record (a record tuple gets its field names); orjson
    # encodes (slotted) dataclasses natively, and fast.
    return orjson.dumps(record_dict(record)) + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _seq(path: str) -> int:
    m = _SPOOL_NAME.fullmatch(os.path.basename(path))
    return int(m.group(1)) if m else 0


class _MemoryBacklog:
    """Failed batches kept in memory (no spool directory configured)."""

    def __init__(self, limit: int) -> None:
        self.batches: deque[list[Any]] = deque()
        self.count = 0
        self.limit = limit
        self.lost = 0

    def pending(self) -> bool:
        return bool(self.batches)

    def append(self, batch: list[Any]) -> None:
        self.batches.append(batch)
        self.count += len(batch)
        while self.count > self.limit and len(self.batches) > 1:
            old = self.batches.popleft()
            self.count -= len(old)
            self.lost += len(old)

    def oldest(self) -> Any:
        return self.batches[0] if self.batches else None

    def chunks(self, handle: Any, size: int) -> Iterator[list[Any]]:
        for i in range(0, len(handle), size):
            yield handle[i : i + size]

    def commit(self, handle: Any) -> None:
        self.count -= len(self.batches.popleft())

    def release(self, handle: Any) -> None:
        pass

    def rescan(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _DiskSpool:
    """Append-only, fsync'd JSON-lines files, replayed oldest first."""

    def __init__(self, directory: str, max_file_records: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.max_file_records = max_file_records
        self.files: list[str] = []  # closed files waiting for replay, oldest first
        self.counts: dict[str, int] = {}
        self.cur_fd: int | None = None
        self.cur_path = ""
        self.cur_count = 0
        self.last_n = 0
        self.count = 0  # records in files this process knows about
        self.corrupt = 0
        self.rescan()

    def rescan(self) -> int:
        """Pick up spool files on disk that this process does not know yet."""
        known = set(self.files) | {self.cur_path}
        found = []
        for name in os.listdir(self.dir):
            m = _SPOOL_NAME.fullmatch(name)
            path = os.path.join(self.dir, name)
            if m is None or path in known:
                continue
            found.append((int(m.group(1)), path))
            self.last_n = max(self.last_n, int(m.group(1)))
        if not found:
            return 0
        for _, path in sorted(found):
            try:
                with open(path, "rb") as f:
                    n = sum(1 for line in f if line.strip())
            except OSError:
                continue
            self.files.append(path)
            self.counts[path] = n
            self.count += n
        self.files.sort(key=_seq)
        return len(found)

    def pending(self) -> bool:
        return bool(self.files) or self.cur_count > 0

    def _open_new(self) -> None:
        n = max(time.time_ns(), self.last_n + 1)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        while True:
            path = os.path.join(self.dir, f"spool-{n:020d}.jsonl")
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                n += 1
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we append: no one replays it
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # Another process took the empty file for a replay and removed it.
            os.close(fd)
            n += 1
        _fsync_dir(self.dir)
        self.last_n = n
        self.cur_fd, self.cur_path, self.cur_count = fd, path, 0

    def _rotate(self) -> None:
        if self.cur_fd is None:
            return
        os.close(self.cur_fd)  # releases the lock
        if self.cur_count:
            self.files.append(self.cur_path)
            self.counts[self.cur_path] = self.cur_count
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.cur_path)
        self.cur_fd, self.cur_path, self.cur_count = None, "", 0

    def append(self, batch: list[Any]) -> None:
        if self.cur_fd is None or self.cur_count >= self.max_file_records:
            self._rotate()
            self._open_new()
        assert self.cur_fd is not None
        for i in range(0, len(batch), _WRITE_CHUNK):  # bounded buffers, one fsync
            _write_all(self.cur_fd, b"".join([_json_line(r) for r in batch[i : i + _WRITE_CHUNK]]))
        os.fsync(self.cur_fd)
        self.cur_count += len(batch)
        self.count += len(batch)

    def oldest(self) -> Any:
        """The oldest file, locked for replay: a handle for `chunks`, then `commit`
        (delete it) or `release` (keep it for the next attempt); None: nothing."""
        if not self.files:
            self._rotate()
        while self.files:
            path = self.files[0]
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._forget(path)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except (BlockingIOError, FileNotFoundError):
                same = False  # another process writes or replays it
            if not same:
                os.close(fd)
                self._forget(path)
                continue
            return path, fd
        return None

    def chunks(self, handle: Any, size: int) -> Iterator[list[Any]]:
        """The records of a file from `oldest`, at most `size` at a time, read as they
        are written: only one chunk is in memory (a whole file parsed at once was what
        an outage left the writer process bigger by)."""
        path, fd = handle
        with os.fdopen(os.dup(fd), "rb") as f:  # a dup shares the offset: rewind
            f.seek(0)
            chunk: list[Any] = []
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    chunk.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    self.corrupt += 1
                    log.error("usage spool %s: line %d is not valid JSON (skipped)", path, i + 1)
                    continue
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    def _forget(self, path: str) -> None:
        self.files.remove(path)
        self.count -= self.counts.pop(path, 0)

    def commit(self, handle: Any) -> None:
        path, fd = handle
        try:
            os.unlink(path)
            _fsync_dir(self.dir)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        if path in self.files:
            self._forget(path)

    def release(self, handle: Any) -> None:
        os.close(handle[1])

    def close(self) -> None:
        self._rotate()
