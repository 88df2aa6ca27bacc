"""podkit.oci.unpack: layers built here with tarfile, unpacked into tmp_path, then looked at.

The hostile layers each check that nothing outside the layer directory changed: a snapshot of
tmp_path (where a "host" directory stands in for the host) before and after, and /etc/passwd's
inode and content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from podkit.oci.unpack import LayerError, UnpackStats, unpack_layer
from podkit_harness import SYSTEM_PYTHON, require_system_python

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
MTIME = 1_600_000_000  # 2020-09-13: any fixed time that unpacking could not produce itself

Entry = tuple[tarfile.TarInfo, bytes]


# --- building layers --------------------------------------------------------------------------


def entry(name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    info.mtime = MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, data


def file(name: str, data: bytes = b"", **fields: object) -> Entry:
    return entry(name, tarfile.REGTYPE, data, **fields)


def directory(name: str, **fields: object) -> Entry:
    return entry(name, tarfile.DIRTYPE, **fields)


def symlink(name: str, target: str, **fields: object) -> Entry:
    return entry(name, tarfile.SYMTYPE, linkname=target, **fields)


def hardlink(name: str, target: str) -> Entry:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def compress(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def write_layer(path: Path, entries: list[Entry], compression: str = "none") -> Path:
    path.write_bytes(compress(tar_bytes(entries), compression))
    return path


def unpack(
    tmp_path: Path, entries: list[Entry], compression: str = "none", *, rootless: bool = False
) -> tuple[Path, UnpackStats]:
    """The layer unpacked into tmp_path/layer, and the stats."""
    blob = write_layer(tmp_path / "layer.blob", entries, compression)
    dest = tmp_path / "layer"
    dest.mkdir()
    return dest, unpack_layer(blob, dest, rootless=rootless)


# --- watching for writes outside --------------------------------------------------------------


def fingerprint(path: Path) -> tuple[object, ...]:
    st = path.lstat()
    content: object = None
    if stat.S_ISREG(st.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    return (st.st_ino, st.st_mode, st.st_uid, st.st_nlink, st.st_size, st.st_mtime_ns, content)


def snapshot(top: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Every path under `top` but `skip`'s tree, with what a write would change."""
    seen = {".": fingerprint(top)}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            seen[str(path.relative_to(top))] = fingerprint(path)
    return seen


