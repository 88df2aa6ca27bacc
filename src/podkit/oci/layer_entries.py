"""Tar entries of an image layer, checked and planned without touching the filesystem.

`plan_entry(member)` turns one tar header into one `Action` for the unpacker (unpack.py):

- `Create`: write a file, directory, symlink, hardlink, device node or fifo at `path`;
- `Whiteout`: `.wh.NAME` hides NAME of the layers below (OCI image spec, "Whiteouts");
- `OpaqueDir`: `.wh..wh..opq` hides everything the layers below have in its directory;
- `Skip`: a tar member that names no file (a GNU volume label), with the reason.

Anything else raises `LayerError`, naming the entry and the reason.

Paths are tuples of components relative to the layer root, `()` being the root itself. Names are
made relative as Docker and containerd do: a leading "/" or "./" is dropped (an image's absolute
names are relative to the image root, not the host's), "." and empty components vanish, and ".."
takes back the component before it; a ".." with nothing left to take back would climb above the
layer root, and the entry is rejected rather than clamped (a layer that tries is hostile or
broken). Symlink targets are stored verbatim: they are resolved inside the container later.

Modes keep the permission bits with setuid, setgid and sticky (images rely on them: sudo, ping,
/tmp); the file type bits some writers put in the mode field are dropped. Of the xattrs in PAX
headers only `security.capability` (file capabilities) is planned; the unpacker writes it as root.
"""

from __future__ import annotations

import enum
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

LayerPath = tuple[str, ...]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# AUFS's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): never a file of the image.
_AUFS_META_PREFIX = ".wh..wh."
CAPABILITY_XATTR = "security.capability"
_PAX_XATTR_PREFIX = "SCHILY.xattr."
MODE_BITS = 0o7777  # rwx for all three, plus setuid, setgid and sticky
_NS_PER_S = 1_000_000_000


class LayerError(Exception):
    """A layer that cannot be unpacked: `entry` is the tar member's name, `reason` says why."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class Kind(enum.Enum):
    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR_DEVICE = "character device"
    BLOCK_DEVICE = "block device"
    FIFO = "fifo"


DEVICE_KINDS = frozenset({Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE})

_KIND_BY_TYPE: Mapping[bytes, Kind] = {
    tarfile.REGTYPE: Kind.FILE,
    tarfile.AREGTYPE: Kind.FILE,
    tarfile.CONTTYPE: Kind.FILE,  # "contiguous file": a plain file to every other tool
    tarfile.GNUTYPE_SPARSE: Kind.FILE,  # tarfile reads the holes back as zeros
    tarfile.DIRTYPE: Kind.DIR,
    tarfile.SYMTYPE: Kind.SYMLINK,
    tarfile.LNKTYPE: Kind.HARDLINK,
    tarfile.CHRTYPE: Kind.CHAR_DEVICE,
    tarfile.BLKTYPE: Kind.BLOCK_DEVICE,
    tarfile.FIFOTYPE: Kind.FIFO,
}
# Members tar knows that name no file: skipped, not rejected.
_SKIPPED_TYPES: Mapping[bytes, str] = {b"V": "a GNU volume label, not a file"}


@dataclass(frozen=True)
class Create:
    path: LayerPath
    kind: Kind
    mode: int  # MODE_BITS of the header
    uid: int
    gid: int
    mtime_ns: int
    symlink_target: str = ""  # verbatim, relative or absolute
    hardlink_to: LayerPath = ()  # an earlier entry of the same layer
    device: tuple[int, int] = (0, 0)  # major, minor
    capability: bytes | None = None  # the security.capability xattr, FILE only


@dataclass(frozen=True)
class Whiteout:
    path: LayerPath  # the name to hide in the layers below


@dataclass(frozen=True)
class OpaqueDir:
    path: LayerPath  # the directory whose lower-layer contents are hidden


@dataclass(frozen=True)
class Skip:
    reason: str


Action = Create | Whiteout | OpaqueDir | Skip


def display(path: LayerPath) -> str:
    """`path` as the image sees it: "/etc/passwd", "/" for the root."""
    return "/" + "/".join(path)


def split_name(name: str) -> LayerPath:
    """The components of a member name relative to the layer root; LayerError if it climbs
    above the root or holds a NUL byte."""
    if "\0" in name:
        raise LayerError(name, "the name holds a NUL byte")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        else:
            raise LayerError(name, "'..' climbs above the layer root")
    return tuple(parts)


def whiteout_of(name: str, path: LayerPath) -> Whiteout | OpaqueDir | None:
    """What a whiteout-named entry means, None for an ordinary name; LayerError for `.wh.`
    names no layer format gives a meaning to."""
    for component in path[:-1]:
        if component.startswith(WHITEOUT_PREFIX):
            raise LayerError(name, f"a whiteout name ({component!r}) used as a directory")
    base = path[-1] if path else ""
    if base == OPAQUE_MARKER:
        return OpaqueDir(path[:-1])
    if base.startswith(_AUFS_META_PREFIX):
        raise LayerError(name, "an unknown .wh..wh. marker (AUFS metadata is not an OCI layer)")
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    hidden = base[len(WHITEOUT_PREFIX) :]
    if hidden in ("", ".", ".."):
        raise LayerError(name, "a whiteout that names no file")
    return Whiteout((*path[:-1], hidden))


def kind_of(member: tarfile.TarInfo) -> Kind | Skip:
    """The filesystem object a member makes, or why it makes none; LayerError for a member
    type tar does not define."""
    kind = _KIND_BY_TYPE.get(member.type)
    if kind is not None:
        return kind
    reason = _SKIPPED_TYPES.get(member.type)
    if reason is not None:
        return Skip(reason)
    raise LayerError(member.name, f"unknown tar member type {member.type!r}")


def kept_mode(mode: int) -> int:
    """The mode bits written: permissions with setuid, setgid and sticky; no file type bits."""
    return mode & MODE_BITS


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds; exact from a PAX "mtime" record (tarfile keeps only
    a float of it, which cannot hold nanoseconds in 2020s timestamps)."""
    text = member.pax_headers.get("mtime")
    if text is not None:
        try:
            return int(Decimal(text) * _NS_PER_S)
        except InvalidOperation:
            pass  # tarfile already read what it could of it into member.mtime
    return int(member.mtime * _NS_PER_S)


