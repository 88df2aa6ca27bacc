"""Unpack one OCI image layer (a tar stream) into a directory that overlayfs stacks as a lowerdir.

    unpack_layer(source, dest_dir, *, rootless, owners=None) -> UnpackStats  raises LayerError

`source` is the layer blob's path or a readable binary stream (read once, front to back: a pipe
or an HTTP body will do); gzip (1f 8b) and zstd (28 b5 2f fd) are told by their magic bytes,
anything else is read as plain tar. Nothing is held in memory beyond 1 MiB buffers, and tar is
only parsed (tarfile's "r|" stream mode), never extracted by tarfile: its extraction filters drop
setuid bits and resolve an image's absolute symlinks against the host.

`dest_dir` is an existing, empty directory that nothing else writes to while this runs, inside a
directory closed to other users (as root the layer holds setuid-root files and device nodes).
No digest is checked here (the store checks the blob's), but UnpackStats.diff_id is the sha256
of the uncompressed tar, for the caller to compare with the image config's rootfs.diff_ids. A
bad entry, or a truncated or corrupt stream, raises `LayerError` (layer_entries.py) naming the
entry and the reason, and leaves a partial directory: callers unpack into a temporary directory
and rename it into place only on success. A stream cut short is told by the tar's missing
end-of-archive block (tarfile alone would take it for a whole archive), and the gzip trailer is
checked as the stream is drained; python-zstandard ends a cut zstd frame quietly, so a cut in
the zero padding after the tar's end shows only in the diff_id.

The core promise: nothing is written outside `dest_dir`, whatever the layer holds. Each entry's
parent directory is resolved with openat2(2) and RESOLVE_IN_ROOT relative to a descriptor of
`dest_dir`, so the kernel resolves every symlink and ".." on the way as if `dest_dir` were "/":
an in-image symlink to "/" or "../../.." leads back into the layer, not to the host, and there is
no gap between checking a path and using it (a realpath check in Python could be raced, and
would resolve in-image absolute links against the host). Missing parents are made one component
at a time in their resolved parent; a parent that is a symlink to a directory the layer does not
have is refused, as Docker does. The last component is created with *at calls relative to the
parent's descriptor and never followed: whatever is there is removed first (a file replacing a
directory of the same layer, as Docker does), then O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat,
symlinkat, mknodat, linkat without AT_SYMLINK_FOLLOW. Needs Linux >= 5.6 (openat2).

The layer directory holds the layer's files with their modes (setuid, setgid and sticky too:
chmod comes after chown, which clears them), mtimes to the nanosecond (directories last, deepest
first, once nothing more is written into them) and, as root, the owners from the tar headers and
the security.capability xattr (file capabilities, e.g. ping); other xattrs are not kept. The
OCI whiteouts become what overlayfs reads (Documentation/filesystems/overlayfs.rst, "Whiteouts
and opaque directories"):

- as root: `.wh.NAME` is a character device 0/0 named NAME, `.wh..wh..opq` sets the xattr
  trusted.overlay.opaque=y on its directory;
- rootless (not real root; the overlay is mounted with `userxattr` in a user namespace, where
  an ordinary user cannot make device nodes): `.wh.NAME` is an empty regular file NAME with the
  xattr user.overlay.whiteout, its directory marked user.overlay.opaque=x (the kernel looks for
  such whiteouts only in directories so marked), and `.wh..wh..opq` sets user.overlay.opaque=y.
  xattr whiteouts need Linux >= 6.8 (6.7 read them, with another directory mark) and a
  filesystem with user xattrs for `dest_dir` (ext4, xfs, btrfs, tmpfs >= 6.6). Rootless, files
  belong to the unpacking user (stats.ownership_kept is False) unless `owners` is asked for (as
  root of a user namespace mapped with subordinate ids: unpack_mapped.py; an owner outside the
  mapping is then a LayerError), device nodes are skipped with one warning, and directories are
  writable by their owner until the end so a layer's read-only directory can still be filled.

A whiteout hides only the layers below (OCI image spec): an entry of the same layer that it
names stays (a directory is made opaque instead), and a directory that replaces one of this
layer's whiteouts is made opaque.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

import zstandard

from podkit.common.libc import libc
from podkit.oci.layer_entries import (
    CAPABILITY_XATTR,
    DEVICE_KINDS,
    Create,
    Kind,
    LayerError,
    LayerPath,
    OpaqueDir,
    Skip,
    Whiteout,
    display,
    plan_entry,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["LayerError", "UnpackStats", "unpack_layer"]

log = logging.getLogger("podkit.oci")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20

_SYS_OPENAT2 = 437  # the same number on every architecture but alpha
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_EAGAIN_TRIES = 8  # openat2 says EAGAIN when a rename elsewhere raced the lookup: try again

_ROOT_OPAQUE = "trusted.overlay.opaque"
_USER_OPAQUE = "user.overlay.opaque"
_USER_WHITEOUT = "user.overlay.whiteout"
_IMPLICIT_DIR_MODE = 0o755  # a parent the layer has no entry for, as Docker makes them
_WORKING_DIR_MODE = 0o700  # until the end: the layer's own mode may forbid writing into it

# What a broken layer stream raises while it is read (gzip.BadGzipFile is an OSError too).
_STREAM_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    zstandard.ZstdError,
)
# tarfile's sign of the all-zero end-of-archive block; typeshed does not list the class.
_END_OF_ARCHIVE: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]


@dataclass
class UnpackStats:
    compression: str = "none"  # "gzip", "zstd" or "none", as the magic bytes said
    entries: int = 0  # tar members read
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    special_files: int = 0  # fifos, and device nodes as root
    whiteouts: int = 0
    opaque_dirs: int = 0
    bytes_written: int = 0
    devices_skipped: int = 0  # rootless: an ordinary user cannot make device nodes
    ownership_kept: bool = True  # False rootless: everything belongs to the unpacking user
    skipped: list[str] = field(default_factory=list)  # "name: reason" of members not written
    # sha256 of the uncompressed tar stream: the image config's rootfs.diff_ids entry for this
    # layer, for the caller to check (this module checks no digest)
    diff_id: str = ""


def unpack_layer(
    source: str | os.PathLike[str] | IO[bytes],
    dest_dir: str | os.PathLike[str],
    *,
    rootless: bool,
    owners: bool | None = None,
) -> UnpackStats:
    """Unpack the layer `source` into the empty directory `dest_dir` (see the module docstring);
    LayerError names the entry that could not be unpacked and why. `owners`: chown entries to
    the owners the tar names (default: as root only)."""
    owners = not rootless if owners is None else owners
    stats = UnpackStats(ownership_kept=owners)
    with ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            source = stack.enter_context(open(source, "rb"))
        hashing = _Hashing(_decompressed(source, stats, stack))
        root_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, root_fd)
        layer = _LayerDir(root_fd, rootless, stats, owners)
        _unpack_stream(io.BufferedReader(hashing, _CHUNK), layer)
        layer.finish()
        stats.diff_id = f"sha256:{hashing.digest.hexdigest()}"
    _report(stats)
    return stats


# --- the stream -------------------------------------------------------------------------------


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed(io.RawIOBase):
    """`rest` with `head`, already read from it to sniff the compression, put back in front."""

    def __init__(self, head: bytes, rest: _Readable) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Hashing(io.RawIOBase):
    """`source` read through, its bytes hashed on the way (the DiffID)."""

    def __init__(self, source: _Readable) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        self.digest.update(data)
        return len(data)


def _read_head(source: IO[bytes], size: int) -> bytes:
    head = b""
    while len(head) < size and (more := source.read(size - len(head))):
        head += more  # a pipe may hand out fewer bytes than asked
    return head


def _decompressed(source: IO[bytes], stats: UnpackStats, stack: ExitStack) -> _Readable:
    """The plain tar stream of `source`, decompressed as its magic bytes say, streaming."""
    head = _read_head(source, len(ZSTD_MAGIC))
    raw = io.BufferedReader(_Prefixed(head, source), _CHUNK)
    if head.startswith(GZIP_MAGIC):
        stats.compression = "gzip"
        gunzip = gzip.GzipFile(fileobj=raw, mode="rb")
        stack.callback(gunzip.close)
        return gunzip
    if head == ZSTD_MAGIC:
        stats.compression = "zstd"
        # read_across_frames: a layer may be several zstd frames back to back
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return stack.enter_context(reader)
    return raw


def _member_class(end_seen: list[bool]) -> type[tarfile.TarInfo]:
    """A TarInfo that notes the end-of-archive block: tarfile ends quietly, as if the archive
    were whole, at a stream cut on a header boundary or at a garbled header."""

    class _Member(tarfile.TarInfo):
        __slots__ = ()

        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> _Member:
            try:
                return super().fromtarfile(tar)
            except _END_OF_ARCHIVE:
                end_seen.append(True)
                raise

    return _Member


def _unpack_stream(stream: IO[bytes], layer: _LayerDir) -> None:
    end_seen: list[bool] = []
    where = "(before the first entry)"  # roughly: decompression reads ahead
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_member_class(end_seen)) as tar:
            while (member := tar.next()) is not None:
                # Stream mode still keeps every header read: memory would grow with the entries.
                tar.members.clear()  # type: ignore[attr-defined]
                where = member.name
                layer.unpack(member, tar)
                where = f"(after {member.name})"
        if not end_seen:
            raise LayerError(where, "the tar stream ends before its end-of-archive block")
        while stream.read(_CHUNK):
            pass  # the compressed stream's own end and checksum are checked as it is drained
    except _STREAM_ERRORS as e:
        raise LayerError(where, f"truncated or corrupt layer stream: {e}") from e


def _report(stats: UnpackStats) -> None:
    if stats.devices_skipped:
        log.warning("skipped %d device nodes: rootless", stats.devices_skipped)
    if not stats.ownership_kept:
        log.info("rootless: the layer's file owners are not kept; uid %d owns all", os.getuid())


# --- openat2 ----------------------------------------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    raw = os.fsencode(path)
    err = errno.EAGAIN
    for _ in range(_EAGAIN_TRIES):
        fd: int = libc().syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def _open_in_root(root_fd: int, path: LayerPath, flags: int = os.O_PATH) -> int:
    """A descriptor of the directory `path`, every symlink and ".." on the way resolved as if
    root_fd were "/" (RESOLVE_IN_ROOT)."""
    return _openat2(
        root_fd,
        "/".join(path) or ".",
        flags | os.O_DIRECTORY,
        _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS,
    )


# --- the layer directory ----------------------------------------------------------------------


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(source: IO[bytes], fd: int) -> int:
    total = 0
    while chunk := source.read(_CHUNK):
        _write_all(fd, chunk)
        total += len(chunk)
    return total


def _set_opaque(dir_fd: int, name: str, xattr: str, value: bytes) -> None:
    """Set the opaque xattr on the directory `name`, opened without following a symlink."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.setxattr(fd, xattr, value)
    finally:
        os.close(fd)


