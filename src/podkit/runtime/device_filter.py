"""cgroup v2's device allowlist: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to
the container's cgroup, as runc's devicefilter builds it (cgroup v2 has no devices.allow file).

The program reads the access (type, read/write/mknod), major and minor of each device the
container opens or makes, and returns 1 (allow) for the first rule that matches, else 0. Rules
are the v1 allowlist's strings ("c 1:3 rwm", "b *:* m"), so both versions enforce one list.
Building the program is pure; loading and attaching it are two bpf(2) calls through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import struct

from podkit.runtime import linux

# linux/bpf.h
_PROG_TYPE_CGROUP_DEVICE = 15
_CGROUP_DEVICE = 6  # attach type
_PROG_LOAD, _PROG_ATTACH = 5, 8
_F_ALLOW_MULTI = 2
_DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, READ, WRITE
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}

# Instruction opcodes (class | op | source).
_LDX_W = 0x61  # r_dst = *(u32 *)(r_src + off)
_AND32_K = 0x54  # w_dst &= imm
_RSH32_K = 0x74  # w_dst >>= imm
_MOV32_X = 0xBC  # w_dst = w_src
_MOV64_K = 0xB7  # r_dst = imm
_JNE_K = 0x55  # if r_dst != imm: pc += off
_JNE_X = 0x5D  # if r_dst != r_src: pc += off
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def parse_rule(rule: str) -> tuple[str, int | None, int | None, int]:
    """'c 1:3 rwm' -> ("c", 1, 3, access bits); `*` is None (any); type "a" is every type."""
    kind, numbers, access = rule.split()
    major, minor = numbers.split(":")
    bits = 0
    for letter in access:
        bits |= _ACCESS[letter]
    return (
        kind,
        None if major == "*" else int(major),
        None if minor == "*" else int(minor),
        bits,
    )


def program(rules: list[str]) -> bytes:
    """The eBPF program allowing exactly `rules` (struct bpf_insn[])."""
    # r1 = struct bpf_cgroup_dev_ctx *: access_type (access << 16 | type), major, minor.
    out = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = access_type
        _insn(_AND32_K, 2, imm=0xFFFF),  # r2 = type
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH32_K, 3, imm=16),  # r3 = access
        _insn(_LDX_W, 4, 1, 4),  # r4 = major
        _insn(_LDX_W, 5, 1, 8),  # r5 = minor
    ]
    for rule in rules:
        kind, major, minor, access = parse_rule(rule)
        checks: list[list[bytes]] = []
        if kind != "a":
            checks.append([_insn(_JNE_K, 2, imm=_DEV_TYPE[kind])])
        if access != 0b111:  # the access asked for must be within the rule's
            checks.append(
                [
                    _insn(_MOV32_X, 1, 3),
                    _insn(_AND32_K, 1, imm=access),
                    _insn(_JNE_X, 1, 3),
                ]
            )
        if major is not None:
            checks.append([_insn(_JNE_K, 4, imm=major)])
        if minor is not None:
            checks.append([_insn(_JNE_K, 5, imm=minor)])
        body = [i for check in checks for i in check]
        allow = [_insn(_MOV64_K, 0, imm=1), _insn(_EXIT)]
        # Each jump skips to the next rule: past the rest of this rule's checks and its allow.
        n = len(body) + len(allow)
        patched = []
        for index, raw in enumerate(body):
            code = raw[0]
            if code in (_JNE_K, _JNE_X):
                raw = raw[:2] + struct.pack("<h", n - index - 1) + raw[4:]
            patched.append(raw)
        out += patched + allow
    out += [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(out)


def _bpf(command: int, attr: bytes) -> int:
    number = _BPF_SYSCALL.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"bpf: system call number unknown on {os.uname().machine}")
    buf = ctypes.create_string_buffer(attr, len(attr))
    libc = linux.libc()
    rc = libc.syscall(ctypes.c_long(number), ctypes.c_int(command), buf, ctypes.c_uint(len(attr)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf: {os.strerror(err)}")
    return int(rc)


def attach(cgroup_dir: str, rules: list[str]) -> None:
    """Load the program for `rules` and attach it to the cgroup v2 directory `cgroup_dir`."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"Apache-2.0")
    name = b"podkit_devices"
    attr = bytearray(128)
    struct.pack_into(
        "<IIQQ",
        attr,
        0,
        _PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license),
    )
    attr[48 : 48 + len(name)] = name  # prog_name
    struct.pack_into("<I", attr, 68, _CGROUP_DEVICE)  # expected_attach_type
    prog = _bpf(_PROG_LOAD, bytes(attr))
    target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _bpf(_PROG_ATTACH, struct.pack("<IIII", target, prog, _CGROUP_DEVICE, _F_ALLOW_MULTI))
    finally:
        os.close(target)
        os.close(prog)  # the attachment holds the program