class Host:
    """tmp_path/host stands in for the host: a secret file and a directory, watched along with
    the rest of tmp_path and /etc/passwd; tmp_path/layer is where the layer goes."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.dir = tmp_path / "host"
        (self.dir / "dir").mkdir(parents=True)
        self.secret = self.dir / "secret"
        self.secret.write_text("the host's secret\n")
        self.dest = tmp_path / "layer"
        self.dest.mkdir()
        self.blob = tmp_path / "hostile.blob"
        self._before = self._state()

    def _state(self) -> tuple[dict[str, tuple[object, ...]], tuple[object, ...]]:
        return snapshot(self.tmp_path, self.dest), fingerprint(Path("/etc/passwd"))

    def unpack(self, entries: list[Entry], compression: str = "none") -> UnpackStats:
        return self.unpack_bytes(compress(tar_bytes(entries), compression))

    def unpack_bytes(self, blob: bytes) -> UnpackStats:
        self.blob.write_bytes(blob)
        self._before = self._state()  # the blob is written: from here on, nothing may change
        return unpack_layer(self.blob, self.dest, rootless=False)

    def assert_untouched(self) -> None:
        before, passwd_before = self._before
        after, passwd_after = self._state()
        assert after == before
        assert passwd_after == passwd_before
        assert self.secret.read_text() == "the host's secret\n"

    def inside(self, absolute: Path) -> Path:
        """Where the host path `absolute` lands in the layer: under its root."""
        return self.dest / absolute.relative_to("/")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# --- hostile layers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../host/pwned", "./../host/secret", "a/../../host/pwned", "/../host/pwned"]
)
def test_names_climbing_out_with_dotdot_are_rejected(host: Host, name: str) -> None:
    with pytest.raises(LayerError, match="climbs above the layer root") as caught:
        host.unpack([file("ok", b"fine"), file(name, b"pwned")])
    assert caught.value.entry == name
    host.assert_untouched()


def test_absolute_names_land_inside_the_layer(host: Host) -> None:
    host.unpack(
        [
            file("/etc/passwd", b"pwned\n"),
            file(f"{host.dir}/pwned", b"pwned\n"),
            file(f"{host.secret}", b"pwned\n"),
        ]
    )
    assert (host.dest / "etc" / "passwd").read_bytes() == b"pwned\n"
    assert host.inside(host.dir / "pwned").read_bytes() == b"pwned\n"
    assert host.inside(host.secret).read_bytes() == b"pwned\n"
    host.assert_untouched()


def test_a_symlink_to_root_leads_to_the_layer_root_not_the_hosts(host: Host) -> None:
    host.unpack(
        [
            symlink("escape", "/"),
            file("escape/etc/passwd", b"pwned\n"),
            file(f"escape{host.dir}/pwned", b"pwned\n"),
            directory(f"escape{host.dir}/dir/", mode=0o700, mtime=0),
            file(f"escape{host.secret}", b"pwned\n"),
        ]
    )
    assert os.readlink(host.dest / "escape") == "/"  # kept, for the container to resolve
    assert (host.dest / "etc" / "passwd").read_bytes() == b"pwned\n"
    assert host.inside(host.dir / "pwned").read_bytes() == b"pwned\n"
    assert host.inside(host.secret).read_bytes() == b"pwned\n"
    assert stat.S_IMODE(host.inside(host.dir / "dir").stat().st_mode) == 0o700
    host.assert_untouched()


def test_a_symlink_climbing_with_dotdot_stays_in_the_layer(host: Host) -> None:
    host.unpack(
        [
            symlink("up", "../../.."),
            file("up/pwned", b"pwned\n"),
            directory("host/"),  # the layer's own /host, where the next link leads
            directory("a/b/"),
            symlink("a/b/up", "../../../../host"),
            file("a/b/up/pwned2", b"pwned\n"),
        ]
    )
    assert (host.dest / "pwned").read_bytes() == b"pwned\n"
    assert (host.dest / "host" / "pwned2").read_bytes() == b"pwned\n"
    host.assert_untouched()


def test_a_symlink_to_a_directory_the_layer_lacks_is_refused_as_a_parent(host: Host) -> None:
    # Resolved in the layer, the link leads nowhere: refused, as Docker does (the host's
    # directory of that name is never the one meant).
    with pytest.raises(LayerError, match="symlink to a directory the layer does not have"):
        host.unpack([symlink("to-host", str(host.dir)), file("to-host/pwned", b"pwned\n")])
    host.assert_untouched()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/etc/passwd", "not in the layer"),
        ("etc/passwd", "not in the layer"),
        ("../host/secret", "climbs above the layer root"),
        ("../../../../../../etc/passwd", "climbs above the layer root"),
    ],
)
def test_hardlinks_to_host_files_are_rejected(host: Host, target: str, reason: str) -> None:
    with pytest.raises(LayerError, match=reason) as caught:
        host.unpack([hardlink("stolen", target)])
    assert caught.value.entry == "stolen"
    host.assert_untouched()


def test_hardlinks_through_symlinks_out_are_rejected(host: Host) -> None:
    for entries in (
        [symlink("root", "/"), hardlink("stolen", "root/etc/passwd")],
        [symlink("h", str(host.dir)), hardlink("stolen", "h/secret")],
        [hardlink("stolen", str(host.secret))],
    ):
        with pytest.raises(LayerError, match="not in the layer"):
            host.unpack(entries)
        host.assert_untouched()
        shutil.rmtree(host.dest)
        host.dest.mkdir()


def test_a_hardlink_through_a_symlink_to_root_links_the_layers_own_file(host: Host) -> None:
    host.unpack(
        [
            file("etc/passwd", b"the image's\n"),
            symlink("root", "/"),
            hardlink("linked", "root/etc/passwd"),
        ]
    )
    linked = (host.dest / "linked").stat()
    assert linked.st_ino == (host.dest / "etc" / "passwd").stat().st_ino
    assert linked.st_ino != os.stat("/etc/passwd").st_ino
    host.assert_untouched()


def test_a_file_replacing_a_symlink_is_not_written_through_it(host: Host) -> None:
    host.unpack(
        [
            symlink("target", str(host.secret)),
            file("target", b"pwned\n", mode=0o4777),
            symlink("d", str(host.dir)),
            directory("d/", mode=0o700, mtime=0),  # a directory over a symlink to a host dir
            symlink("f", str(host.dir / "fifo")),
            entry("f", tarfile.FIFOTYPE, mode=0o666),
        ]
    )
    assert (host.dest / "target").read_bytes() == b"pwned\n"
    assert not (host.dest / "target").is_symlink()
    assert (host.dest / "d").is_dir() and not (host.dest / "d").is_symlink()
    assert stat.S_ISFIFO((host.dest / "f").lstat().st_mode)
    host.assert_untouched()


def test_opaque_markers_and_whiteouts_under_a_symlink_out_touch_nothing_outside(
    host: Host,
) -> None:
    for entries in (
        [symlink("o", str(host.dir)), file("o/.wh..wh..opq")],
        [symlink("o", str(host.dir)), file("o/.wh.secret")],
        [symlink("o", "/"), file(f"o{host.dir}/.wh.secret")],
        [symlink("o", "../.."), file("o/.wh..wh..opq")],
    ):
        with contextlib.suppress(LayerError):
            host.unpack(entries)  # confined to the layer, or refused: never outside
        host.assert_untouched()
        assert os.listxattr(host.dir) == []
        shutil.rmtree(host.dest)
        host.dest.mkdir()


def test_a_symlink_loop_is_an_error_not_a_hang(host: Host) -> None:
    with pytest.raises(LayerError, match="a/x") as caught:
        host.unpack([symlink("a", "b"), symlink("b", "a"), file("a/x", b"x")])
    assert "symbolic links" in caught.value.reason
    host.assert_untouched()


def test_unknown_member_types_are_rejected(host: Host) -> None:
    with pytest.raises(LayerError, match="unknown tar member type") as caught:
        host.unpack([file("ok"), entry("weird", b"Z")])
    assert caught.value.entry == "weird"
    host.assert_untouched()


# --- broken streams ---------------------------------------------------------------------------


def layer_with_a_big_file() -> bytes:
    return tar_bytes([directory("d/"), file("d/big", os.urandom(200_000)), file("d/after")])


@pytest.mark.parametrize(
    "cut",
    [
        lambda b: b[: len(b) // 2],  # in the middle
        lambda b: b[:-8],  # the gzip trailer (CRC and size) lost
        lambda b: b[:2],  # the magic alone
        lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:400]) + b[400:],  # corrupt
    ],
    ids=["half", "trailer", "magic", "corrupt"],
)
def test_a_broken_gzip_stream_is_a_layer_error(host: Host, cut: Callable[[bytes], bytes]) -> None:
    with pytest.raises(LayerError, match="truncated or corrupt layer stream"):
        host.unpack_bytes(cut(gzip.compress(layer_with_a_big_file())))
    host.assert_untouched()


def test_a_cut_plain_tar_is_a_layer_error(tmp_path: Path) -> None:
    raw = layer_with_a_big_file()
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerError, match="truncated or corrupt") as caught:
        unpack_layer(io.BytesIO(raw[:100_000]), dest, rootless=False)
    assert caught.value.entry == "d/big"


def test_a_tar_without_its_end_of_archive_block_is_a_layer_error(tmp_path: Path) -> None:
    # Cut on a header boundary, so tarfile alone would take it for a whole archive.
    info, _ = file("a", b"")
    raw = info.tobuf(tarfile.PAX_FORMAT)
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerError, match="ends before its end-of-archive block"):
        unpack_layer(io.BytesIO(raw), dest, rootless=False)


def test_a_cut_zstd_stream_is_a_layer_error(tmp_path: Path) -> None:
    raw = zstandard.ZstdCompressor().compress(layer_with_a_big_file())
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerError, match="truncated or corrupt"):
        unpack_layer(io.BytesIO(raw[: len(raw) // 2]), dest, rootless=False)


# --- what a layer holds -----------------------------------------------------------------------


def test_directories_files_and_modes_with_setuid_setgid_sticky(tmp_path: Path) -> None:
    dest, stats = unpack(
        tmp_path,
        [
            directory("./", mode=0o755),
            directory("etc/", mode=0o750),
            file("etc/app/conf.d/app.conf", b"key=value\n", mode=0o640),
            file("usr/bin/sudo", b"#!sudo", mode=0o4755),
            file("usr/bin/wall", b"#!wall", mode=0o2755),
            directory("tmp/", mode=0o1777),
            directory("ro/", mode=0o555),
            file("ro/inside", b"written before ro/ became read-only", mode=0o444),
        ],
    )
    assert (dest / "etc/app/conf.d/app.conf").read_text() == "key=value\n"

    def mode(path: str) -> int:
        return stat.S_IMODE((dest / path).lstat().st_mode)

    assert mode("etc") == 0o750
    assert mode("etc/app") == 0o755  # a parent the layer has no entry for
    assert mode("etc/app/conf.d/app.conf") == 0o640
    assert mode("usr/bin/sudo") == 0o4755
    assert mode("usr/bin/wall") == 0o2755
    assert mode("tmp") == 0o1777
    assert mode("ro") == 0o555 and mode("ro/inside") == 0o444
    assert stats.files == 4 and stats.directories == 4 and stats.bytes_written > 0


def test_hardlinks_share_an_inode(tmp_path: Path) -> None:
    dest, stats = unpack(
        tmp_path,
        [
            file("bin/busybox", b"\x7fELF", mode=0o755),
            hardlink("bin/sh", "bin/busybox"),
            hardlink("/usr/bin/env", "/bin/busybox"),
        ],
    )
    busybox = (dest / "bin/busybox").stat()
    assert (dest / "bin/sh").stat().st_ino == busybox.st_ino
    assert (dest / "usr/bin/env").stat().st_ino == busybox.st_ino
    assert busybox.st_nlink == 3 and stats.hardlinks == 2


def test_symlinks_are_kept_verbatim(tmp_path: Path) -> None:
    targets = {
        "bin/sh": "busybox",
        "lib": "usr/lib",
        "etc/alternatives/java": "/usr/lib/jvm/java-17/bin/java",
        "up": "../../..",
        "root": "/",
        "dangling": "/nowhere/at/all",
    }
    dest, stats = unpack(tmp_path, [symlink(n, t) for n, t in targets.items()])
    assert {n: os.readlink(dest / n) for n in targets} == targets
    assert stats.symlinks == len(targets)


def test_mtimes_are_kept_to_the_nanosecond_for_files_dirs_and_symlinks(tmp_path: Path) -> None:
    exact = "1700000000.123456789"
    ns = 1_700_000_000_123_456_789
    f, d, s = file("d/sub/f", b"x"), directory("d/"), symlink("d/sub/s", "f")
    sub = directory("d/sub/", mtime=MTIME + 1)
    for info, _ in (f, d, s):
        info.pax_headers = {"mtime": exact}
    dest, _ = unpack(tmp_path, [d, sub, f, s, file("d/sub/later", b"written after d/sub")])
    assert (dest / "d/sub/f").stat().st_mtime_ns == ns
    assert (dest / "d/sub/s").lstat().st_mtime_ns == ns
    assert (dest / "d").stat().st_mtime_ns == ns  # set after d/sub was filled
    assert (dest / "d/sub").stat().st_mtime_ns == (MTIME + 1) * 10**9
    assert (dest / "d/sub/later").stat().st_mtime_ns == MTIME * 10**9


def test_ownership_is_kept_as_root(tmp_path: Path) -> None:
    owned = {"uid": 1234, "gid": 5678}
    dest, stats = unpack(
        tmp_path,
        [
            directory("home/app/", **owned),
            file("home/app/suid", b"x", mode=0o6755, **owned),
            symlink("home/app/link", "suid", **owned),
            entry("home/app/fifo", tarfile.FIFOTYPE, **owned),
        ],
    )
    for name in ("home/app", "home/app/suid", "home/app/link", "home/app/fifo"):
        st = (dest / name).lstat()
        assert (st.st_uid, st.st_gid) == (1234, 5678), name
    # chown clears setuid and setgid: they were set after it
    assert stat.S_IMODE((dest / "home/app/suid").stat().st_mode) == 0o6755
    assert stats.ownership_kept


def test_whiteouts_and_opaque_directories_as_root(tmp_path: Path) -> None:
    dest, stats = unpack(
        tmp_path,
        [
            file(".wh.gone"),
            directory("var/"),
            file("var/.wh.cache"),
            directory("etc/ssl/"),
            file("etc/ssl/.wh..wh..opq"),
            file("etc/ssl/cert.pem", b"pem"),
        ],
    )
    for whiteout in ("gone", "var/cache"):
        st = (dest / whiteout).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0), whiteout
    assert os.getxattr(dest / "etc/ssl", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "etc/ssl")) == ["cert.pem"]
    assert not list(dest.rglob(".wh.*"))
    assert (stats.whiteouts, stats.opaque_dirs) == (2, 1)


def test_a_whiteout_hides_only_lower_layers_not_its_own(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        [
            file("kept", b"this layer's"),
            file(".wh.kept"),  # names a file of this layer: it stays
            directory("dir/"),
            file("dir/f"),
            file(".wh.dir"),  # this layer's dir stays, made opaque to hide the lower one
            file(".wh.new"),
            directory("new/"),  # deleted below, made anew here: opaque
            file(".wh.newfile"),
            file("newfile", b"new"),  # replaces the whiteout
            file(".wh.implicit"),
            file("implicit/x"),  # its parent replaces the whiteout: opaque too
        ],
    )
    assert (dest / "kept").read_bytes() == b"this layer's"
    assert (dest / "dir/f").exists()
    assert os.getxattr(dest / "dir", "trusted.overlay.opaque") == b"y"
    assert (dest / "new").is_dir()
    assert os.getxattr(dest / "new", "trusted.overlay.opaque") == b"y"
    assert (dest / "newfile").read_bytes() == b"new"
    assert os.getxattr(dest / "implicit", "trusted.overlay.opaque") == b"y"


def test_devices_and_fifos_as_root(tmp_path: Path) -> None:
    dest, stats = unpack(
        tmp_path,
        [
            entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            entry("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
            entry("run/fifo", tarfile.FIFOTYPE, mode=0o620),
        ],
    )
    null = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (dest / "dev/loop0").lstat()
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    fifo = (dest / "run/fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    assert stats.special_files == 3 and stats.devices_skipped == 0


def cap_net_raw() -> bytes:
    # struct vfs_cap_data, revision 2, effective: CAP_NET_RAW (13) permitted
    return struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


def test_file_capabilities_are_kept_as_root_other_xattrs_dropped(tmp_path: Path) -> None:
    ping = file("bin/ping", b"\x7fELF", mode=0o755)
    ping[0].pax_headers = {
        "SCHILY.xattr.security.capability": cap_net_raw().decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.note": "dropped",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
    }
    dest, _ = unpack(tmp_path, [ping])
    assert os.listxattr(dest / "bin/ping") == ["security.capability"]
    assert os.getxattr(dest / "bin/ping", "security.capability") == cap_net_raw()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_plain_gzip_and_zstd_layers(tmp_path: Path, compression: str) -> None:
    entries = [directory("etc/"), file("etc/os-release", b"ID=podkit\n")]
    dest, stats = unpack(tmp_path, entries, compression)
    assert (dest / "etc/os-release").read_bytes() == b"ID=podkit\n"
    assert stats.compression == compression
    # the DiffID: sha256 of the uncompressed tar, whatever the compression
    assert stats.diff_id == f"sha256:{hashlib.sha256(tar_bytes(entries)).hexdigest()}"


def test_a_layer_of_several_zstd_frames(tmp_path: Path) -> None:
    raw = tar_bytes([file("a", b"a" * 5000), file("b", b"b" * 5000)])
    blob = tmp_path / "layer.blob"
    frames = [zstandard.ZstdCompressor().compress(part) for part in (raw[:3000], raw[3000:])]
    blob.write_bytes(b"".join(frames))
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(blob, dest, rootless=False)
    assert (dest / "b").read_bytes() == b"b" * 5000


def test_a_pipe_is_read_as_a_stream(tmp_path: Path) -> None:
    blob = write_layer(tmp_path / "layer.blob", [file("from-a-pipe", b"yes")], "gzip")
    dest = tmp_path / "layer"
    dest.mkdir()
    with subprocess.Popen(["cat", str(blob)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        stats = unpack_layer(cat.stdout, dest, rootless=False)
    assert (dest / "from-a-pipe").read_bytes() == b"yes" and stats.compression == "gzip"


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        [
            directory("a/"),
            file("a/inside"),
            file("a", b"a file now"),  # a file replacing a directory and its contents
            file("b", b"a file first"),
            directory("b/", mode=0o700),  # a directory replacing a file
            file("b/x"),
            directory("c/"),
            file("c/kept"),
            directory("c/", mode=0o711),  # a directory over a directory: merged
            symlink("d", "a"),
            file("d", b"not through the link"),
        ],
    )
    assert (dest / "a").read_bytes() == b"a file now"
    assert (dest / "b/x").exists() and stat.S_IMODE((dest / "b").stat().st_mode) == 0o700
    assert (dest / "c/kept").exists() and stat.S_IMODE((dest / "c").stat().st_mode) == 0o711
    assert (dest / "d").read_bytes() == b"not through the link"


def test_a_volume_label_is_skipped(tmp_path: Path) -> None:
    dest, stats = unpack(tmp_path, [entry("backup", b"V"), file("f")])
    assert os.listdir(dest) == ["f"]
    assert stats.skipped == ["backup: a GNU volume label, not a file"]


# --- stacked with overlayfs -------------------------------------------------------------------


def merged(lowers: list[Path], mountpoint: Path, *, userxattr: bool = False) -> list[str]:
    """What an overlay of `lowers` (uppermost first) shows, mounted in a private mount
    namespace; userxattr: as the user `nobody`, in a user namespace, as rootless podkit does."""
    options = ("userxattr," if userxattr else "") + "lowerdir=" + ":".join(map(str, lowers))
    script = (
        f"mount -t overlay overlay -o {options} {mountpoint} && "
        f"cd {mountpoint} && find . -mindepth 1 | sort"
    )
    command = ["unshare", "-m", "sh", "-c", script]
    if userxattr:
        command = as_nobody("unshare", "-Urm", "sh", "-c", script)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [line.removeprefix("./") for line in out.split()]


def lower_layer() -> list[Entry]:
    return [
        file("top", b"lower"),
        directory("dir/"),
        file("dir/gone", b"lower"),
        file("dir/stays", b"lower"),
        directory("opq/"),
        file("opq/old", b"lower"),
    ]


def upper_layer() -> list[Entry]:
    return [
        file(".wh.top"),
        directory("dir/", mode=0o555),
        file("dir/.wh.gone"),
        file("dir/new", b"upper"),
        directory("opq/"),
        file("opq/.wh..wh..opq"),
        file("opq/fresh", b"upper"),
    ]


EXPECTED_MERGE = ["dir", "dir/new", "dir/stays", "opq", "opq/fresh"]


def test_overlayfs_reads_the_whiteouts_as_root(tmp_path: Path) -> None:
    layers = []
    for name, entries in (("lower", lower_layer()), ("upper", upper_layer())):
        layer = tmp_path / name
        layer.mkdir()
        unpack_layer(write_layer(tmp_path / f"{name}.blob", entries), layer, rootless=False)
        layers.append(layer)
    (tmp_path / "merged").mkdir()
    assert merged(layers[::-1], tmp_path / "merged") == EXPECTED_MERGE


# --- rootless, as a real ordinary user --------------------------------------------------------


def as_nobody(*args: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]


UNPACK_AS_USER = """
import dataclasses, json, sys
from podkit.oci.unpack import unpack_layer
stats = unpack_layer(sys.argv[1], sys.argv[2], rootless=True)
print(json.dumps(dataclasses.asdict(stats)))
"""


def unpack_as_nobody(blob: Path, dest: Path) -> dict[str, object]:
    path = os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO / "src")])
    command = as_nobody(
        "env", f"PYTHONPATH={path}", SYSTEM_PYTHON, "-c", UNPACK_AS_USER, str(blob), str(dest)
    )
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stats: dict[str, object] = json.loads(done.stdout)
    assert stats.keys() == {f.name for f in dataclasses.fields(UnpackStats)}
    return stats


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory of the user nobody's (pytest's tmp_path is closed to other users)."""
    require_system_python("setpriv", "unshare")
    path = Path(tempfile.mkdtemp(prefix="podkit-unpack-rootless-"))
    os.chmod(path, 0o755)
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_rootless_unpacking_as_an_ordinary_user(nobody_dir: Path) -> None:
    entries = [
        directory("ro/", mode=0o555),
        file("ro/f", b"in a read-only directory"),
        file("ro/.wh.gone"),
        file(".wh.top"),
        directory("opq/"),
        file("opq/.wh..wh..opq"),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        entry("fifo", tarfile.FIFOTYPE, mode=0o640),
        file("suid", b"x", mode=0o4755, uid=1234, gid=5678),
    ]
    entries[-1][0].pax_headers = {
        "SCHILY.xattr.security.capability": cap_net_raw().decode("utf-8", "surrogateescape")
    }
    blob = write_layer(nobody_dir / "layer.blob", entries, "gzip")
    dest = nobody_dir / "layer"
    dest.mkdir()
    os.chown(dest, NOBODY, NOBODY)

    stats = unpack_as_nobody(blob, dest)

    assert stats["devices_skipped"] == 2 and stats["ownership_kept"] is False
    assert not (dest / "dev/null").exists() and not (dest / "dev/sda").exists()
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)
    for whiteout, parent in (("ro/gone", "ro"), ("top", ".")):
        st = (dest / whiteout).lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, whiteout
        assert "user.overlay.whiteout" in os.listxattr(dest / whiteout)
        assert os.getxattr(dest / parent, "user.overlay.opaque") == b"x"  # "look in here"
    assert os.getxattr(dest / "opq", "user.overlay.opaque") == b"y"
    suid = (dest / "suid").stat()
    assert (suid.st_uid, suid.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(suid.st_mode) == 0o4755
    assert os.listxattr(dest / "suid") == []  # no file capabilities rootless
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert (dest / "ro/f").read_bytes() == b"in a read-only directory"
    xattrs = {x for path in dest.rglob("*") for x in os.listxattr(path, follow_symlinks=False)}
    assert xattrs == {"user.overlay.whiteout", "user.overlay.opaque"}


def test_rootless_mode_warns_once_about_skipped_devices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "podkit.oci")
    dest, stats = unpack(
        tmp_path,
        [entry(f"dev/tty{n}", tarfile.CHRTYPE, devmajor=4, devminor=n) for n in range(3)],
        rootless=True,
    )
    assert os.listdir(dest) == [] and stats.devices_skipped == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["skipped 3 device nodes: rootless"]
    assert any("owners are not kept" in r.getMessage() for r in caplog.records)


