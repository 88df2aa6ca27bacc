"""seccomp profiles as data: the RuntimeDefault profile, and Localhost profiles in the OCI format.

RuntimeDefault is containerd's default profile (contrib/seccomp/seccomp_default.go, the same rules
as Docker's default.json): an allowlist of about 400 system calls, EPERM for everything else,
with the calls that need a capability allowed only when the container has it in its bounding
set (mount, unshare and setns with CAP_SYS_ADMIN, init_module with CAP_SYS_MODULE...), clone
without namespace flags, and clone3 answered with ENOSYS so that libc falls back to clone.
ptrace is allowed as in containerd and Docker on kernels since 4.8: without CAP_SYS_PTRACE a
process can trace only its own kind, inside its own PID namespace.

A Localhost profile is a JSON file in the OCI runtime spec's LinuxSeccomp format (what containerd
loads for `seccompProfile.type: Localhost`, and what the Security Profiles Operator writes).
Pure: parsing and building only; compile.py turns a Profile into a BPF program.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple

from podkit.runtime.capabilities import NUMBERS

ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
)
OPERATORS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
ARCHITECTURES = (
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_RISCV64",
)
# The flags seccomp(2) takes with a filter; runc passes these through too.
FLAGS = ("SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
EPERM, ENOSYS = 1, 38


class ProfileError(ValueError):
    """A Localhost profile that cannot be used; the message names the file and the field."""


class Arg(NamedTuple):
    argument: int  # the OCI format's index: which argument of the call, 0 to 5
    value: int
    value_two: int = 0
    op: str = "SCMP_CMP_EQ"


class Rule(NamedTuple):
    names: tuple[str, ...]
    action: str
    errno: int | None = None  # SCMP_ACT_ERRNO's errno; EPERM when not given (as runc)
    args: tuple[Arg, ...] = ()


class Profile(NamedTuple):
    default_action: str
    rules: tuple[Rule, ...]
    architectures: tuple[str, ...] = ()
    default_errno: int | None = None
    flags: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ RuntimeDefault

_ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid
getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set
io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self
lchown lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lsm_get_self_attr lsm_list_modules lsm_set_self_attr lstat lstat64
madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall map_shadow_stack mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv
msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect
poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom
recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop
semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr
setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statmount statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask
uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
process_vm_readv process_vm_writev ptrace
""".split()  # noqa: SIM905 - a table of names reads better as text

# By machine: the architectures a filter covers, and the calls only that machine has.
_BY_MACHINE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "x86_64": (
        ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
        ("arch_prctl", "modify_ldt"),
    ),
    "aarch64": (
        ("SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"),
        (
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ),
    ),
    "riscv64": (("SCMP_ARCH_RISCV64",), ("riscv_flush_icache", "riscv_hwprobe")),
    "s390x": (
        ("SCMP_ARCH_S390", "SCMP_ARCH_S390X"),
        ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    ),
    "ppc64le": (("SCMP_ARCH_PPC64LE",), ("sync_file_range2", "swapcontext")),
}

# The calls a capability in the bounding set allows.
_BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "DAC_READ_SEARCH": ("open_by_handle_at",),
    "SYS_ADMIN": (
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "SYS_BOOT": ("reboot",),
    "SYS_CHROOT": ("chroot",),
    "SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "SYS_PACCT": ("acct",),
    "SYS_PTRACE": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    "SYS_RAWIO": ("iopl", "ioperm"),
    "SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "SYS_TTY_CONFIG": ("vhangup",),
    "SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "SYSLOG": ("syslog",),
    "BPF": ("bpf",),
    "PERFMON": ("perf_event_open",),
}

_AF_ALG, _AF_VSOCK = 38, 40
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
_CLONE_NAMESPACES |= 0x40000000


def _allow(*names: str, args: tuple[Arg, ...] = ()) -> Rule:
    return Rule(tuple(names), "SCMP_ACT_ALLOW", args=args)


# Names a compiled RuntimeDefault program (seccomp_bpf.BpfFiles) without building the profile:
# the tables' checksum, so a program compiled from other tables is never taken for this one.
_TABLES = zlib.crc32(repr((_ALLOWED, _BY_MACHINE, _BY_CAPABILITY)).encode())


def runtime_default_key(caps: Iterable[int]) -> str:
    """The name of RuntimeDefault's program for the bounding set `caps`."""
    mask = sum(1 << c for c in set(caps))
    return f"default-{_TABLES:08x}-{mask:x}"


