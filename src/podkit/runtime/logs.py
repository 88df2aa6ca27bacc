"""Container output: CRI log files (as under /var/log/pods) and the prefixed terminal stream."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

# containerd splits lines longer than this into partial (P) records.
CRI_MAX_LINE = 16 * 1024
_COLOURS = ["36", "35", "33", "32", "34", "91", "96", "95"]


def cri_timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def cri_records(stream: str, line: bytes) -> list[bytes]:
    """One output line (with or without its newline) as CRI log records."""
    full = line.endswith(b"\n")
    body = line[:-1] if full else line
    chunks = [body[i : i + CRI_MAX_LINE] for i in range(0, len(body), CRI_MAX_LINE)] or [b""]
    ts = cri_timestamp().encode()
    out = []
    for i, chunk in enumerate(chunks):
        tag = b"F" if full and i == len(chunks) - 1 else b"P"
        out.append(b"%s %s %s %s\n" % (ts, stream.encode(), tag, chunk))
    return out


class Terminal:
    """Writes container lines with a coloured `[container]` prefix."""

    def __init__(self, out: TextIO | None = None, colour: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.colour = self.out.isatty() if colour is None else colour
        self._assigned: dict[str, str] = {}

    def prefix(self, name: str) -> str:
        if not self.colour:
            return f"[{name}]"
        code = self._assigned.setdefault(name, _COLOURS[len(self._assigned) % len(_COLOURS)])
        return f"\x1b[{code}m[{name}]\x1b[0m"

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{self.prefix(name)} {text}\n")
        self.out.flush()


class ContainerLog:
    """Appends one container instance's stdout and stderr to `<dir>/<restartCount>.log`."""

    def __init__(self, directory: Path, restart_count: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{restart_count}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def write(self, stream: str, line: bytes) -> None:
        os.write(self._fd, b"".join(cri_records(stream, line)))

    def close(self) -> None:
        os.close(self._fd)


async def pump(
    reader: asyncio.StreamReader,
    stream: str,
    log: ContainerLog,
    terminal: Terminal | None,
    name: str,
) -> None:
    """Copy a container's pipe to its CRI log and the terminal until EOF."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
        except asyncio.LimitOverrunError as exc:
            line = await reader.readexactly(exc.consumed)
        if not line:
            return
        log.write(stream, line)
        if terminal is not None:
            terminal.line(name, line.rstrip(b"\n").decode(errors="replace"))
