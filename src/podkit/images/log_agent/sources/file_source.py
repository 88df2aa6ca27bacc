"""File source: tail files matching glob patterns (Fluent Bit `tail`, Vector `file`).

The I/O shell around the pure parts: file identity (file_tracker), delivered offsets (offsets),
lines (lines), CRI records (cri), multi-line events (multiline); change notification (inotify).

Guarantees, and how:
- Nothing is lost to a crash: a file's offset is committed (to the StateStore) only once every
  sink holds the batches before it (`OffsetTracker`), never past the start of a line still held
  (partial line, CRI P records, multiline event). A restart re-reads what was in flight: its
  events carry the same `_id` (`<file id>:<offset>`), so a sink can drop the duplicates.
- Rename rotation loses nothing: the renamed file stays open and is read until it reached EOF
  after its successor (a new file at its path) was written to, or it was deleted and drained;
  `rotate_idle_timeout` only caps the wait for a writer that never moves on.
- Rotation faster than the agent looks (a node so busy that it falls behind by several
  rotations): after every rotation it sees, the rotated copies of its files that it never
  followed are looked at. One with content it has not read (by its first bytes) is read from
  its start; copies of content it read (copytruncate's copy, a compressed copy) are not.
- Rotation while the agent was down: a file it had a checkpoint for is found again next to its
  old path by inode (or, compressed since, by its first bytes) and drained from its checkpoint;
  a rotated copy (`rotated` patterns: `app.log.1`, `app.log-20261205`) it never saw is read
  from its start when it was written after the agent last ran (`alive_at`, saved every second).
  Files drained and let go keep a checkpoint marked done while they exist, so a restart reads
  neither them again nor, compressed, their copies; only what was written to them since.
- copytruncate: a file shorter than our offset, or with other first bytes, was truncated: it is
  read again from its start, and what we had not read yet is read from the copy (a sibling
  named after it, with our first bytes). Lines written between logrotate's copy and its
  truncate are in neither file: that gap is copytruncate's, unavoidable by any reader. A line
  of the gap we had begun to read is delivered as far as we read it.
- Inode reuse: a checkpoint whose first bytes do not match is another file: read from its start.
  Found so at start-up, the checkpoint still leads to its content's compressed copy (by its
  first bytes), as when logrotate compressed the file and the new one got its inode.
- Over-long lines are cut into pieces of max_line_bytes, each line cut counted; empty lines and
  lines with invalid UTF-8 are counted too (`counters.lines`).
- Backpressure: `ingest` waits while the pipeline is full; reading simply stops meanwhile.

Globs matching the rotated names too (`app.log*`) are fine for rename rotation (same inode),
but with copytruncate they read each copy again as a new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import gzip
import logging
import os
import stat
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from podkit.images.log_agent.cri import CriAssembler, pod_metadata
from podkit.images.log_agent.event import Ack, Batch, Event, Lines
from podkit.images.log_agent.file_tracker import (
    FileKey,
    Identity,
    file_key,
    glob_match,
    glob_root,
    is_excluded,
    parent_dirs,
    plan_start,
    still_same,
)
from podkit.images.log_agent.inotify import Changes, Watcher
from podkit.images.log_agent.lines import Line, LineReader, line_events, text_events
from podkit.images.log_agent.multiline import Multiline
from podkit.images.log_agent.offsets import OffsetTracker
from podkit.images.log_agent.rotated import is_compressed, rotated_of
from podkit.images.log_agent.sources.file_config import FileSourceConfig
from podkit.images.log_agent.state import StateStore

log = logging.getLogger("log-agent.file")

Ingest = Callable[[Batch], Awaitable[None]]
STARTED = "started"  # state key: this source ran before (read_from applies to its first start)
ALIVE_AT = "alive_at"  # state key: the wall-clock time this source last ran (to the second)
SCOPE_PREFIX = "file:"  # state scope of a file source: its id follows
CHUNKS_PER_TURN = 16  # then the next file gets its turn
# Directory events come in bursts: the first scans at once, the rest at most this often.
RESCAN_MIN_INTERVAL = 0.02
GONE_KEPT = 256  # identities of content read and gone, for telling its copies apart


class LineCounter(Protocol):
    def lines(self, source_id: str, counts: tuple[int, int, int], /) -> None: ...


@dataclass(eq=False)
class _Tailed:
    """One open file and its reading state (no I/O here: `fd` is for the source to use)."""

    key: FileKey
    path: str  # where the globs found it: events' "file", kept after a rename
    fd: int
    ident: Identity | None  # None until the file has content
    gen: int  # the generation an identity made later gets
    offset: int  # next byte to read
    reader: LineReader
    cri: CriAssembler | None
    ml: Multiline | None
    tracker: OffsetTracker
    common: Event
    rotated: bool = False  # no longer at a matched path (renamed or deleted)
    rotated_at: float = field(default_factory=time.monotonic)  # when it was found rotated
    finished: bool = False  # will not grow again (the copy copytruncate made)
    retired: bool = False  # drained and closed: its checkpoint goes once its batches are done
    at_eof: bool = False
    last_growth: float = field(default_factory=time.monotonic)
    stamp: list[int] | None = None  # a compressed copy's [size, mtime_ns]: unchanged means done
    sent_to: int = 0  # where the next batch's content starts (the last batch's resume point)
    replay_until: int = 0  # what the last run had handed on: below it, reading is a replay

    def resume_point(self) -> int:
        """Where a restart must read from: the start of the first line not delivered."""
        point = self.reader.held_start
        for held in (
            self.cri.held_start() if self.cri else None,
            self.ml.held_start() if self.ml else None,
        ):
            if held is not None and held < point:
                point = held
        return point

    def take_counts(self) -> tuple[int, int, int]:
        """(cut, empty, invalid) lines since the last call (lines.LineCounts)."""
        cut, empty, invalid = self.reader.counts.take()
        if self.cri:
            cut, self.cri.cut = cut + self.cri.cut, 0
        return cut, empty, invalid

    def events(self, data: bytes, received: str, mono: float) -> list[Event] | Lines:
        """The events completed by `data`, the next bytes of the file."""
        assert self.ident is not None
        self.offset += len(data)
        offsets, texts = self.reader.feed(data)
        if self.cri is None and self.ml is None:
            return text_events(offsets, texts, received, self.ident.id)
        return line_events(self._assemble(offsets, texts, received, mono), self.ident.id)

    def held_events(self, received: str) -> list[Event]:
        """Everything still held, as events: the file is finished (or its content is gone)."""
        offsets, texts = self.reader.flush()
        lines = self._assemble(offsets, texts, received, time.monotonic())
        if self.cri:
            rest = self.cri.flush()
            lines += self.ml.feed(rest, time.monotonic()) if self.ml else rest
        if self.ml:
            lines += self.ml.flush()
        return line_events(lines, self.ident.id) if self.ident and lines else []

    def _assemble(
        self, offsets: list[int], texts: list[str], received: str, mono: float
    ) -> list[Line]:
        if self.cri is not None:
            lines = self.cri.feed(offsets, texts, received)
        else:
            lines = [(o, received, None, t) for o, t in zip(offsets, texts, strict=True)]
        return self.ml.feed(lines, mono) if self.ml else lines


class FileSource:
    def __init__(
        self,
        id: str,
        cfg: FileSourceConfig,
        ingest: Ingest,
        state: StateStore,
        counters: LineCounter,
        *,
        use_inotify: bool = True,
        orphans: dict[str, tuple[str, Any]] | None = None,
    ) -> None:
        self.id = id
        self._cfg = cfg
        self._ingest = ingest
        self._state = state
        self._counters = counters
        self._scope = f"{SCOPE_PREFIX}{id}"
        # Checkpoints of file sources no longer configured, shared by every file source: this
        # one takes over those of files it watches (a renamed source neither reads its files
        # again nor, reading from tail, skips what was written while the agent was stopped).
        self._orphans = orphans if orphans is not None else {}
        self._files: dict[FileKey, _Tailed] = {}  # open files
        self._owners: dict[FileKey, _Tailed] = {}  # whose checkpoint each key holds
        self._saved: dict[FileKey, dict[str, Any]] = {}  # checkpoints not yet claimed at start
        # Checkpoints at start whose inode holds other content now (a new file on the reused
        # inode, or truncated): their content may live on in a compressed copy. By that inode.
        self._displaced: dict[FileKey, dict[str, Any]] = {}
        self._done: dict[FileKey, dict[str, Any]] = {}  # checkpoints of files drained, let go
        # Rotated copies that are not ours to read: there at start-up and left alone, or holding
        # content we read (`_read_missed`); by key, pruned to those still there.
        self._old_copies: set[FileKey] = set()
        # Content we read that no file of ours holds now (deleted since, truncated).
        self._gone: deque[Identity] = deque(maxlen=GONE_KEPT)
        self._first_start = False
        self._last_alive: float | None = None  # when the last run was last seen alive
        self._next_alive = 0.0
        self._tmp_dir = state.path.parent  # where compressed copies are unpacked to be read
        self._watcher = Watcher(use_inotify=use_inotify)
        self._warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._next_scan = self._next_full = self._last_event_scan = 0.0
        self._scan_wanted = False

    def describe(self) -> str:
        how = "inotify" if not self._watcher.polling else f"polling {self._cfg.poll_interval}s"
        return f"{', '.join(self._cfg.paths)} ({self._cfg.format}, {how})"

    def lag_bytes(self) -> dict[str, int]:
        """Per path: bytes on disk not yet committed (read but in flight, or not read yet)."""
        out: dict[str, int] = {}
        for t in self._files.values():
            try:
                size = os.fstat(t.fd).st_size
            except OSError:
                continue
            out[t.path] = out.get(t.path, 0) + max(size - t.tracker.committed, 0)
        return out

    async def start(self) -> None:
        saved = self._state.load(self._scope)
        self._first_start = STARTED not in saved
        saved.pop(STARTED, None)
        alive = saved.pop(ALIVE_AT, None)
        self._last_alive = float(alive) if isinstance(alive, (int, float)) else None
        self._saved = {k: v for k, v in saved.items() if isinstance(v, dict)}
        for key, (scope, cp) in list(self._orphans.items()):
            path = cp.get("path")
            if key not in self._saved and isinstance(path, str) and self._wanted(path):
                del self._orphans[key]
                self._saved[key] = cp
                self._state.set(self._scope, key, cp)
                self._state.delete(scope, key)
                self._first_start = False  # a renamed source: its files are not new to us
                log.info(
                    "taking over the checkpoint of a file", extra={"path": path, "from": scope}
                )
        self._watcher.start()
        self._rescan(initial=True)
        self._recover_renamed()
        self._recover_rotated()
        self._displaced.clear()  # the new files' checkpoints are under their keys now
        self._old_copies = {file_key(st.st_dev, st.st_ino) for _, _, st in self._rotated_copies()}
        self._drop_unclaimed()
        self._state.set(self._scope, STARTED, True)
        self._heartbeat(force=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop reading. A finished file's held lines are delivered; an active file's stay held
        (uncommitted): the next start reads them again, with whatever completes them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in list(self._files.values()):
            if t.rotated and t.at_eof and self._finished(t) is not None:
                await self._retire(t, "finished")
            else:
                self._close(t)
        self._watcher.close()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        changes = Changes(files=set(self._files))  # start() just scanned: read everything
        while True:
            try:
                await self._turn(changes)
            except OSError as exc:  # e.g. a directory vanished mid-scan: next turn tries again
                log.warning("file source error", extra={"component": self.id, "error": str(exc)})
            except Exception:  # a bug must not end tailing for good: log it, carry on
                log.exception("file source error", extra={"component": self.id})
                changes = await self._watcher.wait(self._cfg.poll_interval)
                continue
            changes = await self._watcher.wait(self._timeout())

    async def _turn(self, changes: Changes) -> None:
        now = time.monotonic()
        self._heartbeat()
        for old, new in changes.moves:
            self._moved(old, new)
        self._scan_wanted |= changes.dirs
        if (
            changes.everything
            or now >= self._next_scan
            or (self._scan_wanted and now >= self._last_event_scan + RESCAN_MIN_INTERVAL)
        ):
            if self._scan_wanted:
                self._last_event_scan = now
            if self._rescan(initial=False):
                self._read_missed()
        full = changes.everything or now >= self._next_full
        if full:
            interval = self._cfg.poll_interval if self._watcher.polling else self._cfg.glob_interval
            self._next_full = now + interval
        for key in list(self._files):
            t = self._files.get(key)
            if t is not None and (full or t.rotated or key in changes.files):
                await self._service(t, now)
        await self._flush_due()

    def _timeout(self) -> float:
        due = [self._next_scan, self._next_full]
        if self._scan_wanted:
            due.append(self._last_event_scan + RESCAN_MIN_INTERVAL)
        if self._cfg.multiline is not None:
            due += [d for t in self._files.values() if t.ml and t.at_eof and (d := t.ml.deadline())]
        if any(t.rotated for t in self._files.values()):
            due.append(time.monotonic() + self._cfg.poll_interval)  # successor checks
        return max(min(due) - time.monotonic(), 0.0)

    async def _service(self, t: _Tailed, now: float) -> None:
        # The successor's first write is seen BEFORE the last read of the rotated file: a
        # writer that moved on wrote its last line to the old file before that.
        finished = self._finished(t) if t.rotated else None
        if not await self._read(t):
            self._watcher.mark(t.key)  # more to read: come back after the other files
            return
        if finished is None and t.rotated and now - t.last_growth >= self._cfg.rotate_idle_timeout:
            finished = "no growth for rotate_idle_timeout"
        if finished is not None:
            await self._retire(t, finished)

    def _finished(self, t: _Tailed) -> str | None:
        """Why a rotated file will not be written again, or None while it may be. A successor
        with content is not enough at once: a writer that reopens late (workers reopening on a
        signal) goes on writing here meanwhile, so the file stays open for rotate_wait."""
        if t.finished:
            return "copy drained"
        try:
            if os.fstat(t.fd).st_nlink == 0:
                return "deleted"
            st = os.stat(t.path)
        except OSError:
            return None
        successor = file_key(st.st_dev, st.st_ino) != t.key and st.st_size > 0
        if successor and time.monotonic() - t.rotated_at >= self._cfg.rotate_wait:
            return "successor written, rotate_wait passed"
        return None

    async def _flush_due(self) -> None:
        """Multiline events no next line came for (only once their file is read up)."""
        if self._cfg.multiline is None:
            return
        now = time.monotonic()
        for t in list(self._files.values()):
            if t.ml is None or not t.at_eof or t.ident is None:
                continue
            lines = t.ml.due(now)
            if lines:
                await self._send(t, line_events(lines, t.ident.id), 0)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, t: _Tailed) -> bool:
        """Read up to CHUNKS_PER_TURN chunks; True when the file is read to its end."""
        cfg = self._cfg
        t.at_eof = False
        for _ in range(CHUNKS_PER_TURN):
            data = os.pread(t.fd, cfg.read_chunk, t.offset)
            # The first bytes are checked AFTER the read: a truncate before it shows there, so
            # `data` cannot be a slice of the new content taken for more of the old.
            head = os.pread(t.fd, cfg.fingerprint_bytes, 0)
            if t.ident is not None:
                size = t.offset + len(data) if data else os.fstat(t.fd).st_size
                if not still_same(t.ident, head, size, t.offset):
                    await self._truncated(t, head)
                    continue
                t.ident.extend(head)
            if not data:
                t.at_eof = True
                return True
            t.last_growth = time.monotonic()
            if t.ident is None:  # first content: this is when the file gets its identity
                self._identify(t, head)
            events = t.events(data, rfc3339_now(), t.last_growth)
            self._counters.lines(self.id, t.take_counts())
            await self._send(t, events, len(data))
            await asyncio.sleep(0)  # a big backlog must not starve the rest of the agent
        return False

    def _identify(self, t: _Tailed, head: bytes) -> None:
        st = os.fstat(t.fd)
        t.ident = Identity.new(st.st_dev, st.st_ino, head, t.gen)
        self._save(t)  # pins the id before any event carries it

    async def _send(self, t: _Tailed, events: list[Event] | Lines, nbytes: int) -> None:
        tracker, end = t.tracker, t.resume_point()
        if not (events.messages if isinstance(events, Lines) else events):
            if tracker.advance(end):
                self._save(t)
            return
        seq = tracker.add(end)
        common = dict(t.common)
        if "kubernetes" in common:  # downstream may enrich it: each batch gets its own
            common["kubernetes"] = dict(common["kubernetes"])
        ack = Ack(partial(self._acked, t, tracker, seq))
        replay = t.sent_to < t.replay_until
        t.sent_to = end
        self._save(t)  # how far was handed on, before a sink can deliver it
        if isinstance(events, Lines):
            batch = Batch(self.id, None, common, nbytes, ack=ack, lines=events, replay=replay)
        else:
            batch = Batch(self.id, events, common, nbytes, ack=ack, replay=replay)
        await self._ingest(batch)

    def _acked(self, t: _Tailed, tracker: OffsetTracker, seq: int) -> None:
        if not tracker.done(seq):
            return
        if t.tracker is not tracker or self._owners.get(t.key) is not t:
            return  # content since truncated, or the inode belongs to another file now
        self._save(t)
        if t.retired and tracker.in_flight == 0:
            self._forget(t)

    def _save(self, t: _Tailed) -> None:
        if self._owners.get(t.key) is not t:
            return
        if t.ident is None:  # empty (maybe just truncated): an older checkpoint would mislead
            self._state.delete(self._scope, t.key)
        else:
            cp = t.ident.checkpoint(t.tracker.committed, t.path, max(t.sent_to, t.replay_until))
            self._state.set(self._scope, t.key, cp)

    def _forget(self, t: _Tailed) -> None:
        """A drained file let go: its checkpoint stays, marked done, while the file exists (a
        restart must not take it, or a compressed copy of it, for a file never read)."""
        del self._owners[t.key]
        if t.ident is None:
            self._state.delete(self._scope, t.key)
            return
        cp = t.ident.checkpoint(t.tracker.committed, t.path, t.sent_to)
        self._mark_done(t.key, cp | ({"stamp": t.stamp} if t.stamp else {}))
        self._heartbeat(force=True)  # alive after this file's last write
        self._prune_done()

    def _prune_done(self) -> None:
        """Forget the done checkpoints of files no longer there (rotated out, compressed)."""
        inodes: dict[str, set[int]] = {}
        for key, cp in list(self._done.items()):
            dirs = _dirs_of(str(cp.get("path", "")))
            for d in dirs:
                if d not in inodes:
                    inodes[d] = set()
                    with contextlib.suppress(OSError), os.scandir(d) as entries:
                        inodes[d] = {e.inode() for e in entries}
            ino = int(key.split(":")[1])
            if not any(ino in inodes[d] for d in dirs):
                del self._done[key]
                self._state.delete(self._scope, key)
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self._gone.append(Identity.from_checkpoint(cp))  # its compressed copy

    def _heartbeat(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_alive:
            self._next_alive = now + 1.0
            self._state.set(self._scope, ALIVE_AT, time.time())

    # -- truncation ------------------------------------------------------------------------

    async def _truncated(self, t: _Tailed, head: bytes) -> None:
        assert t.ident is not None
        old = t.ident
        copy = self._find_copy(t.path, old, t.offset)
        log.warning(
            "file truncated, reading it from its start",
            extra={"path": t.path, "offset": t.offset, "copy": copy[0] if copy else None},
        )
        if copy is not None:  # the copy carries on where we were, with our held lines
            self._adopt(t, copy[1], finished=True)
        else:  # the rest is gone: what we hold is all there will be of it
            self._gone.append(old)  # a copy shorter than what we read: not to be read again
            events = t.held_events(rfc3339_now())
            if events:
                await self._send(t, events, 0)
        t.gen = old.gen + 1
        t.ident = None
        t.offset = 0
        t.reader = self._reader(0)
        t.cri, t.ml = self._assemblers()
        t.tracker = OffsetTracker(0)
        if head:
            self._identify(t, head)
        else:
            self._save(t)
        self._read_missed()  # truncated more than once since we looked: the older copies

    def _find_copy(self, path: str, ident: Identity, offset: int) -> tuple[str, int] | None:
        """The copy copytruncate made: a sibling named after `path`, with our first bytes and at
        least `offset` of them. Returns (its path, an open fd)."""
        name = os.path.basename(path)
        for d in _dirs_of(path):
            with contextlib.suppress(OSError), os.scandir(d) as entries:
                for entry in entries:
                    if entry.name == name or not entry.name.startswith(name):
                        continue
                    fd = _open_if(entry.path, ident, offset, self._files)
                    if fd is not None:
                        return entry.path, fd
        return None

    def _adopt(self, t: _Tailed, fd: int, *, finished: bool) -> None:
        """Follow `fd` with t's reading state (identity, offsets, held lines): same content."""
        st = os.fstat(fd)
        key = file_key(st.st_dev, st.st_ino)
        c = _Tailed(
            key, t.path, fd, t.ident, t.gen, t.offset, t.reader, t.cri, t.ml, t.tracker,
            t.common, rotated=True, finished=finished,
        )  # fmt: skip
        c.sent_to, c.replay_until = t.sent_to, t.replay_until
        self._files[key] = self._owners[key] = c
        self._watcher.watch_file(key, fd, t.path)
        self._watcher.mark(key)
        self._save(c)

    # -- scanning --------------------------------------------------------------------------

    def _rescan(self, *, initial: bool) -> bool:
        """Follow the files the globs match now; True when one is new or rotated away."""
        now = time.monotonic()
        changed = False
        self._next_scan, self._scan_wanted = now + self._cfg.glob_interval, False
        if not self._watcher.polling:  # watch first, then list: nothing created falls between
            self._watcher.watch_dirs(self._dirs_to_watch())
        found = self._matching()
        for key, path in found.items():
            t = self._files.get(key)
            if t is None:
                self._open(key, path, initial=initial)
                changed = True
            elif not t.finished:
                t.path, t.rotated = path, False
        for key, t in self._files.items():
            if key not in found and not t.rotated:
                t.rotated, t.last_growth, t.rotated_at = True, now, now
                changed = True
                log.info("file rotated away, draining it", extra={"path": t.path})
        return changed

    def _moved(self, old: str, new: str) -> None:
        """A file renamed from a matched name to an unmatched one: follow it (as rotated) even
        when no scan saw it at its old name, as when it was created and rotated in a moment."""
        if not self._wanted(old) or self._wanted(new):
            return  # nothing to do with us, or the next scan finds it at its new name
        try:
            st = os.stat(new)
        except OSError:
            return
        key = file_key(st.st_dev, st.st_ino)
        if key not in self._files and stat.S_ISREG(st.st_mode):
            self._open(key, old, initial=False, at=new)

    def _wanted(self, path: str) -> bool:
        cfg = self._cfg
        return any(glob_match(path, p) for p in cfg.paths) and not is_excluded(path, cfg.exclude)

    def _matching(self) -> dict[FileKey, str]:
        found: dict[FileKey, str] = {}
        for pattern in self._cfg.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if is_excluded(path, self._cfg.exclude):
                    continue
                try:
                    st = os.stat(path)  # follows symlinks: the target is the file
                except OSError:
                    continue  # vanished between glob and stat
                if stat.S_ISREG(st.st_mode):
                    found.setdefault(file_key(st.st_dev, st.st_ino), path)
        return found

    def _dirs_to_watch(self) -> set[str]:
        dirs: set[str] = set()
        for pattern in self._cfg.paths:
            root = glob_root(pattern)
            while not os.path.isdir(root) and root not in ("/", "."):
                root = os.path.dirname(root)  # watch for the root's creation
            found = glob.glob(os.path.dirname(pattern), recursive=True)
            dirs |= parent_dirs(root, [d for d in found if os.path.isdir(d)])
        return dirs

    def _open(self, key: FileKey, path: str, *, initial: bool, at: str | None = None) -> None:
        """Follow the file found at `path` (or already renamed from there to `at`)."""
        try:
            fd = os.open(at or path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if path not in self._warned:  # once per path, not every scan
                self._warned.add(path)
                log.warning("cannot open file", extra={"path": path, "error": exc.strerror})
            return
        st = os.fstat(fd)
        if file_key(st.st_dev, st.st_ino) != key:  # replaced since the scan: the next one sees it
            os.close(fd)
            return
        head = os.pread(fd, self._cfg.fingerprint_bytes, 0)
        cp = self._saved.pop(key, None) or self._done.pop(key, None)
        tail = initial and self._first_start and self._cfg.read_from == "tail"
        try:
            plan = plan_start(cp, st.st_dev, st.st_ino, head, st.st_size, tail=tail)
        except (KeyError, TypeError, ValueError):  # a checkpoint we cannot read: start afresh
            plan = plan_start(None, st.st_dev, st.st_ino, head, st.st_size, tail=tail)
        resumed = cp if plan.reason == "resume" else None
        t = self._new_tailed(key, path, fd, plan.identity, plan.gen, plan.offset, resumed)
        t.rotated = at is not None
        if plan.reason in ("truncated", "replaced") and cp is not None:
            log.warning(
                "checkpoint is for other content (truncated, or inode reused): reading from start",
                extra={"path": path, "reason": plan.reason, "checkpoint": cp.get("path")},
            )
            if not self._recover_copy(t, cp) and initial:
                self._displaced[key] = cp
        else:
            log.info("following file", extra={"path": path, "offset": plan.offset})
        self._files[key] = self._owners[key] = t
        self._watcher.watch_file(key, fd, path)
        self._watcher.mark(key)  # read it in the next turn, not at the next full pass
        self._save(t)

    def _recover_copy(self, t: _Tailed, cp: dict[str, Any]) -> bool:
        """Truncated while we were down: drain our unread part from its copy, if there is one
        (uncompressed: a compressed one is found by `_recover_rotated`)."""
        with contextlib.suppress(KeyError, TypeError, ValueError):
            old = Identity.from_checkpoint(cp)
            offset = int(cp["offset"])
            copy = self._find_copy(t.path, old, offset)
            if copy is not None:
                src = self._new_tailed(t.key, t.path, -1, old, old.gen, offset, cp)
                self._adopt(src, copy[1], finished=True)
                return True
        return False

    def _recover_renamed(self) -> None:
        """Checkpoints no glob matched: files renamed while we were down. Drain what is left of
        each; one not found may have been compressed since (`_recover_rotated`), or be gone."""
        for key, cp in list(self._saved.items()):
            found = None
            with contextlib.suppress(KeyError, TypeError, ValueError):
                ident, offset = Identity.from_checkpoint(cp), int(cp["offset"])
                found = self._find_renamed(cp["path"], ident, offset)
            if found is None:
                continue
            at, fd = found
            del self._saved[key]
            if cp.get("done") and os.fstat(fd).st_size <= offset:
                os.close(fd)  # read before, nothing written since
                self._done[key] = cp
                continue
            why = "renamed while the agent was stopped"
            self._drain(key, cp["path"], fd, ident, offset, cp, at=at, why=why)

    def _rotated_copies(self) -> Iterator[tuple[str, str, os.stat_result]]:
        """Rotated copies (by the `rotated` patterns) of the files we follow or hold a
        checkpoint for, that no glob matches and that are no file of ours: (where, the followed
        path, its stat)."""
        bases: dict[str, dict[str, str]] = {}  # dir -> file name -> the followed path
        known = [t.path for t in self._files.values()]
        known += [str(cp.get("path", "")) for cp in (*self._saved.values(), *self._done.values())]
        for path in known:
            for d in _dirs_of(path):
                bases.setdefault(d, {})[os.path.basename(path)] = path
        for d, names in bases.items():
            found: list[os.DirEntry[str]] = []
            with contextlib.suppress(OSError), os.scandir(d) as entries:
                found = sorted(entries, key=lambda e: e.name)
            for entry in found:
                base = rotated_of(entry.name, names, self._cfg.rotated)
                if base is None or self._wanted(entry.path):
                    continue  # not a rotated copy, or a file the globs follow anyway
                if is_excluded(entry.path, self._cfg.exclude):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue  # rotated on meanwhile: the next look finds it
                key = file_key(st.st_dev, st.st_ino)
                if stat.S_ISREG(st.st_mode) and key not in self._owners and key not in self._done:
                    yield entry.path, names[base], st

    def _recover_rotated(self) -> None:
        """Rotated copies of our files that no checkpoint led to: made while we were down."""
        if self._first_start:
            return  # read_from decides what is read of what was there before
        for path, followed, st in list(self._rotated_copies()):
            self._drain_rotated_copy(path, followed, st)

    def _read_missed(self) -> None:
        """Rotated copies no scan saw at their path: created and rotated, maybe several times
        over, while the agent was busy or starved of CPU. A copy is read from its start unless
        it was there at start-up or holds content we read (by its first bytes: copytruncate's
        copy, a compressed copy). A file whose first `fingerprint_bytes` equal those of a file
        read before is taken for a copy of it."""
        present: set[FileKey] = set()
        for path, followed, st in list(self._rotated_copies()):
            key = file_key(st.st_dev, st.st_ino)
            present.add(key)
            if key in self._old_copies or not st.st_size:
                continue
            self._drain_rotated_copy(path, followed, st, missed=True)
        self._old_copies &= present

    def _read_before(self, head: bytes) -> bool:
        """Whether content starting with `head` is that of a file we follow or have read."""
        idents = [t.ident for t in self._owners.values() if t.ident is not None]
        for cp in self._done.values():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                idents.append(Identity.from_checkpoint(cp))
        return any(i.matches(head) for i in (*idents, *self._gone))

    def _drain_rotated_copy(
        self, path: str, followed: str, st: os.stat_result, *, missed: bool = False
    ) -> None:
        """Drain the rotated copy at `path` of the file at `followed`: from the checkpoint with
        its first bytes, or, without one, from its start if it was written since we last ran
        (`missed`, while running: if we never read its content). A compressed copy is unpacked
        only to be read, or to learn whether it grew."""
        compressed = is_compressed(path)
        head = _head(path, compressed, self._cfg.fingerprint_bytes)
        if head is None:
            return
        key = file_key(st.st_dev, st.st_ino)
        stamp = [st.st_size, st.st_mtime_ns]  # a compressed copy unchanged since it was drained
        old_key, cp = self._checkpoint_of(key, followed, head)
        if cp is None and missed:
            if self._read_before(head):
                self._old_copies.add(key)
                return
        elif cp is None:
            new = self._last_alive is not None and st.st_mtime > self._last_alive
            if not (new and st.st_size):
                return  # read by an earlier run, or there before we ever ran
        else:
            if self._displaced.pop(old_key, None) is None:  # else: a new file's key now
                self._saved.pop(old_key, None)
                if old_key != key:  # a compressed copy: its checkpoint is filed under it now
                    self._state.delete(self._scope, old_key)
            if cp.get("done") and cp.get("stamp") == stamp:
                self._mark_done(key, cp)
                return
        fd = _open_content(path, compressed, self._tmp_dir)
        if fd is None:
            return
        size = os.fstat(fd).st_size
        if cp is None:
            ident, offset = Identity.new(st.st_dev, st.st_ino, head), 0
        else:
            ident, offset = Identity.from_checkpoint(cp), int(cp["offset"])
            if size <= offset:
                os.close(fd)
                self._mark_done(key, cp | ({"stamp": stamp} if compressed else {}))
                return
        if compressed and self._cfg.rotated_compressed == "skip":
            os.close(fd)
            self._old_copies.add(key)  # warned once
            log.warning(
                "a compressed rotated copy holds lines never read: skipped "
                "(rotated_compressed: read reads it)",
                extra={"path": path, "unread_bytes": size - offset},
            )
            return
        why = "rotated before the agent saw it" if missed else "rotated while the agent was stopped"
        self._drain(key, followed, fd, ident, offset, cp, at=path, why=why, finished=compressed)
        if compressed:
            self._files[key].stamp = stamp

    def _mark_done(self, key: FileKey, cp: dict[str, Any]) -> None:
        self._done[key] = cp | {"done": True}
        self._state.set(self._scope, key, self._done[key])

    def _checkpoint_of(
        self, key: FileKey, followed: str, head: bytes
    ) -> tuple[FileKey, dict[str, Any] | None]:
        """The unclaimed checkpoint for the content starting with `head`: by inode, else (a
        compressed copy is another inode) one of the same file name by its first bytes, among
        them those whose inode a new file took."""
        name = os.path.basename(followed)
        candidates = [(key, self._saved[key])] if key in self._saved else []
        candidates += [
            (k, cp)
            for k, cp in (*self._saved.items(), *self._displaced.items())
            if k != key and os.path.basename(str(cp.get("path", ""))) == name
        ]
        for k, cp in candidates:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                if Identity.from_checkpoint(cp).matches(head):
                    return k, cp
        return key, None

    def _drain(
        self,
        key: FileKey,
        path: str,
        fd: int,
        ident: Identity,
        offset: int,
        cp: dict[str, Any] | None,
        *,
        at: str,
        why: str,
        finished: bool = False,
    ) -> None:
        """Follow a rotated file no scan found at its path (it is at `at`) from `offset` until
        drained; its events name the file it was (`path`)."""
        t = self._new_tailed(key, path, fd, ident, ident.gen, offset, cp)
        t.rotated, t.finished = True, finished
        self._files[key] = self._owners[key] = t
        self._watcher.watch_file(key, fd, path)
        self._watcher.mark(key)
        self._save(t)
        log.info(
            "draining a rotated copy",
            extra={"path": at, "offset": offset, "file": path, "why": why},
        )

    def _drop_unclaimed(self) -> None:
        """Checkpoints of files gone; those still there but unreadable now are kept."""
        for key, cp in list(self._saved.items()):
            if not _still_at(cp):
                self._state.delete(self._scope, key)
                del self._saved[key]

    def _find_renamed(self, path: str, ident: Identity, offset: int) -> tuple[str, int] | None:
        """The file of a checkpoint, renamed next to `path`: (where it is, an open fd)."""
        for d in _dirs_of(path):
            with contextlib.suppress(OSError), os.scandir(d) as entries:
                for entry in entries:
                    if entry.inode() == ident.ino:
                        key = file_key(ident.dev, ident.ino)
                        fd = _open_if(entry.path, ident, offset, self._files, key)
                        if fd is not None:
                            return entry.path, fd
        return None

    def _new_tailed(
        self,
        key: FileKey,
        path: str,
        fd: int,
        ident: Identity | None,
        gen: int,
        offset: int,
        cp: dict[str, Any] | None = None,
    ) -> _Tailed:
        """A file to follow from `offset`; `cp`, its checkpoint when resuming from one, says
        how far the last run had read (what is read again up to there is a replay)."""
        cfg = self._cfg
        cri, ml = self._assemblers()
        common: Event = {"source": "file", "file": path}
        meta = pod_metadata(path, cfg.container_name) if cfg.format == "cri" else {}
        if cfg.format == "cri" and "pod_name" not in meta:  # a symlink: try where it points
            meta = pod_metadata(os.path.realpath(path), cfg.container_name)
        if cfg.format != "cri" and cfg.container_name:
            meta = {"container_name": cfg.container_name}
        if meta:
            common["kubernetes"] = meta
        reader = self._reader(offset)
        t = _Tailed(
            key, path, fd, ident, gen, offset, reader, cri, ml, OffsetTracker(offset), common
        )
        t.sent_to = offset
        if cp is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                t.replay_until = int(cp.get("read", 0))
        return t

    def _reader(self, offset: int) -> LineReader:
        return LineReader(
            self._cfg.max_line_bytes, offset, keep_empty=self._cfg.empty_lines == "keep"
        )

    def _assemblers(self) -> tuple[CriAssembler | None, Multiline | None]:
        cfg, ml = self._cfg, self._cfg.multiline
        cri = CriAssembler(cfg.max_line_bytes) if cfg.format == "cri" else None
        if ml is None:
            return cri, None
        return cri, Multiline(
            ml.compiled(),
            max_lines=ml.max_lines,
            max_bytes=ml.max_bytes,
            flush_timeout=ml.flush_timeout,
        )

    # -- closing ---------------------------------------------------------------------------

    async def _retire(self, t: _Tailed, why: str) -> None:
        """A drained file that will not grow: deliver what it holds, close it."""
        events = t.held_events(rfc3339_now())
        await self._send(t, events, 0)
        self._close(t)
        t.retired = True
        if t.tracker.in_flight == 0 and self._owners.get(t.key) is t:
            self._forget(t)
        log.info("closed rotated file", extra={"path": t.path, "reason": why})

    def _close(self, t: _Tailed) -> None:
        self._files.pop(t.key, None)
        self._watcher.unwatch_file(t.key)
        with contextlib.suppress(OSError):
            os.close(t.fd)


def _still_at(cp: dict[str, Any]) -> bool:
    """Whether a checkpoint's file is still at its path (there, but we could not open it)."""
    try:
        st = os.stat(cp["path"])
    except (OSError, KeyError, TypeError):
        return False
    return (st.st_dev, st.st_ino) == (cp.get("dev"), cp.get("ino"))


def _dirs_of(path: str) -> list[str]:
    """Where a file's rotated siblings are: next to it, and next to what it links to."""
    dirs = [os.path.dirname(path)]
    real = os.path.dirname(os.path.realpath(path))
    return dirs if real == dirs[0] else dirs + [real]


def _open_if(
    path: str,
    ident: Identity,
    offset: int,
    followed: dict[FileKey, Any],
    key: FileKey | None = None,
) -> int | None:
    """An fd for `path` if it holds ident's content up to `offset` and is not followed yet
    (and, given `key`, is that inode)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    found = file_key(st.st_dev, st.st_ino)
    ours = (
        stat.S_ISREG(st.st_mode)
        and found not in followed
        and (key is None or found == key)
        and st.st_size >= offset
        and ident.matches(os.pread(fd, ident.fp_len, 0))
    )
    if not ours:
        os.close(fd)
        return None
    return fd


def _head(path: str, compressed: bool, n: int) -> bytes | None:
    """A file's first `n` bytes (a compressed file's, unpacked), or None if it cannot be read."""
    try:
        if compressed:
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        log.warning("cannot read a rotated copy", extra={"path": path, "error": str(exc)})
        return None


def _open_content(path: str, compressed: bool, tmp_dir: Path) -> int | None:
    """An fd to read a file's lines from: the file, or for a compressed one an unnamed
    temporary file in `tmp_dir` holding its content (gone once closed)."""
    try:
        if not compressed:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with tempfile.TemporaryFile(dir=tmp_dir) as tmp, gzip.open(path, "rb") as src:
            while chunk := src.read(1 << 20):
                tmp.write(chunk)
            tmp.flush()
            return os.dup(tmp.fileno())
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        log.warning("cannot read a rotated copy", extra={"path": path, "error": str(exc)})
        return None


def rfc3339_now() -> str:
    """Now, UTC, to the microsecond: 2026-11-25T22:15:08.123456Z."""
    us = time.time_ns() // 1000
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"
