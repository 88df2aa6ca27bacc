"""Compile a seccomp Profile into the BPF program the kernel runs, with libseccomp.

libseccomp (Debian's libseccomp2) is bound here through ctypes, seven functions of it. Neither
ready binding fits: Debian's python3-seccomp is built for Debian's /usr/bin/python3 and cannot be
installed into podkit's virtualenv, and PyPI's pyseccomp (ctypes too) costs 20 ms at import
(ctypes.util.find_library runs `ldconfig -p` twice), 4% of a pod's start.

Only podkit's own process compiles. A program is kept under the state directory, named after
its profile, libseccomp's version and the machine, so each distinct profile is built once
(about 10 ms), not once per container or per run; the launcher reads the file and hands it to the
kernel with prctl(2), importing no libseccomp.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from podkit.runtime.seccomp_profile import EPERM, Arg, Profile, ProfileError, Rule

# seccomp.h: actions, comparison operators, and AUDIT_ARCH_* values of the architectures.
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
_LE, _64 = 0x40000000, 0x80000000
_ARCHES = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | 0x20000000,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | 0x20000000,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _Lib:
    """libseccomp.so.2, loaded by its soname (no find_library: it runs ldconfig)."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise ProfileError(f"seccomp needs libseccomp (Debian's libseccomp2): {exc}") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_exist.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        self.lib = lib
        v = lib.seccomp_version().contents
        self.version = f"{v.major}.{v.minor}.{v.micro}"


_loaded: _Lib | None = None


def _libseccomp() -> _Lib:
    global _loaded
    if _loaded is None:
        _loaded = _Lib()
    return _loaded


def _action(name: str, errno: int | None) -> int:
    value = _ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        value |= (EPERM if errno is None else errno) & 0xFFFF
    elif name == "SCMP_ACT_TRACE":
        value |= (errno or 0) & 0xFFFF
    return value


def _conditions(args: tuple[Arg, ...]) -> list[tuple[Arg, ...]]:
    """libseccomp ANDs a rule's conditions but takes one per argument: several on the same
    argument become one rule each, so they OR (runc's rule)."""
    indexes = [a.argument for a in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [(a,) for a in args]


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: Rule, default: int) -> None:
    action = _action(rule.action, rule.errno)
    if action == default:
        return  # adds nothing (and libseccomp refuses it)
    for name in rule.names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # unknown to this libseccomp (a newer call, or another machine's)
        for group in _conditions(rule.args):
            conds = [_ArgCmp(a.argument, _OPERATORS[a.op], a.value, a.value_two) for a in group]
            array = (_ArgCmp * len(conds))(*conds)
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(conds), array)
            if rc < 0:
                raise ProfileError(f"{name}: libseccomp refused the rule: {os.strerror(-rc)}")


def compile_profile(profile: Profile) -> bytes:
    """The profile's BPF program (struct sock_filter[]) for its architectures and this one.

    Calls this libseccomp does not know are left out, as runc does; a rule whose action is the
    default action adds nothing. Raises ProfileError for what libseccomp refuses."""
    lib = _libseccomp().lib
    default = _action(profile.default_action, profile.default_errno)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise ProfileError(f"libseccomp refused the default action {profile.default_action}")
    try:
        for arch in profile.architectures:
            token = _ARCHES[arch]
            if lib.seccomp_arch_exist(ctx, token) != 0 and lib.seccomp_arch_add(ctx, token) < 0:
                raise ProfileError(f"architectures: {arch}: libseccomp does not support it")
        for rule in profile.rules:
            _add_rule(lib, ctx, rule, default)
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise ProfileError(f"libseccomp could not build the filter: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)


class BpfFiles:
    """Compiled programs under `directory`: one file per profile, libseccomp and machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._paths: dict[str, str] = {}

    def path(self, key: str, profile: Callable[[], Profile]) -> str:
        """The file of the program named `key` (a name fit for a file, unique to the profile),
        compiled from `profile()` now if no run compiled it before."""
        known = self._paths.get(key)
        if known is not None:
            return known
        path = self.directory / f"{key}-{_libseccomp().version}-{os.uname().machine}.bpf"
        if not path.is_file():
            program = compile_profile(profile())
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(program)
            os.replace(tmp, path)  # a concurrent podkit writes the same bytes
        self._paths[key] = str(path)
        return str(path)