def _describe(e: OSError) -> str:
    where = f" ({os.fsdecode(e.filename)})" if e.filename else ""
    return f"{e.strerror or e}{where}"


class _LayerDir:
    """The directory a layer is unpacked into, reached only through openat2 from root_fd."""

    def __init__(self, root_fd: int, rootless: bool, stats: UnpackStats, owners: bool) -> None:
        self.root_fd = root_fd
        self.rootless = rootless
        self.owners = owners
        self.stats = stats
        # Directory modes and mtimes, set at the end: writing into a directory changes its
        # mtime, and its own mode may forbid writing into it (rootless).
        self.dir_meta: dict[LayerPath, tuple[int, int]] = {}
        self.whiteouts: set[LayerPath] = set()  # this layer's, until something replaces them
        self.opaque_xattr = _USER_OPAQUE if rootless else _ROOT_OPAQUE

    # entries

    def unpack(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.stats.entries += 1
        try:
            action = plan_entry(member)
            if isinstance(action, Skip):
                self.stats.skipped.append(f"{member.name}: {action.reason}")
            elif isinstance(action, Whiteout):
                self.whiteout(action.path)
            elif isinstance(action, OpaqueDir):
                self.make_opaque(action.path)
            else:
                self.create(member, action, tar)
        except _STREAM_ERRORS:
            raise  # the stream's fault, not this entry's: _unpack_stream says so
        except OSError as e:
            raise LayerError(member.name, _describe(e)) from e
        except ValueError as e:  # os calls refuse NUL bytes (a symlink target, say)
            raise LayerError(member.name, str(e)) from e

    def create(self, member: tarfile.TarInfo, entry: Create, tar: tarfile.TarFile) -> None:
        if entry.kind is Kind.DIR:
            self.make_dir(entry)
            return
        if entry.kind in DEVICE_KINDS and self.rootless:
            self.stats.devices_skipped += 1
            return
        with self.parent(entry.path) as (parent_fd, name):
            self.remove(parent_fd, name, entry.path)
            if entry.kind is Kind.FILE:
                self.write_file(parent_fd, name, entry, tar, member)
            elif entry.kind is Kind.SYMLINK:
                self.make_symlink(parent_fd, name, entry)
            elif entry.kind is Kind.HARDLINK:
                self.make_hardlink(parent_fd, name, member, entry)
            else:
                self.make_node(parent_fd, name, entry)

    def write_file(
        self,
        parent_fd: int,
        name: str,
        entry: Create,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
    ) -> None:
        data = tar.extractfile(member)
        assert data is not None  # a regular file's member always has a reader
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent_fd)
        try:
            self.stats.bytes_written += _copy(data, fd)
            if self.owners:
                self.own(entry, lambda: os.fchown(fd, entry.uid, entry.gid))
            os.fchmod(fd, entry.mode)  # after chown, which clears setuid and setgid
            if entry.capability is not None and not self.rootless:
                os.setxattr(fd, CAPABILITY_XATTR, entry.capability)  # after chown: it clears it
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1

    def own_at(self, parent_fd: int, name: str, entry: Create) -> None:
        self.own(
            entry,
            lambda: os.chown(name, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False),
        )

    def own(self, entry: Create, chown: Callable[[], None]) -> None:
        try:
            chown()
        except OSError as e:
            if e.errno != errno.EINVAL or not self.rootless:
                raise
            raise OSError(  # a user namespace maps only so many ids
                e.errno,
                f"owner {entry.uid}:{entry.gid} is beyond the subordinate ids of this user "
                "(/etc/subuid, /etc/subgid)",
            ) from None

    def make_symlink(self, parent_fd: int, name: str, entry: Create) -> None:
        os.symlink(entry.symlink_target, name, dir_fd=parent_fd)
        if self.owners:
            self.own_at(parent_fd, name, entry)
        times = (entry.mtime_ns, entry.mtime_ns)
        os.utime(name, ns=times, dir_fd=parent_fd, follow_symlinks=False)
        self.stats.symlinks += 1

    def make_node(self, parent_fd: int, name: str, entry: Create) -> None:
        file_type = {
            Kind.FIFO: stat.S_IFIFO,
            Kind.CHAR_DEVICE: stat.S_IFCHR,
            Kind.BLOCK_DEVICE: stat.S_IFBLK,
        }[entry.kind]
        device = os.makedev(*entry.device)
        os.mknod(name, file_type | 0o600, device, dir_fd=parent_fd)
        if self.owners:
            self.own_at(parent_fd, name, entry)
        # follow_symlinks=False: glibc refuses rather than follows if a symlink got there
        os.chmod(name, entry.mode, dir_fd=parent_fd, follow_symlinks=False)
        times = (entry.mtime_ns, entry.mtime_ns)
        os.utime(name, ns=times, dir_fd=parent_fd, follow_symlinks=False)
        self.stats.special_files += 1

    def make_hardlink(
        self, parent_fd: int, name: str, member: tarfile.TarInfo, entry: Create
    ) -> None:
        try:
            with self.parent(entry.hardlink_to, create=False) as (target_fd, target):
                os.link(
                    target,
                    name,
                    src_dir_fd=target_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,  # link a symlink itself, never what it names
                )
        except FileNotFoundError:
            raise LayerError(
                member.name,
                f"hardlink target {display(entry.hardlink_to)} is not in the layer "
                "(a hardlink may only name an earlier entry of its own layer)",
            ) from None
        self.stats.hardlinks += 1

    def make_dir(self, entry: Create) -> None:
        if not entry.path:  # the layer root: dest_dir itself
            if self.owners:
                self.own(entry, lambda: os.fchown(self.root_fd, entry.uid, entry.gid))
        else:
            with self.parent(entry.path) as (parent_fd, name):
                existing = _lstat(parent_fd, name)
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    self.new_dir(parent_fd, name, entry.path)
                # else: the same layer named the directory twice, or made it a parent first
                if self.owners:
                    self.own_at(parent_fd, name, entry)
        self.dir_meta[entry.path] = (entry.mode, entry.mtime_ns)
        self.stats.directories += 1

    def new_dir(
        self, parent_fd: int, name: str, path: LayerPath, mode: int = _WORKING_DIR_MODE
    ) -> None:
        """mkdir, replacing whatever is there; opaque if it replaces this layer's whiteout."""
        was_whiteout = path in self.whiteouts
        self.remove(parent_fd, name, path)
        os.mkdir(name, mode, dir_fd=parent_fd)
        if was_whiteout:  # the layer deleted the lower directory, then made a new one
            _set_opaque(parent_fd, name, self.opaque_xattr, b"y")

    # whiteouts

    def whiteout(self, path: LayerPath) -> None:
        with self.parent(path) as (parent_fd, name):
            existing = _lstat(parent_fd, name)
            if existing is not None:
                # It hides only the layers below: this layer's own entry stays, and a
                # directory hides the lower one's contents by being opaque.
                if stat.S_ISDIR(existing.st_mode):
                    _set_opaque(parent_fd, name, self.opaque_xattr, b"y")
            elif self.rootless:
                self.xattr_whiteout(parent_fd, name, path)
            else:
                os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
        self.whiteouts.add(path)
        self.stats.whiteouts += 1

    def xattr_whiteout(self, parent_fd: int, name: str, path: LayerPath) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent_fd)
        try:
            os.setxattr(fd, _USER_WHITEOUT, b"y")  # its presence is what counts
        finally:
            os.close(fd)
        dir_fd = _open_in_root(self.root_fd, path[:-1], os.O_RDONLY)
        try:
            if _getxattr(dir_fd, _USER_OPAQUE) != b"y":  # "y" hides more already: keep it
                os.setxattr(dir_fd, _USER_OPAQUE, b"x")
        finally:
            os.close(dir_fd)

    def make_opaque(self, path: LayerPath) -> None:
        # The marker's directory is found as any entry's parent is: resolved in the root.
        dir_fd = self.open_dir(path, flags=os.O_RDONLY)
        try:
            os.setxattr(dir_fd, self.opaque_xattr, b"y")
        finally:
            os.close(dir_fd)
        self.stats.opaque_dirs += 1

    # paths

    @contextmanager
    def parent(self, path: LayerPath, *, create: bool = True) -> Iterator[tuple[int, str]]:
        """(a descriptor of the parent of `path`, resolved in the root; the last component)"""
        parent_fd = self.open_dir(path[:-1], create=create)
        try:
            yield parent_fd, path[-1]
        finally:
            os.close(parent_fd)

    def open_dir(self, path: LayerPath, *, create: bool = True, flags: int = os.O_PATH) -> int:
        try:
            return _open_in_root(self.root_fd, path, flags)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise
        self.make_parents(path)
        return _open_in_root(self.root_fd, path, flags)

    def make_parents(self, path: LayerPath) -> None:
        """Make the missing directories of `path`, each in its parent resolved in the root."""
        for depth in range(1, len(path) + 1):
            try:
                os.close(_open_in_root(self.root_fd, path[:depth]))
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                if path[:depth] not in self.whiteouts:
                    raise
            with self.parent(path[:depth], create=False) as (parent_fd, name):
                if path[:depth] in self.whiteouts:
                    self.new_dir(parent_fd, name, path[:depth], _IMPLICIT_DIR_MODE)
                    continue
                try:
                    os.mkdir(name, _IMPLICIT_DIR_MODE, dir_fd=parent_fd)
                except FileExistsError:  # openat2 found nothing, mkdir something: a symlink
                    raise OSError(
                        errno.ENOTDIR,
                        "a parent is a symlink to a directory the layer does not have",
                        display(path[:depth]),
                    ) from None

    def remove(self, parent_fd: int, name: str, path: LayerPath) -> None:
        """Remove what `name` is in parent_fd, if anything: a later entry replaces it."""
        existing = _lstat(parent_fd, name)
        if existing is None:
            return
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # descriptor-based: follows no symlink
            self.forget_under(path)
        else:
            os.unlink(name, dir_fd=parent_fd)
        self.whiteouts.discard(path)

    def forget_under(self, path: LayerPath) -> None:
        """Drop what was noted for a removed directory's tree."""
        n = len(path)
        self.dir_meta = {p: m for p, m in self.dir_meta.items() if p[:n] != path}
        self.whiteouts = {p for p in self.whiteouts if p[:n] != path}

    # the end

    def finish(self) -> None:
        """Directory modes and mtimes, deepest first, once nothing more is written into them."""
        for path in sorted(self.dir_meta, key=len, reverse=True):
            mode, mtime = self.dir_meta[path]
            if not path:
                os.fchmod(self.root_fd, mode)
                os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            try:
                with self.parent(path, create=False) as (parent_fd, name):
                    existing = _lstat(parent_fd, name)
                    if existing is None or not stat.S_ISDIR(existing.st_mode):
                        continue  # replaced later in the layer by something that is no directory
                    os.chmod(name, mode, dir_fd=parent_fd, follow_symlinks=False)
                    os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)
            except OSError as e:
                raise LayerError(display(path), _describe(e)) from e


def _getxattr(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise
        return None
