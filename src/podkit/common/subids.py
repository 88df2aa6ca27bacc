"""Rootless id mapping: the user's subordinate uids and gids (/etc/subuid, /etc/subgid), as
podman and containerd's rootless mode use them.

Without them a user namespace holds one id: the user, seen as root inside, so every file of an
image belongs to root and an image whose USER is www-data cannot run. With them the namespace
maps 0 to the user and 1..N to the user's subordinate range, so image files keep their owners
and containers may run as any of those ids. Only the setuid helpers `newuidmap` and
`newgidmap` (Debian's `uidmap` package) may write such maps for an ordinary user; they check
the ranges against the same files.

The parsing is pure; `apply` runs the helpers.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"


@dataclass(frozen=True)
class IdMapping:
    """Lines of a uid_map / gid_map: (inside, outside, count)."""

    uids: tuple[tuple[int, int, int], ...]
    gids: tuple[tuple[int, int, int], ...]


def ranges(text: str, name: str, own_id: int) -> list[tuple[int, int]]:
    """The (start, count) ranges of `name` (or its numeric id) in a subuid/subgid file."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[0] not in (name, str(own_id)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            found.append((start, count))
    return found


def mapping_for(uid: int, gid: int, sub_uids: list[tuple[int, int]],
                sub_gids: list[tuple[int, int]]) -> IdMapping | None:  # fmt: skip
    """0 -> the user, then the first subordinate range from 1 on; None without ranges."""
    if not sub_uids or not sub_gids:
        return None
    (ustart, ucount), (gstart, gcount) = sub_uids[0], sub_gids[0]
    return IdMapping(((0, uid, 1), (1, ustart, ucount)), ((0, gid, 1), (1, gstart, gcount)))


def find() -> tuple[IdMapping | None, str]:
    """This user's mapping, or None and why not (said once to the user)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    missing = [tool for tool in ("newuidmap", "newgidmap") if shutil.which(tool) is None]
    if missing:
        return None, f"{' and '.join(missing)} not installed (apt-get install uidmap)"
    try:
        with open(SUBUID) as f:
            sub_uids = ranges(f.read(), name, uid)
        with open(SUBGID) as f:
            sub_gids = ranges(f.read(), name, gid)
    except OSError as exc:
        return None, f"{exc.filename}: {exc.strerror}"
    mapping = mapping_for(uid, gid, sub_uids, sub_gids)
    if mapping is None:
        return None, f"no range for {name} in {SUBUID} and {SUBGID}"
    return mapping, ""


@functools.cache
def current() -> tuple[IdMapping | None, str]:
    """The mapping rootless work in this process uses (None as root, who needs none), or None
    and why not; looked up once, so the store and the pods agree."""
    if os.geteuid() == 0:
        return None, ""
    return find()


def apply(pid: int, mapping: IdMapping) -> None:
    """Writes the maps of `pid`'s new user namespace; OSError says why not."""
    for tool, lines in (("newuidmap", mapping.uids), ("newgidmap", mapping.gids)):
        args = [str(n) for line in lines for n in line]
        done = subprocess.run([tool, str(pid), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{tool}: {done.stderr.strip() or f'exit status {done.returncode}'}")
