"""Container output: CRI log files (as under /var/log/pods) and the prefixed terminal stream."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

# containerd splits lines longer than this into partial (P) records.
CRI_MAX_LINE = 16 * 1024
Tee = Callable[[str, bytes], None]  # (stream, data): a copy of a container's output
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
    tee: Tee | None = None,
) -> None:
    """Copy a container's pipe to its CRI log, the terminal and `tee` (attached clients)
    until EOF."""
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
        if tee is not None:
            tee(stream, line)
        if terminal is not None:
            terminal.line(name, line.rstrip(b"\n").decode(errors="replace"))


async def pump_terminal(
    master: int, log: ContainerLog, terminal: Terminal | None, name: str, tee: Tee
) -> None:
    """A `tty: true` container's output, from its terminal's master, as it comes (a prompt
    has no newline), until the container's side closes (EIO): to its log as stdout, the
    terminal and the attached clients."""
    async for chunk in terminal_output(master):
        for line in chunk.replace(b"\n", b"\n\0").split(b"\0"):  # lines, with their ends
            if line:
                log.write("stdout", line)  # one record per line; a last partial one is P
        tee("stdout", chunk)
        if terminal is not None:
            for line in chunk.rstrip(b"\r\n").split(b"\n"):
                terminal.line(name, line.rstrip(b"\r").decode(errors="replace"))


async def terminal_output(master: int) -> AsyncIterator[bytes]:
    """What a pseudo-terminal shows, chunk by chunk, until no process holds its other side
    (EIO on the master)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(master, ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO
                return
            if not chunk:
                return
            yield chunk
    finally:
        loop.remove_reader(master)