def test_overlayfs_reads_the_rootless_whiteouts_in_a_user_namespace(nobody_dir: Path) -> None:
    layers = []
    for name, entries in (("lower", lower_layer()), ("upper", upper_layer())):
        layer = nobody_dir / name
        layer.mkdir()
        os.chown(layer, NOBODY, NOBODY)
        unpack_as_nobody(write_layer(nobody_dir / f"{name}.blob", entries), layer)
        layers.append(layer)
    mountpoint = nobody_dir / "merged"
    mountpoint.mkdir()
    os.chown(mountpoint, NOBODY, NOBODY)
    assert merged(layers[::-1], mountpoint, userxattr=True) == EXPECTED_MERGE


# --- memory -----------------------------------------------------------------------------------

# VmHWM, not ru_maxrss: the kernel carries ru_maxrss over exec from the forking process (a
# big pytest), while VmHWM belongs to this process's own memory.
PEAK_RSS = """
import re, sys
from podkit.oci.unpack import unpack_layer
def hwm():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
before = hwm()
stats = unpack_layer(sys.argv[1], sys.argv[2], rootless=False)
print(stats.bytes_written, before, hwm())
"""


def test_a_50_mb_layer_is_streamed_not_loaded(tmp_path: Path) -> None:
    size = 50 * 2**20
    big = tmp_path / "big"
    with big.open("wb") as f:
        for _ in range(size // 2**20):
            f.write(os.urandom(2**20))  # random: gzip cannot shrink it, the blob is ~50 MB too
    blob = tmp_path / "layer.blob"
    with gzip.open(blob, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        tar.add(big, arcname="big")
    dest = tmp_path / "layer"
    dest.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(blob), str(dest)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    written, before_kb, after_kb = map(int, out.split())
    assert written == size
    assert after_kb < 80 * 1024, f"peak RSS {after_kb // 1024} MB"
    assert after_kb - before_kb < 20 * 1024, f"unpacking took {(after_kb - before_kb) // 1024} MB"
