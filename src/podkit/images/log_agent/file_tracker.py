"""Bookkeeping for the file source (pure): which files are new, renamed or gone after a scan.

Files are identified by (device, inode), not by path, because rotation changes paths:
`access.log` renamed to `access.log.1` is still the file we were reading, and the new
`access.log` is a different file that must be read from its start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from os.path import basename

FileId = tuple[int, int]  # (st_dev, st_ino)


@dataclass
class ScanDiff:
    new: list[tuple[FileId, str]] = field(default_factory=list)
    moved: list[tuple[FileId, str]] = field(default_factory=list)  # same file, new path
    gone: list[FileId] = field(default_factory=list)  # no longer matched: rotated or deleted
    back: list[FileId] = field(default_factory=list)  # matched again after being gone


def diff_scan(
    tracked: Mapping[FileId, str], gone: Iterable[FileId], found: Mapping[FileId, str]
) -> ScanDiff:
    """Compare the files we follow (`tracked`, of which `gone` already left) with a new scan."""
    gone_set = set(gone)
    diff = ScanDiff()
    for fid, path in found.items():
        if fid not in tracked:
            diff.new.append((fid, path))
            continue
        if fid in gone_set:
            diff.back.append(fid)
        if tracked[fid] != path:
            diff.moved.append((fid, path))
    diff.gone = [fid for fid in tracked if fid not in found and fid not in gone_set]
    return diff


def is_excluded(path: str, patterns: Iterable[str]) -> bool:
    """`*.gz` excludes by file name; a pattern with a `/` matches the whole path."""
    name = basename(path)
    return any(fnmatchcase(path if "/" in p else name, p) for p in patterns)


def start_offset(size: int, *, first_scan: bool, read_from: str) -> int:
    """Files there at start-up honour read_from; files that appear later are read whole."""
    return size if first_scan and read_from == "tail" else 0


def should_close(idle_since: float, now: float, rotate_wait: float) -> bool:
    """A gone file is read until it has not grown for rotate_wait seconds, then closed."""
    return now - idle_since >= rotate_wait
