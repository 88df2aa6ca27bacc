"""A sink's on-disk queue of payloads: append-only segment files, read in order, deleted once
every record in them was delivered or dropped.

    <dir>/<first seq, 20 digits>.seg     records: header (seq, length, events) + payload

A payload is stored zlib-compressed when that saves space (bit 31 of `events` says so): a
payload's JSON repeats the same pod metadata on every line, and a slow receiver's backlog on
disk comes out smaller than the raw lines it holds. Segments from before compression read as
they are (the bit is clear).

The queue itself keeps no read pointer on disk: the owner records in the state store the seq
below which everything was delivered, and `recover(delivered)` skips what is at or below it.
A record torn by a crash mid-write (short header or payload at a segment's end) is dropped on
recovery: it was never acknowledged to its source, which reads it again.

`file_bytes` is what the segment files take: the figure a size limit is held to. Released
records free their space only when their whole segment goes, so the owner keeps segments small
next to its limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("log-agent.buffer")

_HEADER = struct.Struct("<QII")  # seq, stored length, events | COMPRESSED | REPLAY
HEADER_BYTES = _HEADER.size
COMPRESSED = 1 << 31
REPLAY = 1 << 30  # the events were read again after a restart: maybe sent before
_EVENTS = REPLAY - 1
SEGMENT_BYTES = 32 * 1024 * 1024  # a new segment after this many bytes: old ones can be deleted
MIN_SEGMENT_BYTES = 4096  # the smallest a buffer's segments are made
_COMPRESS_FROM = 512  # smaller payloads are stored as they are
_ZLIB_LEVEL = 1  # fast: most of the gain, a fraction of the CPU of the default level


@dataclass(slots=True)
class DiskRecord:
    seq: int
    segment: Path
    offset: int  # where the stored payload starts in the segment
    length: int  # stored (maybe compressed) bytes
    events: int
    compressed: bool = False
    replay: bool = False  # maybe sent before (by an earlier run): counted as a replay


def pack(payload: bytes) -> tuple[bytes, bool]:
    """The bytes to store for `payload`, and whether they are compressed."""
    if len(payload) < _COMPRESS_FROM:
        return payload, False
    packed = zlib.compress(payload, _ZLIB_LEVEL)
    if len(packed) >= len(payload) * 0.9:
        return payload, False
    return packed, True


class DiskQueue:
    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._records: deque[DiskRecord] = deque()
        self._segments: deque[Path] = deque()  # oldest first; the last one is written to
        self._outstanding: dict[Path, int] = {}  # records not yet released, per segment
        self._sizes: dict[Path, int] = {}  # bytes of each segment file
        self._fd: int | None = None
        self._size = 0  # bytes of the current segment
        self.bytes = 0  # stored bytes of the queued records
        self.events = 0
        self.file_bytes = 0  # every segment's bytes on disk

    def __len__(self) -> int:
        return len(self._records)

    def recover(self, delivered: int, sent: int = 0) -> int:
        """Load records left by an earlier run (those up to `sent` had been handed to the sink:
        replays); return the highest seq seen (or `delivered`)."""
        last = delivered
        for path in sorted(self.dir.glob("*.seg")):
            kept = 0
            data = path.read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                seq, length, flags = _HEADER.unpack_from(data, pos)
                start = pos + _HEADER.size
                if start + length > len(data):
                    log.warning("dropping a torn record", extra={"path": str(path), "seq": seq})
                    break
                last = max(last, seq)
                if seq > delivered:
                    events, compressed = flags & _EVENTS, bool(flags & COMPRESSED)
                    replay = seq <= sent or bool(flags & REPLAY)
                    rec = DiskRecord(seq, path, start, length, events, compressed, replay)
                    self._records.append(rec)
                    self.bytes += length
                    self.events += events
                    kept += 1
                pos = start + length
            if kept:
                self._segments.append(path)
                self._outstanding[path] = kept
                self._sizes[path] = len(data)
                self.file_bytes += len(data)
            else:
                path.unlink()
        return last

    def append(
        self,
        seq: int,
        events: int,
        payload: bytes,
        *,
        queued: bool = True,
        replay: bool = False,
        packed: tuple[bytes, bool] | None = None,
    ) -> DiskRecord:
        """Write a record (`packed`: `pack(payload)`, when the caller made it already).
        `queued=False` is for a record already being sent: it is on disk for a restart, but not
        queued to be taken again (its sender releases it). Raises OSError (a full disk) with
        nothing half-written."""
        stored, compressed = packed if packed is not None else pack(payload)
        if self._fd is None or self._size >= self.segment_bytes:
            self._open_segment(seq)
        assert self._fd is not None
        flags = events | (COMPRESSED if compressed else 0) | (REPLAY if replay else 0)
        data = _HEADER.pack(seq, len(stored), flags) + stored
        try:
            _write_all(self._fd, data)
        except OSError:
            # A full disk mid-record: cut the partial record off so the segment stays readable
            # (a torn record would hide every later one from recovery), and start anew.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._close_current()
            raise
        segment = self._segments[-1]
        rec = DiskRecord(
            seq, segment, self._size + _HEADER.size, len(stored), events, compressed, replay
        )
        self._outstanding[segment] = self._outstanding.get(segment, 0) + 1
        self._size += len(data)
        self._sizes[segment] += len(data)
        self.file_bytes += len(data)
        if queued:
            self._records.append(rec)
            self.bytes += len(stored)
            self.events += events
        return rec

    def _open_segment(self, seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.dir / f"{seq:020d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._segments.append(path)
        self._outstanding[path] = 0
        self._sizes[path] = 0
        self._size = 0

    @property
    def first_seq(self) -> int | None:
        return self._records[0].seq if self._records else None

    def take(self) -> tuple[DiskRecord, bytes] | None:
        """The oldest record and its payload, out of the queue; its segment stays on disk
        until `release` (a crash before then delivers it again)."""
        if not self._records:
            return None
        rec = self._records[0]
        with open(rec.segment, "rb") as f:  # may raise: then the record stays queued
            f.seek(rec.offset)
            stored = f.read(rec.length)
        payload = zlib.decompress(stored) if rec.compressed else stored
        self._records.popleft()
        self.bytes -= rec.length
        self.events -= rec.events
        return rec, payload

    def release(self, rec: DiskRecord) -> None:
        """The record was delivered or dropped: delete its segment once nothing in it is left."""
        segment = rec.segment
        self._outstanding[segment] -= 1
        if self._outstanding[segment]:
            return
        if segment == self._segments[-1]:  # the one written to: the next append starts anew
            self._close_current()
        del self._outstanding[segment]
        self._segments.remove(segment)
        self.file_bytes -= self._sizes.pop(segment)
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    def new_segment(self) -> None:
        """Start a new segment at the next append (for records older than those queued:
        segments are replayed in name order, so each must hold a run of sequence numbers)."""
        self._close_current()

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._size = 0

    def close(self) -> None:
        self._close_current()


def census(directory: Path, delivered: int) -> tuple[int, int, int]:
    """(records, events, stored bytes) waiting in a disk queue's directory above `delivered`;
    read only, nothing changed (for a queue no sink owns)."""
    records = events = nbytes = 0
    for path in sorted(directory.glob("*.seg")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        pos = 0
        while pos + _HEADER.size <= len(data):
            seq, length, flags = _HEADER.unpack_from(data, pos)
            pos += _HEADER.size + length
            if pos > len(data):
                break  # torn
            if seq > delivered:
                records, events, nbytes = (
                    records + 1,
                    events + (flags & _EVENTS),
                    nbytes + length,
                )
    return records, events, nbytes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
