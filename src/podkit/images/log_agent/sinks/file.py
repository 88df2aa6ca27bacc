"""The file sink (Vector `file`, Fluent Bit `file`): JSON or text lines appended to one file.

Rotation by size keeps PATH (being written), PATH.1 (newest rotated) .. PATH.N; it happens only
between payloads, so a payload (whole lines) never straddles two files. The file is re-opened
when someone else removed or renamed it (logrotate without copytruncate), found by comparing the
path's inode with ours at most once a second.

This is on the hot path (a million lines a second): a payload costs one os.write and a clock
read. Writes are made on the event loop rather than in a thread: appending to the page cache
takes microseconds, less than the hop to a worker thread would. Written means in the page
cache: it survives the agent being killed, not the machine losing power.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import Literal

from pydantic import Field

from podkit.common.config_section import Section
from podkit.images.log_agent.event import Batch, json_lines
from podkit.images.log_agent.sinks.base import Batching, RetryableError
from podkit.images.log_agent.sinks.stdout import text_lines

MiB = 1024 * 1024
# How stale our view of the path may get: a stat per payload would double the syscalls.
REOPEN_CHECK_INTERVAL = 1.0  # seconds


class FileConfig(Section):
    type: Literal["file"]
    name: str | None = None
    path: str = Field(min_length=1)
    format: Literal["json", "text"] = "json"  # json: one event a line | text: the message only
    max_bytes: int = Field(default=100 * MiB, ge=0, description="bytes; 0: never rotate")
    max_files: int = Field(default=5, ge=1, description="rotated files kept: PATH.1 .. PATH.N")


class FileSink:
    batching: Batching | None = None  # a record a send, in order

    def __init__(self, id: str, cfg: FileConfig) -> None:
        self.id = id
        self.cfg = cfg
        self.path = cfg.path
        self._encode = json_lines if cfg.format == "json" else text_lines
        self._fd: int | None = None
        self._ident = (0, 0)  # (st_dev, st_ino) of the open file
        self._size = 0  # bytes in the open file, as far as we know
        self._next_check = 0.0

    def encode(self, batch: Batch) -> bytes:
        return self._encode(batch)

    async def start(self) -> None:
        # Opened now so that a path the agent cannot write is reported at start, not later.
        try:
            self._open()
        except OSError as e:
            raise self._error(e) from e

    async def send(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            self._write(payload)
        except OSError as e:
            raise self._error(e) from e

    async def close(self) -> None:
        self._close_fd()

    def _error(self, e: OSError) -> RetryableError:
        reason = os.strerror(e.errno) if e.errno else str(e)
        return RetryableError(f"file sink {self.id}: {self.path}: {reason}")

    def _write(self, payload: bytes) -> None:
        now = time.monotonic()
        if self._fd is None or now >= self._next_check:
            self._reopen_if_moved(now)
        max_bytes = self.cfg.max_bytes
        if max_bytes and self._size and self._size + len(payload) > max_bytes:
            self._rotate()
        self._write_all(payload)

    def _write_all(self, payload: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(payload)
        written = 0
        try:
            while written < len(view):  # a short write (disk filling up) is continued
                n = os.write(fd, view[written:])
                if n == 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                written += n
        except OSError:
            if written:
                self._cut_partial(fd, written)
            raise
        self._size += written

    def _cut_partial(self, fd: int, written: int) -> None:
        # The retry writes the payload whole, so take back the part that made it: otherwise the
        # file would hold a cut line followed by the same lines again.
        # If even that fails the cut line stays; the retry still writes every line whole.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, os.fstat(fd).st_size - written)

    def _reopen_if_moved(self, now: float) -> None:
        self._next_check = now + REOPEN_CHECK_INTERVAL
        if self._fd is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._ident:
                self._size = st.st_size  # someone may have truncated it (copytruncate)
                return
        self._open()

    def _open(self) -> None:
        self._close_fd()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:  # a missing parent directory: create it, once
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        st = os.fstat(fd)
        self._fd, self._ident, self._size = fd, (st.st_dev, st.st_ino), st.st_size
        self._next_check = time.monotonic() + REOPEN_CHECK_INTERVAL

    def _rotate(self) -> None:
        self._close_fd()
        path = self.path
        # PATH.N falls off the end (replaced), each older name moves up one, PATH becomes PATH.1.
        for i in range(self.cfg.max_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}.{i}", f"{path}.{i + 1}")
        # PATH may have been removed meanwhile: the new file starts empty all the same.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, f"{path}.1")
        self._open()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
