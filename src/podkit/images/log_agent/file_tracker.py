"""Which file is this, and where do we start reading it (pure: the file source does the I/O).

A file is its device + inode, checked by a fingerprint: a hash of its first bytes (up to
`fingerprint_bytes`, the length hashed stored with it). Paths are not identity: rotation renames
`app.log` to `app.log.1`, which is still the file we were reading. dev+ino alone is not enough
either: a deleted file's inode is reused by the next file created, which must not resume at the
old file's offset, and a copytruncate'd file keeps its inode but starts over with new content.

`Identity.id` is what events carry in `_id` (`<id>:<byte offset>`): fixed when the file is first
seen with content and stored in its checkpoint, so a line has the same `_id` on every delivery.
`gen` counts the times the same inode started over (truncated), so the new content's `_id`s
never equal the old one's even when both begin with the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from os.path import basename
from typing import Any, Literal

# The state key of a file's checkpoint: one per inode ("<dev>:<ino>").
FileKey = str
StartReason = Literal["new", "tail", "resume", "truncated", "replaced"]
_MAGIC = frozenset("*?[")


def file_key(dev: int, ino: int) -> FileKey:
    return f"{dev}:{ino}"


def fingerprint(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=8).hexdigest()


@dataclass(slots=True)
class Identity:
    dev: int
    ino: int
    id: str  # 16 hex digits, fixed for the life of this content
    gen: int  # times this inode's content started over
    fp_len: int  # bytes hashed into fp: grows with the file up to fingerprint_bytes
    fp: str

    @classmethod
    def new(cls, dev: int, ino: int, head: bytes, gen: int = 0) -> Identity:
        fp = fingerprint(head)
        seed = f"{dev}:{ino}:{len(head)}:{fp}:{gen}".encode()
        return cls(dev, ino, fingerprint(seed), gen, len(head), fp)

    def matches(self, head: bytes) -> bool:
        """Whether `head` (the file's first bytes, as many as we fingerprint) is still ours."""
        if len(head) < self.fp_len:
            return False
        return fingerprint(head[: self.fp_len]) == self.fp

    def extend(self, head: bytes) -> None:
        """Hash more of the file once it grew: a longer fingerprint tells files apart better."""
        if len(head) > self.fp_len:
            self.fp_len, self.fp = len(head), fingerprint(head)

    def checkpoint(self, offset: int, path: str, read: int = 0) -> dict[str, Any]:
        """`offset`: committed (every sink holds what is before it); `read`: how far batches
        were handed on (what a restart reads again up to there may have been delivered)."""
        return {
            "path": path,
            "dev": self.dev,
            "ino": self.ino,
            "id": self.id,
            "gen": self.gen,
            "fp_len": self.fp_len,
            "fp": self.fp,
            "offset": offset,
            "read": max(read, offset),
        }

    @classmethod
    def from_checkpoint(cls, cp: Mapping[str, Any]) -> Identity:
        return cls(cp["dev"], cp["ino"], cp["id"], cp["gen"], cp["fp_len"], cp["fp"])


@dataclass(frozen=True, slots=True)
class Start:
    identity: Identity | None  # None while the file is empty: fixed once it has content
    offset: int
    reason: StartReason
    gen: int = 0  # for the identity made once content arrives, when identity is None


def plan_start(
    checkpoint: Mapping[str, Any] | None,
    dev: int,
    ino: int,
    head: bytes,
    size: int,
    *,
    tail: bool,
) -> Start:
    """Where to start a file we just opened, from its checkpoint (if any) and its first bytes.

    `tail`: no checkpoint and read_from=tail at the agent's first start: skip what is there.
    """
    if checkpoint is None:
        ident = Identity.new(dev, ino, head) if head else None
        return Start(ident, size, "tail") if tail else Start(ident, 0, "new")
    old = Identity.from_checkpoint(checkpoint)
    offset = int(checkpoint["offset"])
    if old.matches(head) and size >= offset:
        old.extend(head)
        return Start(old, offset, "resume")
    # Shorter than what we read: truncated (maybe while we were down). Other first bytes with
    # the file still as long: another file on a reused inode, or rewritten in place.
    reason: StartReason = "truncated" if size < offset else "replaced"
    gen = old.gen + 1
    return Start(Identity.new(dev, ino, head, gen) if head else None, 0, reason, gen)


def still_same(ident: Identity, head: bytes, size: int, offset: int) -> bool:
    """False once the file was truncated under us: shorter than our offset, or new first bytes.

    A copytruncate'd file that grew past our offset again before we looked is still caught by
    its first bytes.
    """
    return size >= offset and ident.matches(head)


def is_excluded(path: str, patterns: Iterable[str]) -> bool:
    """`*.gz` excludes by file name; a pattern with a `/` matches the whole path."""
    name = basename(path)
    return any(fnmatchcase(path if "/" in p else name, p) for p in patterns)


def glob_match(path: str, pattern: str) -> bool:
    """Whether glob.glob(pattern, recursive=True) would list `path` (for paths that are gone)."""
    return _match(path.split("/"), pattern.split("/"))


def _match(parts: list[str], pats: list[str]) -> bool:
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(_match(parts[i:], pats[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pats[0]) and _match(parts[1:], pats[1:])


def glob_root(pattern: str) -> str:
    """The directory a glob pattern starts in: its leading components without wildcards."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.intersection(part):
            break
        fixed.append(part)
    return "/".join(fixed) or ("/" if pattern.startswith("/") else ".")


def parent_dirs(root: str, found_dirs: Iterable[str]) -> set[str]:
    """Directories to watch for new files: `root` and every directory from it to each found one.

    Watching the intermediate levels lets a new pod's directory (and the container directory in
    it) be seen the moment it is created, not at the next periodic scan.
    """
    out = {root}
    prefix = root.rstrip("/") + "/"
    for d in found_dirs:
        d = d.rstrip("/") or "/"
        while d.startswith(prefix) and d not in out:
            out.add(d)
            d = d.rsplit("/", 1)[0] or "/"
    return out
