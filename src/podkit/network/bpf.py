"""The bpf(2) calls podkit needs, through ctypes: hash maps, loading a program, and a cgroup
link. No libbpf and no compiler: the one program podkit loads (socket_lb.py) is a few dozen
instructions, assembled here from the kernel's encoding (include/uapi/linux/bpf.h).

A cgroup link (BPF_LINK_CREATE) is held by its file descriptor: when the process that made it
exits, however it exits, the kernel detaches the program. Nothing is left to clean up after a
kill -9. The descriptors are close-on-exec, so no child keeps them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from dataclasses import dataclass

from podkit.common.libc import libc

_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# Commands, map and program types, attach types.
MAP_CREATE, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, PROG_LOAD, LINK_CREATE = 0, 2, 3, 5, 28
MAP_TYPE_HASH, MAP_TYPE_LRU_HASH = 1, 9
PROG_TYPE_CGROUP_SOCK_ADDR = 18
CGROUP_INET4_CONNECT, CGROUP_INET4_GETPEERNAME = 10, 29
F_NO_PREALLOC = 1  # a hash map's elements are allocated as written, not all up front
PSEUDO_MAP_FD = 1

# Instruction classes, sizes, modes, operations (the eBPF encoding).
LDX, ST, STX, ALU64, JMP = 0x01, 0x02, 0x03, 0x07, 0x05
W, H, DW = 0x00, 0x08, 0x18
MEM, IMM = 0x60, 0x00
K, X = 0x00, 0x08
ADD, MOD, MOV = 0x00, 0x90, 0xB0
JEQ, JNE, CALL, EXIT = 0x10, 0x50, 0x80, 0x90
FUNC_MAP_LOOKUP_ELEM, FUNC_MAP_UPDATE_ELEM, FUNC_GET_PRANDOM_U32 = 1, 2, 7
FUNC_GET_SOCKET_COOKIE = 46
R0, R1, R2, R3, R4, R6, R7, R10 = 0, 1, 2, 3, 4, 6, 7, 10


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: the registers share a byte, dst in the low nibble on a
    little-endian machine (C bitfields follow the byte order)."""
    regs = (src << 4 | dst) if sys.byteorder == "little" else (dst << 4 | src)
    return struct.pack("=BBhi", code, regs, off, imm)


def load_map_fd(dst: int, fd: int) -> bytes:
    """`dst = &map` (ld_imm64 with the map's descriptor, two slots)."""
    return insn(0x18, dst, PSEUDO_MAP_FD, 0, fd) + insn(0)


class BpfError(OSError):
    pass


def supported() -> str | None:
    """Why bpf(2) cannot be used here, or None."""
    if platform.machine() not in _SYSCALL:
        return f"bpf(2) is not wired for {platform.machine()}"
    if os.geteuid() != 0:
        return "bpf(2) needs root"
    return None


def _bpf(cmd: int, attr: bytes, what: str) -> int:
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    result: int = libc().syscall(_SYSCALL[platform.machine()], cmd, buf, len(buf))
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return result


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


@dataclass
class HashMap:
    """A BPF hash map of fixed-size keys and values, owned by this process's descriptor."""

    fd: int
    key_size: int
    value_size: int

    @classmethod
    def create(
        cls, name: str, key_size: int, value_size: int, max_entries: int, lru: bool = False
    ) -> HashMap:
        """A hash map; `lru`: one that drops its least recently used element when full
        (allocated up front, as the kernel wants an LRU map)."""
        kind, flags = (MAP_TYPE_LRU_HASH, 0) if lru else (MAP_TYPE_HASH, F_NO_PREALLOC)
        attr = struct.pack(
            "=IIIIIII16s", kind, key_size, value_size, max_entries, flags, 0, 0,
            name.encode()[:15],
        )  # fmt: skip
        return cls(_bpf(MAP_CREATE, attr, f"creating the BPF map {name}"), key_size, value_size)

    def update(self, key: bytes, value: bytes) -> None:
        assert len(key) == self.key_size and len(value) == self.value_size
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        _bpf(MAP_UPDATE_ELEM, struct.pack("=IIQQQ", self.fd, 0, _addr(k), _addr(v), 0),
             "writing a BPF map element")  # fmt: skip

    def delete(self, key: bytes) -> None:
        k = ctypes.create_string_buffer(key)
        try:
            _bpf(MAP_DELETE_ELEM, struct.pack("=IIQ", self.fd, 0, _addr(k)),
                 "deleting a BPF map element")  # fmt: skip
        except BpfError as exc:
            if exc.errno != errno.ENOENT:  # already gone is what was asked
                raise

    def close(self) -> None:
        os.close(self.fd)


def load(prog_type: int, attach_type: int, code: bytes, name: str, license: str) -> int:
    """Load a program; its descriptor. The verifier's log is in the error if it refuses."""
    insns = ctypes.create_string_buffer(code)
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack(
        "=IIQQIIQII16sII", prog_type, len(code) // 8, _addr(insns), _addr(lic), 1, len(log),
        _addr(log), 0, 0, name.encode()[:15], 0, attach_type,
    )  # fmt: skip
    try:
        return _bpf(PROG_LOAD, attr, f"loading the BPF program {name}")
    except BpfError as exc:
        verdict = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise BpfError(exc.errno, f"{exc.strerror}: {' / '.join(verdict)}") from None


def link_cgroup(prog_fd: int, cgroup_dir: str, attach_type: int) -> int:
    """Attach a program to a cgroup (v2) directory and its descendants, beside any others
    attached there; the link's descriptor: closing it (or exiting) detaches the program."""
    cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = struct.pack("=IIII", prog_fd, cg, attach_type, 0)
        return _bpf(LINK_CREATE, attr, f"attaching a BPF program to {cgroup_dir}")
    finally:
        os.close(cg)
