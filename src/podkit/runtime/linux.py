"""Thin ctypes wrappers for the Linux calls Python 3.11's os module lacks.

unshare/setns/mount/prctl are what a container runtime is made of; they are kept here so the
rest of the runtime reads as plain Python.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import struct
import warnings  # noqa: F401  os.execvpe imports it, after pivot_root, out of podkit's reach

from podkit.common.libc import libc

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWCGROUP = 0x02000000
CLONE_PARENT = 0x00008000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# seccomp(2) and mount_setattr(2) by machine: os has neither, and libc wraps only the first.
_SYSCALLS = {
    "x86_64": {"seccomp": 317, "mount_setattr": 442, "pivot_root": 155, "clone": 56},
    "aarch64": {"seccomp": 277, "mount_setattr": 442, "pivot_root": 41, "clone": 220},
}
MNT_DETACH = 2
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1


_libc = libc()
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    data_b = _b(data)
    _check(
        _libc.mount(
            _b(source),
            _b(target),
            _b(fstype),
            flags,
            ctypes.c_char_p(data_b) if data_b is not None else None,
        ),
        f"mount {source or fstype} on {target}",
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def prctl(option: int, arg2: int = 0, what: str = "prctl") -> None:
    _check(_libc.prctl(option, arg2, 0, 0, 0), what)


def set_capabilities(effective: int, permitted: int, inheritable: int = 0) -> None:
    """capset(2): this thread's effective, permitted and inheritable sets, as bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _syscall_number(name: str) -> int:
    number = _SYSCALLS.get(os.uname().machine, {}).get(name)
    if number is None:
        raise OSError(38, f"{name}: system call number unknown on {os.uname().machine}")
    return number


def load_seccomp(program: bytes, flags: int = 0) -> None:
    """Install a BPF seccomp filter (struct sock_filter[]) on this thread; needs no_new_privs
    or CAP_SYS_ADMIN. It stays for every process this one execs or forks."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if flags:
        rc = _libc.syscall(
            ctypes.c_long(_syscall_number("seccomp")),
            ctypes.c_uint(1),  # SECCOMP_SET_MODE_FILTER
            ctypes.c_uint(flags),
            ctypes.byref(prog),
        )
        _check(rc, "seccomp")
    else:
        rc = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
        _check(rc, "prctl(PR_SET_SECCOMP)")


def pivot_root(new_root: str) -> None:
    """Make `new_root` (a mount point) this mount namespace's root and detach the old one, as
    runc does: unlike chroot(2), nothing is left above the new root to climb back to."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
    new = os.open(new_root, os.O_DIRECTORY | os.O_RDONLY)
    try:
        os.fchdir(new)
        rc = _libc.syscall(ctypes.c_long(_syscall_number("pivot_root")), b".", b".")
        _check(rc, f"pivot_root {new_root}")
        os.fchdir(old)  # the old root is now stacked under the new one: detach it
        mount(None, ".", None, MS_REC | MS_SLAVE)
        _check(_libc.umount2(b".", MNT_DETACH), "umount the old root")
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def make_read_only_recursive(path: str) -> None:
    """mount_setattr(2): `path` and every mount below it read-only (Linux >= 5.12)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    rc = _libc.syscall(
        ctypes.c_long(_syscall_number("mount_setattr")),
        ctypes.c_int(-100),  # AT_FDCWD
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(rc, f"mount_setattr {path}")


# nosuid, nodev, noexec, noatime, nodiratime, relatime: statvfs's ST_* equal the MS_* flags.
LOCKABLE = 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000


def remount_read_only(path: str) -> None:
    """Make the mount at `path` read-only, keeping the flags the kernel locks on mounts made in
    another user namespace (rootless), which a remount may not drop."""
    kept = os.statvfs(path).f_flag & LOCKABLE
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies: no orphans."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def die_with_parent() -> bool:
    """SIGKILL this process when its parent dies; False if the parent died already (before
    prctl took effect), so the caller should exit now."""
    parent = os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    return os.getppid() == parent


def fork_sibling() -> int:
    """fork(2), except that the child's parent is this process's parent (CLONE_PARENT): the
    parent reaps it, and its parent-death signal follows that parent. 0 in the child. Only for
    a single-threaded caller whose child execs or exits: the raw system call skips the fork
    hooks of the C library and of Python, which such a child does not need."""
    null = ctypes.c_void_p(0)
    pid = _libc.syscall(
        ctypes.c_long(_syscall_number("clone")),
        ctypes.c_ulong(CLONE_PARENT | signal.SIGCHLD),
        null, null, null, null,
    )  # fmt: skip
    if pid < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"clone: {os.strerror(errno)}")
    return int(pid)


def wait_exit_code(pid: int) -> int:
    """Wait for the child `pid`; its exit code as Kubernetes reports it (128 + signal when
    killed)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def set_name(name: str) -> None:
    """The process name ps and /proc/PID/comm show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(15, ctypes.addressof(buf), 0, 0, 0), "prctl(PR_SET_NAME)")


def loopback_up() -> None:
    """`ip link set lo up` without iproute2: SIOCSIFFLAGS on a throwaway socket."""
    import socket  # here: the launcher imports this module and never needs it

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _user_namespaces_allowed() -> bool:
    for path, needed in (
        ("/proc/sys/user/max_user_namespaces", lambda v: int(v) > 0),
        ("/proc/sys/kernel/unprivileged_userns_clone", lambda v: int(v) == 1),
    ):
        try:
            with open(path) as f:
                if not needed(f.read().strip()):
                    return False
        except FileNotFoundError:
            continue  # an upstream kernel without Debian's knob allows them
    return True


def namespaces_available() -> str | None:
    """None when podkit can create pod namespaces here, else the reason it cannot."""
    if os.geteuid() != 0 and not _user_namespaces_allowed():
        return (
            "podkit needs root, or user namespaces for ordinary users (rootless), to create "
            "pod namespaces; this kernel does not allow unprivileged user namespaces "
            "(see sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone): "
            "run podkit as root, e.g. with sudo"
        )
    for ns in ("net", "uts", "ipc", "mnt", "pid"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            return f"this kernel has no {ns} namespace support (/proc/self/ns/{ns} is missing)"
    return None
