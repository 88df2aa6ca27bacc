"""Linux capabilities of a container: the names Kubernetes uses and the sets the runtime applies.

The default set is containerd's (and Docker's) fourteen. securityContext.capabilities.add/drop
follow containerd's CRI plugin exactly: `ALL` in add gives every capability and `ALL` in drop
removes them all, first; then single names are added, then single names are dropped. A name may
be given with or without `CAP_`, in any case. `privileged: true` gives every capability whatever
add/drop say. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

# include/uapi/linux/capability.h
NUMBERS: dict[str, int] = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}
NAMES = {number: name for name, number in NUMBERS.items()}

# containerd's defaultUnixCaps (pkg/oci/spec.go), the same as Docker's.
DEFAULT: frozenset[int] = frozenset(
    NUMBERS[n]
    for n in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
)
ALL: frozenset[int] = frozenset(NUMBERS.values())


def _number(name: str) -> int | None:
    key = name.upper().removeprefix("CAP_")
    return NUMBERS.get(key)


def resolve(
    add: Iterable[str], drop: Iterable[str], privileged: bool = False
) -> tuple[frozenset[int], list[str]]:
    """The container's capability set, and the names in add/drop that name no capability
    (runc ignores those with a warning; so does podkit)."""
    add, drop = list(add), list(drop)
    unknown = [n for n in add + drop if n.upper() != "ALL" and _number(n) is None]
    if privileged:
        return ALL, unknown
    caps = set(DEFAULT)
    if any(n.upper() == "ALL" for n in add):
        caps = set(ALL)
    if any(n.upper() == "ALL" for n in drop):
        caps = set()
    caps |= {c for n in add if (c := _number(n)) is not None}
    caps -= {c for n in drop if (c := _number(n)) is not None}
    return frozenset(caps), unknown


def mask(caps: Iterable[int]) -> int:
    """The capability bit mask, as /proc/PID/status shows it (CapEff: %016x)."""
    out = 0
    for c in caps:
        out |= 1 << c
    return out


def names(caps: Iterable[int]) -> list[str]:
    """`CAP_` names, in number order (the form OCI specs and runc use)."""
    return [f"CAP_{NAMES[c]}" for c in sorted(caps)]
