"""A sink's on-disk queue of payloads: append-only segment files, read in order, deleted once
every record in them was delivered.

    <dir>/<first seq, 20 digits>.seg     records: header (seq, length, events) + payload

The queue itself keeps no read pointer on disk: the owner records in the state store the seq
below which everything was delivered, and `recover(delivered)` skips what is at or below it.
A record torn by a crash mid-write (short header or payload at a segment's end) is dropped on
recovery: it was never acknowledged to its source, which reads it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("log-agent.buffer")

_HEADER = struct.Struct("<QII")  # seq, payload length, events
SEGMENT_BYTES = 32 * 1024 * 1024  # a new segment after this many bytes: old ones can be deleted


@dataclass(slots=True)
class DiskRecord:
    seq: int
    segment: Path
    offset: int  # where the payload starts in the segment
    length: int
    events: int


class DiskQueue:
    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._records: deque[DiskRecord] = deque()
        self._segments: deque[Path] = deque()  # oldest first; the last one is written to
        self._outstanding: dict[Path, int] = {}  # records not yet released, per segment
        self._fd: int | None = None
        self._size = 0  # bytes of the current segment
        self.bytes = 0  # payload bytes queued
        self.events = 0

    def __len__(self) -> int:
        return len(self._records)

    def recover(self, delivered: int) -> int:
        """Load records left by an earlier run; return the highest seq seen (or `delivered`)."""
        last = delivered
        for path in sorted(self.dir.glob("*.seg")):
            kept = 0
            data = path.read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                seq, length, events = _HEADER.unpack_from(data, pos)
                start = pos + _HEADER.size
                if start + length > len(data):
                    log.warning("dropping a torn record", extra={"path": str(path), "seq": seq})
                    break
                last = max(last, seq)
                if seq > delivered:
                    self._records.append(DiskRecord(seq, path, start, length, events))
                    self.bytes += length
                    self.events += events
                    kept += 1
                pos = start + length
            if kept:
                self._segments.append(path)
                self._outstanding[path] = kept
            else:
                path.unlink()
        return last

    def append(self, seq: int, events: int, payload: bytes, *, queued: bool = True) -> DiskRecord:
        """Write a record. `queued=False` is for a record already being sent: it is on disk
        for a restart, but not queued to be taken again (its sender releases it)."""
        if self._fd is None or self._size >= self.segment_bytes:
            self._open_segment(seq)
        assert self._fd is not None
        data = _HEADER.pack(seq, len(payload), events) + payload
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
        rec = DiskRecord(seq, segment, self._size + _HEADER.size, len(payload), events)
        self._outstanding[segment] = self._outstanding.get(segment, 0) + 1
        self._size += len(data)
        if queued:
            self._records.append(rec)
            self.bytes += len(payload)
            self.events += events
        return rec

    def _open_segment(self, seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.dir / f"{seq:020d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._segments.append(path)
        self._outstanding[path] = 0
        self._size = 0

    @property
    def first_seq(self) -> int | None:
        return self._records[0].seq if self._records else None

    def take(self) -> tuple[DiskRecord, bytes] | None:
        """The oldest record and its payload, out of the queue; its segment stays on disk
        until `release` (a crash before then delivers it again)."""
        if not self._records:
            return None
        rec = self._records.popleft()
        self.bytes -= rec.length
        self.events -= rec.events
        with open(rec.segment, "rb") as f:
            f.seek(rec.offset)
            return rec, f.read(rec.length)

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
