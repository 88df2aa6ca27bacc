"""What changed on disk, for the file source: inotify through ctypes, or polling without it.

`Watcher.wait()` returns the followed files that were written (by key), whether a watched
directory changed (a file was created, renamed or deleted: rescan the globs), or that
everything must be looked at (the event queue overflowed). inotify makes a write or a new file
show up at once; without it (no inotify, or the watch limit reached: `polling`) the caller
looks at everything every `poll_interval`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import struct
from dataclasses import dataclass, field

log = logging.getLogger("log-agent.file")

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Files: written, truncated, or unlinked/renamed (nlink, rotation checks).
FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
DIR_MASK = IN_ONLYDIR | IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class Inotify:
    """A non-blocking inotify instance (Linux), through libc."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def open(cls) -> Inotify | None:
        """None where inotify is not available (not Linux, no libc, out of instances)."""
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable, polling", extra={"error": _strerror()})
            return None
        return cls(libc, fd)

    def add_watch(self, path: str, mask: int) -> int:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def rm_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch already gone

    def read(self) -> list[tuple[int, int, int, str]]:
        """Pending events as (wd, mask, cookie, name): name is "" for a watched file's own."""
        events: list[tuple[int, int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            pos = 0
            while pos + _HEADER.size <= len(data):
                wd, mask, cookie, length = _HEADER.unpack_from(data, pos)
                start = pos + _HEADER.size
                name = os.fsdecode(data[start : start + length].rstrip(b"\0"))
                events.append((wd, mask, cookie, name))
                pos = start + length

    def close(self) -> None:
        os.close(self.fd)


def _strerror() -> str:
    return os.strerror(ctypes.get_errno())


@dataclass
class Changes:
    files: set[str] = field(default_factory=set)  # keys of followed files that changed
    dirs: bool = False  # a watched directory changed: rescan the globs
    # Renames in watched directories, (from, to): a file renamed before any scan saw it at
    # its old name is found through this.
    moves: list[tuple[str, str]] = field(default_factory=list)
    everything: bool = False  # look at every file and rescan


class Watcher:
    def __init__(self, *, use_inotify: bool = True) -> None:
        self._use_inotify = use_inotify
        self._ino: Inotify | None = None  # opened by start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._file_wds: dict[int, set[str]] = {}
        self._key_wd: dict[str, int] = {}
        self._dir_wds: dict[str, int] = {}
        self._wd_dirs: dict[int, str] = {}
        self._degraded = False  # some watch could not be added: poll as well
        self._moved_from: dict[int, str] = {}  # rename cookie -> old path, until its MOVED_TO
        self._pending = Changes()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def inotify(self) -> bool:
        return self._ino is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ino = Inotify.open() if self._use_inotify else None
        if self._ino is not None:
            self._loop.add_reader(self._ino.fd, self._on_readable)

    def close(self) -> None:
        if self._ino is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._ino.fd)
            self._ino.close()
            self._ino = None

    def watch_file(self, key: str, fd: int, path: str) -> None:
        """Watch an open file's inode (through /proc/self/fd: not whatever `path` is now)."""
        if self._ino is None:
            return
        target = f"/proc/self/fd/{fd}" if os.path.exists(f"/proc/self/fd/{fd}") else path
        wd = self._add(target, FILE_MASK)
        if wd is not None:
            self._key_wd[key] = wd
            self._file_wds.setdefault(wd, set()).add(key)

    def unwatch_file(self, key: str) -> None:
        wd = self._key_wd.pop(key, None)
        if wd is None or self._ino is None:
            return
        keys = self._file_wds.get(wd, set())
        keys.discard(key)
        if not keys:
            self._file_wds.pop(wd, None)
            self._ino.rm_watch(wd)

    def watch_dirs(self, dirs: set[str]) -> None:
        """Watch exactly these directories (for new, renamed and deleted files)."""
        if self._ino is None:
            return
        for d in set(self._dir_wds) - dirs:
            wd = self._dir_wds.pop(d)
            self._wd_dirs.pop(wd, None)
            if wd not in self._file_wds:
                self._ino.rm_watch(wd)
        for d in dirs - set(self._dir_wds):
            added = self._add(d, DIR_MASK)
            if added is not None:
                self._dir_wds[d] = added
                self._wd_dirs[added] = d

    def mark(self, key: str) -> None:
        """Look at this file again without waiting (it has more to read)."""
        self._pending.files.add(key)
        self._wake()

    @property
    def polling(self) -> bool:
        """True when some change may go unreported: the caller must look at everything often."""
        return self._ino is None or self._degraded

    async def wait(self, timeout: float) -> Changes:
        """Changes since the last call; waits up to `timeout` seconds for some."""
        p = self._pending
        if not (p.files or p.dirs or p.everything):
            await self._sleep(max(timeout, 0.0))
        changes, self._pending = self._pending, Changes()
        return changes

    async def _sleep(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _add(self, path: str, mask: int) -> int | None:
        assert self._ino is not None
        try:
            return self._ino.add_watch(path, mask)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM) and not self._degraded:
                log.warning("inotify watch limit reached, polling", extra={"path": path})
                self._degraded = True
            # ENOENT and the like: gone already; the next scan sees it
            return None

    def _on_readable(self) -> None:
        assert self._ino is not None
        p = self._pending
        for wd, mask, cookie, name in self._ino.read():
            if mask & IN_Q_OVERFLOW:
                p.everything = True
                continue
            keys = self._file_wds.get(wd)
            if keys:
                p.files |= keys
            d = self._wd_dirs.get(wd)
            if d is not None:
                p.dirs = True
                self._note_move(mask, cookie, os.path.join(d, name))
            if mask & IN_IGNORED:  # the watch is gone (file deleted, directory removed)
                for key in self._file_wds.pop(wd, set()):
                    self._key_wd.pop(key, None)
                d = self._wd_dirs.pop(wd, None)
                if d is not None:
                    self._dir_wds.pop(d, None)
        self._wake()

    def _note_move(self, mask: int, cookie: int, path: str) -> None:
        if mask & IN_MOVED_FROM:
            if len(self._moved_from) > 1000:  # halves of pairs that never came (moved out)
                self._moved_from.clear()
            self._moved_from[cookie] = path
        elif mask & IN_MOVED_TO and cookie in self._moved_from:
            self._pending.moves.append((self._moved_from.pop(cookie), path))
