"""Confine a container's process, last thing before exec: the launcher's PID 1 and the exec helper
(probes, hooks) call the same code, so both run under the same rules.

The order is runc's (libcontainer's standard init and finalizeNamespace): no_new_privs; the
seccomp filter, here if no_new_privs is off (loading one then needs CAP_SYS_ADMIN, still held);
the bounding set; the user and groups with the capabilities kept across setuid; the effective,
permitted and inheritable sets; the ambient set cleared; and with no_new_privs, the seccomp
filter last, so that it has to allow as little as possible of podkit's own set-up.

Standard library and podkit.runtime.linux only: the launcher imports this for every container.
"""

from __future__ import annotations

import contextlib
import errno
import os

from podkit.runtime import linux, users

TYPE_CHECKING = False  # the launcher imports this module: typing stays out of its start
if TYPE_CHECKING:
    from typing import Any

_FLAG_BITS = {"SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}


class Confinement:
    """What podkit sends the launcher (JSON) about a container's privileges. Plain attributes,
    as LaunchSpec: the launcher starts for every container, and every import counts."""

    def __init__(
        self,
        capabilities: int = 0,  # bit mask: bounding, permitted and effective set
        no_new_privs: bool = False,
        seccomp: str | None = None,  # compiled BPF program file (seccomp_bpf.BpfFiles)
        seccomp_flags: list[str] | None = None,
        uid: int | None = None,  # None: the image's user (root when it names none)
        gid: int | None = None,
        image_user: str = "",  # the image's User, resolved in its /etc/passwd and /etc/group
        supplemental_groups: list[int] | None = None,
        read_only_root: bool = False,
        masked_paths: list[str] | None = None,
        read_only_paths: list[str] | None = None,
        privileged: bool = False,
    ) -> None:
        self.capabilities, self.no_new_privs = capabilities, no_new_privs
        self.seccomp, self.seccomp_flags = seccomp, seccomp_flags or []
        self.uid, self.gid = uid, gid
        self.image_user = image_user
        self.supplemental_groups = supplemental_groups or []
        self.read_only_root = read_only_root
        self.masked_paths = masked_paths or []
        self.read_only_paths = read_only_paths or []
        self.privileged = privileged
        self._program: bytes | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Confinement:
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def read_program(self) -> None:
        """Read the seccomp program while the host's files are still in view (before pivot_root)."""
        if self.seccomp:
            with open(self.seccomp, "rb") as f:
                self._program = f.read()

    def apply(self) -> None:
        """Confine this process (in the container's root, before exec); OSError names the step."""
        passwd, group = _read("/etc/passwd"), _read("/etc/group")
        uid, gid = (self.uid, self.gid) if self.uid is not None else (0, self.gid)
        if self.uid is None and self.image_user:
            try:
                uid, image_gid = users.resolve_user(self.image_user, passwd, group)
            except ValueError as exc:
                raise OSError(errno.ENOENT, str(exc)) from None
            gid = self.gid if self.gid is not None else image_gid
        gid, groups = users.process_ids(uid, gid, self.supplemental_groups, passwd, group)
        flags = sum(_FLAG_BITS[f] for f in self.seccomp_flags)
        if self.no_new_privs:
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
        elif self._program is not None:
            linux.load_seccomp(self._program, flags)
        last = _last_cap()
        for cap in range(last + 1):
            if not self.capabilities >> cap & 1:
                try:
                    linux.prctl(linux.PR_CAPBSET_DROP, cap, "prctl(PR_CAPBSET_DROP)")
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # a capability this kernel does not have
                        raise
        linux.prctl(linux.PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")
        if _setgroups_allowed():
            os.setgroups(groups)
        elif groups != [gid]:
            raise OSError(
                errno.EPERM,
                f"supplementary groups {groups[1:]}: a rootless pod's user namespace has no "
                "setgroups(2)",
            )
        try:
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise OSError(
                errno.EINVAL,
                f"user {uid}:{gid} does not exist in this pod's user namespace (rootless, it "
                "maps your own user as root 0, and 1 on only with a range of yours in "
                "/etc/subuid and /etc/subgid)",
            ) from None
        linux.prctl(linux.PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS)")
        # What this process may hold: a privileged container's "all" is all the kernel has.
        held = self.capabilities & ((1 << (last + 1)) - 1) & _permitted()
        linux.set_capabilities(held, held, 0)
        with contextlib.suppress(OSError):  # kernels before 4.3 have no ambient set
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL, "prctl(ambient)")
        if self.no_new_privs and self._program is not None:
            linux.load_seccomp(self._program, flags)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _setgroups_allowed() -> bool:
    """False in a user namespace made by an ordinary user (rootless): setgroups is "deny"."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def _permitted() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


# ------------------------------------------------------------------------------ paths in /proc


def mask_paths(root: str, masked: list[str], read_only: list[str]) -> None:
    """containerd's masked and read-only paths, under a root whose /proc and /sys are mounted:
    a masked directory gets an empty read-only tmpfs over it, a masked file /dev/null; a
    read-only path is bound over itself read-only. Paths this kernel lacks are skipped."""
    for path in masked:
        target = root + path
        try:
            if os.path.isdir(target):
                linux.mount("tmpfs", target, "tmpfs", linux.MS_RDONLY)
            elif os.path.exists(target):
                linux.mount("/dev/null", target, None, linux.MS_BIND)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
    for path in read_only:
        target = root + path
        if not os.path.exists(target):
            continue
        linux.mount(target, target, None, linux.MS_BIND | linux.MS_REC)
        linux.remount_read_only(target)