def capability_of(pax_headers: Mapping[str, str]) -> bytes | None:
    """The security.capability xattr from PAX headers (other xattrs are not kept); tarfile
    decoded its binary value with surrogateescape, undone here."""
    value = pax_headers.get(_PAX_XATTR_PREFIX + CAPABILITY_XATTR)
    return None if value is None else value.encode("utf-8", "surrogateescape")


def hardlink_target(member: tarfile.TarInfo, path: LayerPath) -> LayerPath:
    """A hardlink's target within the layer; LayerError if it is outside, the root or itself."""
    try:
        target = split_name(member.linkname)
    except LayerError as e:
        raise LayerError(member.name, f"hardlink target {member.linkname!r}: {e.reason}") from None
    if not target:
        raise LayerError(member.name, "a hardlink to the layer root")
    if target == path:
        raise LayerError(member.name, "a hardlink to itself")
    return target


def plan_entry(member: tarfile.TarInfo) -> Action:
    """What to do for one tar member (see the module docstring)."""
    path = split_name(member.name)
    marker = whiteout_of(member.name, path)
    if marker is not None:
        return marker  # by name, whatever the member type: as Docker and containerd read them
    kind = kind_of(member)
    if isinstance(kind, Skip):
        return kind
    if not path and kind is not Kind.DIR:
        raise LayerError(member.name, f"the layer root can only be a directory, not a {kind.value}")
    return Create(
        path=path,
        kind=kind,
        mode=kept_mode(member.mode),
        uid=member.uid,
        gid=member.gid,
        mtime_ns=mtime_ns(member),
        symlink_target=member.linkname if kind is Kind.SYMLINK else "",
        hardlink_to=hardlink_target(member, path) if kind is Kind.HARDLINK else (),
        device=(member.devmajor, member.devminor) if kind in DEVICE_KINDS else (0, 0),
        capability=capability_of(member.pax_headers) if kind is Kind.FILE else None,
    )
