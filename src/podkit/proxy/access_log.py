"""JSON access log lines, buffered and written once per ticker turn (one write per request would
cost more than proxying a small request)."""

from __future__ import annotations

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
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        if self._file is not None:
            self._file.write(data)
            self._file.flush()
        else:
            stdout.write(data)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
