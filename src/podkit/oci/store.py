"""The image store under the state directory (containerd's content store and snapshots, small).

    <state>/oci/
      blobs/sha256/<hex>      verified content: manifests, indexes, configs, compressed layers
      ingest/<hex>            a blob being downloaded: kept across runs, resumed with a Range
      layers/<chain hex>/     a layer unpacked (an overlay lower dir), named by its ChainID
      layers/.tmp-*/          a layer being unpacked: renamed into place only once complete
      locks/<name>.lock       flock(2) files: one download of a blob, one unpack of a layer, at a
                              time, across podkit processes; `gc` is held shared by pulls and
                              exclusively by prune
      images.db               SQLite: image name -> manifest digest, config digest, size

Nothing half-written is ever used: a blob enters blobs/ by rename after its digest was checked,
a layer enters layers/ by rename after it was unpacked whole. A kill -9 or a full disk leaves an
ingest file (resumed next time, and checked) or a .tmp- directory (removed next time).
Locks are taken in threads, not on the event loop: a second podkit waiting for a layer another
one is downloading must not stall its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from podkit.common.userns import remove_tree
from podkit.oci.manifest import sha256


class StoreError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ImageRecord:
    name: str  # the normalised reference it was pulled as
    digest: str  # the manifest's digest (the one for this platform)
    config: str  # the config blob's digest: the image ID
    size: int  # compressed layers + config + manifest, as `podman images` counts
    created: str  # the config's `created`
    pulled: float  # when it was pulled (epoch seconds)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        # asyncio locks of this process's pulls, taken before the flock of the same name
        # (pull.py); created by the pulls, on their event loop.
        self.process_locks: dict[str, asyncio.Lock] = {}
        for sub in ("blobs/sha256", "ingest", "layers", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Layers hold setuid-root files and device nodes: no other user may reach them.
        os.chmod(root / "layers", 0o700)
        self._db = sqlite3.connect(root / "images.db", isolation_level=None, timeout=30)
        # Switching a new database to WAL answers "locked" at once, without waiting, while
        # another podkit does the same: one at a time.
        with self.lock("db"):
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS images (name TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                "config TEXT NOT NULL, size INTEGER NOT NULL, created TEXT NOT NULL, "
                "pulled REAL NOT NULL)"
            )

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        data = self.blob_path(digest).read_bytes()
        if sha256(data) != digest:  # a blob changed on disk: never use it
            raise StoreError(f"blob {digest} in the store does not match its digest")
        return data

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store small content (a manifest, a config) that the caller has checked."""
        if sha256(data) != digest:
            raise StoreError(f"content does not match its digest {digest}")
        path = self.blob_path(digest)
        if path.exists():
            return
        tmp = self.root / "ingest" / f".put-{os.getpid()}-{_hex(digest)}"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def ingest_path(self, digest: str) -> Path:
        return self.root / "ingest" / _hex(digest)

    def commit_ingest(self, digest: str) -> Path:
        """Move a downloaded and checked blob into place."""
        path = self.blob_path(digest)
        os.replace(self.ingest_path(digest), path)
        return path

    # -- layers ------------------------------------------------------------------------------

    def layer_path(self, chain_id: str) -> Path:
        return self.root / "layers" / _hex(chain_id)

    def has_layer(self, chain_id: str) -> bool:
        return self.layer_path(chain_id).is_dir()

    def new_layer_dir(self) -> Path:
        path = self.root / "layers" / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        return path

    def commit_layer(self, tmp: Path, chain_id: str) -> Path:
        path = self.layer_path(chain_id)
        os.rename(tmp, path)
        return path

    def remove_stale_tmp(self) -> None:
        """Layers left half unpacked by a podkit that died: never used, removed. Only those of
        processes that are gone (another podkit may be unpacking right now)."""
        for entry in (self.root / "layers").glob(".tmp-*"):
            pid = entry.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                remove_tree(entry)

    # -- locks -------------------------------------------------------------------------------

    def acquire(self, name: str, *, shared: bool = False) -> int:
        """A flock across processes (exclusive unless `shared`), held until the returned fd is
        closed (blocking: call it in a thread)."""
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        fd = self.acquire(name, shared=shared)
        try:
            yield
        finally:
            os.close(fd)  # releases the lock

    # -- names -------------------------------------------------------------------------------

    def put_image(self, record: ImageRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.digest,
                record.config,
                record.size,
                record.created,
                record.pulled,
            ),
        )

    def get_image(self, name: str) -> ImageRecord | None:
        row = self._db.execute("SELECT * FROM images WHERE name = ?", (name,)).fetchone()
        return ImageRecord(*row) if row else None

    def images(self) -> list[ImageRecord]:
        return [ImageRecord(*row) for row in self._db.execute("SELECT * FROM images ORDER BY name")]

    def remove_image(self, name: str) -> bool:
        return self._db.execute("DELETE FROM images WHERE name = ?", (name,)).rowcount > 0


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise StoreError(f"not a sha256 digest: {digest!r}")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
