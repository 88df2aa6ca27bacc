"""Work done as root of a rootless user namespace mapped with the user's subordinate ids.

Rootless with subordinate ids (common/subids.py), an image's files belong to ids only that
namespace can chown to, and only it can remove what they own (a directory of www-data's, seen
from the host, belongs to a uid the user is not). podman runs such work through `podman
unshare`; podkit starts a helper interpreter: it makes a new user namespace, podkit maps it with
newuidmap/newgidmap, and the helper goes on as root there. A thread cannot do this: a process
with threads may not enter a new user namespace.

remove_tree here removes trees that way; oci/unpack_mapped.py unpacks layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from podkit.common import subids
from podkit.common.helpers import helper_argv

_CLONE_NEWUSER = 0x10000000


def run(
    module: str, args: list[str], mapping: subids.IdMapping
) -> subprocess.CompletedProcess[str]:
    """Runs `module`'s main() in a helper mapped with `mapping`; its output and status."""
    helper = subprocess.Popen(
        [*helper_argv(module, site=True), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert helper.stdin is not None and helper.stdout is not None
    asked = helper.stdout.readline()  # "unshared": its namespace waits for its maps
    if asked == "unshared\n":
        try:
            subids.apply(helper.pid, mapping)
            helper.stdin.write("mapped\n")
        except OSError as exc:
            helper.kill()
            helper.communicate()
            return subprocess.CompletedProcess(helper.args, 1, "", str(exc))
    out, err = helper.communicate()
    return subprocess.CompletedProcess(helper.args, helper.returncode, out, err)


def enter() -> None:
    """The helper's side: a new user namespace, mapped by its parent; then root in it."""
    import ctypes

    from podkit.common.libc import libc

    if libc().unshare(_CLONE_NEWUSER) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWUSER): {os.strerror(code)}")
    sys.stdout.write("unshared\n")
    sys.stdout.flush()
    if sys.stdin.readline() != "mapped\n":
        raise SystemExit(1)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def remove_tree(path: Path) -> None:
    """shutil.rmtree(path, ignore_errors=True); rootless with subordinate ids, what the user
    may not remove (a directory of another id's) goes from inside the mapped namespace."""
    shutil.rmtree(path, ignore_errors=True)
    mapping, _ = subids.current()
    if mapping is not None and os.path.lexists(path):
        run("podkit.common.userns", [str(path)], mapping)


def main() -> int:
    """`main PATH...`: removes each tree as root of the mapped namespace."""
    paths = sys.argv[1:]
    enter()
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return 0 if not any(os.path.lexists(p) for p in paths) else 1


if __name__ == "__main__":
    sys.exit(main())
