"""Thin ctypes wrappers for the Linux calls Python 3.11's os module lacks.

unshare/setns/mount/prctl are what a container runtime is made of; they are kept here so the
rest of the runtime reads as plain Python.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1


def _load_libc() -> ctypes.CDLL:
    try:  # glibc's soname: loading it directly spares find_library's `ldconfig -p` (~40 ms)
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()
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


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies: no orphans."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_name(name: str) -> None:
    """The process name ps and /proc/PID/comm show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(15, ctypes.addressof(buf), 0, 0, 0), "prctl(PR_SET_NAME)")


def loopback_up() -> None:
    """`ip link set lo up` without iproute2: SIOCSIFFLAGS on a throwaway socket."""
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