def runtime_default(caps: Iterable[int], machine: str | None = None) -> Profile:
    """containerd's default profile for a container whose bounding set is `caps`."""
    machine = machine or os.uname().machine
    arches, machine_calls = _BY_MACHINE.get(machine, ((), ()))
    bounding = set(caps)
    rules = [
        _allow(*_ALLOWED),
        # socket(2) for every address family but AF_ALG and AF_VSOCK: three single-condition
        # ranges, as containerd writes them (one rule with two conditions on arg 0 would AND).
        _allow("socket", args=(Arg(0, _AF_ALG, op="SCMP_CMP_LT"),)),
        _allow("socket", args=(Arg(0, _AF_ALG + 1, op="SCMP_CMP_EQ"),)),
        _allow("socket", args=(Arg(0, _AF_VSOCK, op="SCMP_CMP_GT"),)),
        # personality(2): only the harmless personas (PER_LINUX, PER_LINUX32, UNAME26 variants,
        # and the query 0xffffffff).
        *(_allow("personality", args=(Arg(0, v),)) for v in (0x0, 0x8, 0x20000, 0x20008)),
        _allow("personality", args=(Arg(0, 0xFFFFFFFF),)),
    ]
    if machine_calls:
        rules.append(_allow(*machine_calls))
    for cap, calls in _BY_CAPABILITY.items():
        if NUMBERS[cap] in bounding:
            rules.append(_allow(*calls))
    if NUMBERS["SYS_ADMIN"] not in bounding:
        # clone(2) without a namespace flag (s390 has the flags in the second argument).
        index = 1 if machine == "s390x" else 0
        mask = Arg(index, _CLONE_NAMESPACES, 0, "SCMP_CMP_MASKED_EQ")
        rules.append(_allow("clone", args=(mask,)))
        rules.append(Rule(("clone3",), "SCMP_ACT_ERRNO", ENOSYS))
    return Profile("SCMP_ACT_ERRNO", tuple(rules), arches)


# ------------------------------------------------------------------------------------ Localhost


def _int(value: Any, where: str, low: int = 0, high: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProfileError(f"{where}: must be a whole number from {low} to {high}")
    return value


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ProfileError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _arg(raw: Any, where: str) -> Arg:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be an object")
    if "index" not in raw or "op" not in raw:
        raise ProfileError(f"{where}: needs index and op")
    return Arg(
        _int(raw["index"], f"{where}.index", 0, 5),
        _int(raw.get("value", 0), f"{where}.value"),
        _int(raw.get("valueTwo", 0), f"{where}.valueTwo"),
        _choice(raw["op"], OPERATORS, f"{where}.op"),
    )


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be an object")
    names = raw.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ProfileError(f"{where}.names: must be a non-empty list of system call names")
    action = _choice(raw.get("action"), ACTIONS, f"{where}.action")
    errno = raw.get("errnoRet")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise ProfileError(f"{where}.args: must be a list")
    return Rule(
        tuple(names),
        action,
        None if errno is None else _int(errno, f"{where}.errnoRet", 0, 4095),
        tuple(_arg(a, f"{where}.args[{i}]") for i, a in enumerate(args)),
    )


def parse_oci(text: str, where: str) -> Profile:
    """A Localhost profile from its JSON text; ProfileError names `where` and the field."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be a JSON object (the OCI LinuxSeccomp format)")
    if raw.get("listenerPath"):
        raise ProfileError(f"{where}: listenerPath: SCMP_ACT_NOTIFY agents are not supported")
    if "defaultAction" not in raw:
        raise ProfileError(f"{where}: defaultAction: required")
    default = _choice(raw["defaultAction"], ACTIONS, f"{where}: defaultAction")
    arches = raw.get("architectures") or []
    flags = raw.get("flags") or []
    syscalls = raw.get("syscalls") or []
    for field, value in (("architectures", arches), ("flags", flags), ("syscalls", syscalls)):
        if not isinstance(value, list):
            raise ProfileError(f"{where}: {field}: must be a list")
    errno = raw.get("defaultErrnoRet")
    return Profile(
        default,
        tuple(_rule(r, f"{where}: syscalls[{i}]") for i, r in enumerate(syscalls)),
        tuple(
            _choice(a, ARCHITECTURES, f"{where}: architectures[{i}]") for i, a in enumerate(arches)
        ),
        None if errno is None else _int(errno, f"{where}: defaultErrnoRet", 0, 4095),
        tuple(_choice(f, FLAGS, f"{where}: flags[{i}]") for i, f in enumerate(flags)),
    )
