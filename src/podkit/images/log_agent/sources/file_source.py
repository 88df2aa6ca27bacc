"""File source: tail files matching glob patterns (Fluent Bit `tail`, Vector `file`).

Polls every `poll_interval` (0.25 s): new files are found within one interval, appended lines are
read, rename/create rotation is followed (the old file is read to its end, the new one from its
start), truncation (copytruncate) restarts at offset 0, and a partial last line is held until its
newline arrives (or emitted once a rotated-away file is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import stat
import time
from dataclasses import dataclass, field

from podkit.images.log_agent.config import FileSource as FileSourceConfig
from podkit.images.log_agent.event import RawRecord
from podkit.images.log_agent.file_tracker import (
    FileId,
    diff_scan,
    is_excluded,
    should_close,
    start_offset,
)
from podkit.images.log_agent.lines import LineSplitter
from podkit.images.log_agent.pipeline import Pipeline

log = logging.getLogger("log-agent.file")
READ_SIZE = 256 * 1024


@dataclass
class _Tailed:
    fid: FileId
    path: str
    fd: int
    offset: int
    splitter: LineSplitter
    gone: bool = False
    idle_since: float = field(default_factory=time.monotonic)


class FileSource:
    def __init__(self, id: str, config: FileSourceConfig, pipeline: Pipeline) -> None:
        self.id = id
        self._cfg = config
        self._pipeline = pipeline
        self._files: dict[FileId, _Tailed] = {}
        self._warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return ", ".join(self._cfg.paths)

    async def start(self) -> None:
        self._rescan(first=True)
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Lines appended since the last poll are on disk already: pick them up before leaving.
        with contextlib.suppress(OSError):
            await self._read_all(final=True)
        for tailed in self._files.values():
            os.close(tailed.fd)
        self._files.clear()

    async def _poll(self) -> None:
        while True:
            try:
                self._rescan(first=False)
                await self._read_all(final=False)
            except OSError as exc:  # e.g. a directory vanished mid-scan: try again next tick
                log.warning("file scan failed", extra={"component": self.id, "error": str(exc)})
            await asyncio.sleep(self._cfg.poll_interval)

    def _matching(self) -> dict[FileId, str]:
        found: dict[FileId, str] = {}
        for pattern in self._cfg.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if is_excluded(path, self._cfg.exclude):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished between glob and stat
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), path)
        return found

    def _rescan(self, *, first: bool) -> None:
        tracked = {fid: t.path for fid, t in self._files.items()}
        gone = [fid for fid, t in self._files.items() if t.gone]
        diff = diff_scan(tracked, gone, self._matching())
        for fid in diff.gone:
            self._files[fid].gone = True
            self._files[fid].idle_since = time.monotonic()
        for fid in diff.back:
            self._files[fid].gone = False
        for fid, path in diff.moved:
            self._files[fid].path = path
        for fid, path in diff.new:
            self._open(fid, path, first=first)

    def _open(self, fid: FileId, path: str, *, first: bool) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
        except OSError as exc:
            if path not in self._warned:  # once per path, not every poll
                self._warned.add(path)
                log.warning("cannot open file", extra={"path": path, "error": exc.strerror})
            return
        if (st.st_dev, st.st_ino) != fid:  # replaced between stat and open: next scan sees it
            os.close(fd)
            return
        offset = start_offset(st.st_size, first_scan=first, read_from=self._cfg.read_from)
        self._files[fid] = _Tailed(fid, path, fd, offset, LineSplitter(self._cfg.max_line_bytes))
        log.info("following file", extra={"path": path, "offset": offset})

    async def _read_all(self, *, final: bool) -> None:
        now = time.monotonic()
        for tailed in list(self._files.values()):
            grew = await self._read(tailed)
            if grew:
                tailed.idle_since = now
            elif tailed.gone and (
                final or should_close(tailed.idle_since, now, self._cfg.rotate_wait)
            ):
                self._close(tailed)

    async def _read(self, t: _Tailed) -> bool:
        if os.fstat(t.fd).st_size < t.offset:
            log.warning("file truncated, reading from its start", extra={"path": t.path})
            t.offset = 0
            t.splitter.reset()
        grew = False
        while True:
            data = os.pread(t.fd, READ_SIZE, t.offset)
            if not data:
                return grew
            grew = True
            t.offset += len(data)
            lines = t.splitter.feed(data)
            if t.splitter.cut_lines:
                self._pipeline.counters.cut(self.id, t.splitter.cut_lines)
                t.splitter.cut_lines = 0
            now = time.time()
            records = [self._record(line, t.path, now) for line in lines]
            await self._pipeline.ingest(self.id, records, len(data))
            if len(data) == READ_SIZE:
                await asyncio.sleep(0)  # a big backlog must not starve the sockets

    def _record(self, line: bytes, path: str, now: float) -> RawRecord:
        return RawRecord(
            line.decode("utf-8", "replace"),
            "file",
            now,
            file=path,
            container=self._cfg.container_name,
        )

    def _close(self, t: _Tailed) -> None:
        rest = t.splitter.flush()  # the file will not grow again: its last line is complete
        if rest is not None:
            self._pipeline.ingest_nowait(self.id, [self._record(rest, t.path, time.time())], 0)
        os.close(t.fd)
        del self._files[t.fid]
        log.info("closed rotated file", extra={"path": t.path})
