"""JSON access log lines, buffered and written once per ticker turn (one write per request would
cost more than proxying a small request)."""

from __future__ import annotations

import select
from pathlib import Path
from typing import IO, Any

import orjson

from podkit.common import stdout

FLUSH_BYTES = 64 * 1024


class AccessLog:
    def __init__(self, path: Path | None) -> None:
        self._file: IO[bytes] | None = path.open("ab") if path is not None else None
        self._lines: list[bytes] = []
        self._size = 0

    def write(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        lines = self._lines
        if not lines:
            return
        self._lines = []
        self._size = 0
        if self._file is not None:
            self._file.write(b"".join(lines))
            self._file.flush()
            return
        # stdout is a pipe the workers share: a write of at most PIPE_BUF bytes is never
        # interleaved with another process's, so lines go in whole groups that fit.
        group: list[bytes] = []
        size = 0
        for line in lines:
            if group and size + len(line) > select.PIPE_BUF:
                stdout.write(b"".join(group))
                group, size = [], 0
            group.append(line)
            size += len(line)
        stdout.write(b"".join(group))

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
