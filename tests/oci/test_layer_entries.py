"""podkit.oci.layer_entries: tar headers checked and planned, without the filesystem."""

from __future__ import annotations

import tarfile

import pytest

from podkit.oci.layer_entries import (
    Create,
    Kind,
    LayerError,
    OpaqueDir,
    Skip,
    Whiteout,
    capability_of,
    kept_mode,
    mtime_ns,
    plan_entry,
    split_name,
)


def member(name: str, type: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("etc/passwd", ("etc", "passwd")),
        ("./etc/passwd", ("etc", "passwd")),
        ("/etc/passwd", ("etc", "passwd")),  # absolute: relative to the image root
        ("//etc//./passwd/", ("etc", "passwd")),
        ("usr/lib/../bin/sh", ("usr", "bin", "sh")),  # ".." that stays inside is fine
        ("./", ()),
        ("/", ()),
        ("a/..", ()),
    ],
)
def test_names_become_components_relative_to_the_layer_root(
    name: str, path: tuple[str, ...]
) -> None:
    assert split_name(name) == path


@pytest.mark.parametrize("name", ["../x", "./../x", "/../x", "a/../../x", "a/b/../../../etc"])
def test_names_climbing_above_the_root_are_rejected(name: str) -> None:
    with pytest.raises(LayerError, match="climbs above the layer root") as caught:
        split_name(name)
    assert caught.value.entry == name


def test_a_nul_byte_in_a_name_is_rejected() -> None:
    with pytest.raises(LayerError, match="NUL"):
        plan_entry(member("etc/pass\0wd"))


def test_whiteouts_name_the_hidden_file_and_opaque_markers_their_directory() -> None:
    assert plan_entry(member("usr/.wh.share")) == Whiteout(("usr", "share"))
    assert plan_entry(member("/.wh.etc")) == Whiteout(("etc",))
    assert plan_entry(member("var/cache/.wh..wh..opq")) == OpaqueDir(("var", "cache"))
    assert plan_entry(member(".wh..wh..opq")) == OpaqueDir(())  # the layer root itself
    # by name, whatever the member type says
    assert plan_entry(member("a/.wh.b", tarfile.DIRTYPE)) == Whiteout(("a", "b"))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a/.wh.", "names no file"),
        ("a/.wh..", "names no file"),
        (".wh..wh.plnk/123", "used as a directory"),
        (".wh..wh.aufs", "unknown .wh..wh. marker"),
        ("a/.wh.b/c", "used as a directory"),
    ],
)
def test_odd_whiteout_names_are_rejected(name: str, reason: str) -> None:
    with pytest.raises(LayerError, match=reason):
        plan_entry(member(name))


def test_a_whiteout_with_dotdot_in_its_path_is_still_checked_for_climbing() -> None:
    with pytest.raises(LayerError, match="climbs"):
        plan_entry(member("../.wh.x"))


@pytest.mark.parametrize(
    ("type", "kind"),
    [
        (tarfile.REGTYPE, Kind.FILE),
        (tarfile.AREGTYPE, Kind.FILE),
        (tarfile.CONTTYPE, Kind.FILE),
        (tarfile.DIRTYPE, Kind.DIR),
        (tarfile.SYMTYPE, Kind.SYMLINK),
        (tarfile.CHRTYPE, Kind.CHAR_DEVICE),
        (tarfile.BLKTYPE, Kind.BLOCK_DEVICE),
        (tarfile.FIFOTYPE, Kind.FIFO),
    ],
)
def test_each_member_type_makes_its_kind_of_file(type: bytes, kind: Kind) -> None:
    planned = plan_entry(member("x", type))
    assert isinstance(planned, Create) and planned.kind is kind


def test_an_unknown_member_type_is_rejected_and_a_volume_label_skipped() -> None:
    with pytest.raises(LayerError, match="unknown tar member type") as caught:
        plan_entry(member("weird", b"Z"))
    assert caught.value.entry == "weird"
    skipped = plan_entry(member("backup 2024", b"V"))
    assert isinstance(skipped, Skip) and "volume label" in skipped.reason


def test_a_file_as_the_layer_root_is_rejected() -> None:
    with pytest.raises(LayerError, match="root can only be a directory"):
        plan_entry(member("./", tarfile.SYMTYPE, linkname="/"))
    assert plan_entry(member("./", tarfile.DIRTYPE, mode=0o755)) == Create(
        path=(), kind=Kind.DIR, mode=0o755, uid=0, gid=0, mtime_ns=0
    )


def test_symlink_targets_are_kept_verbatim() -> None:
    for target in ("/", "../../..", "/etc/alternatives/java", "busybox"):
        planned = plan_entry(member("bin/x", tarfile.SYMTYPE, linkname=target))
        assert isinstance(planned, Create) and planned.symlink_target == target


def test_hardlink_targets_are_layer_paths() -> None:
    planned = plan_entry(member("bin/sh", tarfile.LNKTYPE, linkname="/bin/busybox"))
    assert isinstance(planned, Create) and planned.hardlink_to == ("bin", "busybox")


@pytest.mark.parametrize(
    ("linkname", "reason"),
    [
        ("../../etc/passwd", "climbs above the layer root"),
        ("./", "to the layer root"),
        ("bin/../bin/sh", "to itself"),
    ],
)
def test_bad_hardlink_targets_are_rejected(linkname: str, reason: str) -> None:
    with pytest.raises(LayerError, match=reason) as caught:
        plan_entry(member("bin/sh", tarfile.LNKTYPE, linkname=linkname))
    assert caught.value.entry == "bin/sh"


def test_modes_keep_setuid_setgid_and_sticky_but_not_the_file_type() -> None:
    assert kept_mode(0o4755) == 0o4755
    assert kept_mode(0o2711) == 0o2711
    assert kept_mode(0o1777) == 0o1777
    assert kept_mode(0o100644) == 0o644  # some writers put S_IFREG in the mode field
    planned = plan_entry(member("usr/bin/sudo", mode=0o104755))
    assert isinstance(planned, Create) and planned.mode == 0o4755


def test_devices_carry_their_numbers() -> None:
    planned = plan_entry(member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3))
    assert isinstance(planned, Create) and planned.device == (1, 3)
    fifo = plan_entry(member("run/fifo", tarfile.FIFOTYPE, devmajor=9, devminor=9))
    assert isinstance(fifo, Create) and fifo.device == (0, 0)


def test_mtime_is_exact_to_the_nanosecond_from_pax() -> None:
    info = member("x", mtime=1_700_000_000.123456789)
    info.pax_headers = {"mtime": "1700000000.123456789"}
    assert mtime_ns(info) == 1_700_000_000_123_456_789
    assert mtime_ns(member("y", mtime=1_600_000_000)) == 1_600_000_000_000_000_000


def test_only_the_capability_xattr_is_kept_from_pax_headers() -> None:
    raw = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)  # binary, not UTF-8
    headers = {
        "SCHILY.xattr.security.capability": raw.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.comment": "dropped",
        "SCHILY.xattr.trusted.overlay.opaque": "y",  # an image must not forge overlay marks
    }
    assert capability_of(headers) == raw
    info = member("bin/ping")
    info.pax_headers = headers
    planned = plan_entry(info)
    assert isinstance(planned, Create) and planned.capability == raw
    assert capability_of({"SCHILY.xattr.user.comment": "x"}) is None
