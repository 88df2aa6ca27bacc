"""Access lines: Common Log Format plus the request time in seconds, e.g.

    127.0.0.1 - - [25/Nov/2026:22:15:08 +0000] "GET / HTTP/1.1" 200 512 0.0012

Each line goes to stdout, to $ACCESS_LOG_DIR/access.log (when set) and to the pod's log agent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from podkit.common import stdout
from podkit.common.clock import rfc3339
from podkit.common.httpserver import Request, Response
from podkit.common.log_shipper import LogShipper

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clf_time(t: float) -> str:
    """[25/Nov/2026:22:15:08 +0000]'s inside, in UTC and independent of the locale."""
    g = time.gmtime(t)
    return (
        f"{g.tm_mday:02d}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year}:"
        f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
    )


def format_access_line(
    *,
    remote: str | None,
    when: float,
    method: str,
    target: str,
    version: str,
    status: int,
    size: int,
    duration: float,
    user: str | None = None,
) -> str:
    # Quotes and backslashes in the target are escaped as nginx does, so parsers stay in step.
    target = target.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'{remote or "-"} - {user or "-"} [{clf_time(when)}] "{method} {target} {version}" '
        f"{status} {size} {duration:.4f}"
    )


class AccessLogFile:
    """Appends lines to one file, one write(2) per line (O_APPEND), so a tailer sees each at once.

    Like Python's WatchedFileHandler it reopens the path when the file was renamed or deleted,
    so rename rotation needs no signal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._id: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)

    def write(self, line: bytes) -> None:
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._id
        except FileNotFoundError:
            moved = True
        if moved:
            os.close(self._fd)
            self._open()
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class AccessLog:
    """Fans each access line out to stdout, the file and the log agent; counts requests."""

    def __init__(
        self, *, file: AccessLogFile | None, shipper: LogShipper | None, container: str
    ) -> None:
        self.file = file
        self.shipper = shipper
        self.container = container
        self.requests = 0
        self.on_request: list[Callable[[str, int], None]] = []  # (method, status) observers
        self._log = logging.getLogger("simple-webapp.access")

    def record(self, line: str, *, method: str, status: int, when: float) -> None:
        self.requests += 1
        data = line.encode() + b"\n"
        stdout.write(data)
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError as exc:  # a full disk must not fail the request
                self._log.warning("access log write failed", extra={"error": str(exc)})
        if self.shipper is not None:
            event = {
                "message": line,
                "container": self.container,
                "stream": "access",
                "time": rfc3339(when),
            }
            self.shipper.send(orjson.dumps(event) + b"\n")
        for observer in self.on_request:
            observer(method, status)

    def log_response(
        self, request: Request, response: Response, sent: int, duration: float
    ) -> None:
        """common/httpserver.py's response hook: called once the response is written."""
        now = time.time()
        line = format_access_line(
            remote=request.remote,
            when=now - duration,
            method=request.method,
            target=request.target,
            version=f"HTTP/{request.version}",
            status=response.status,
            size=sent,  # the body bytes sent, as CLF's %b (0 for HEAD, 204 and 304)
            duration=duration,
        )
        self.record(line, method=request.method, status=response.status, when=now)
