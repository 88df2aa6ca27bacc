"""Checks of a Pod's securityContext fields the schema cannot express.

The API server's validation (pkg/apis/core/validation: ValidateSecurityContext, seccomp profiles,
sysctl names) and the kubelet's sysctl admission, which refuses a pod with a sysctl outside the
safe set (SysctlForbidden) before any of it starts: podkit refuses the manifest the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from podkit.manifest.document import FieldPath, Manifest
from podkit.manifest.errors import Problem

SECCOMP_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")

# The kubelet's safe sysctls (pkg/kubelet/sysctl/safe_sysctls.go, Kubernetes 1.32): namespaced,
# and without effect on other pods, so allowed without --allowed-unsafe-sysctls.
SAFE_SYSCTLS = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
)
_SYSCTL_PART = r"[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
_SYSCTL_REGEX = rf"({_SYSCTL_PART}[\./])*{_SYSCTL_PART}"
_SYSCTL_NAME = re.compile(_SYSCTL_REGEX + r"\Z")


def normalize_sysctl(name: str) -> str:
    """`net/ipv4/ip_forward` and `net.ipv4.ip_forward` name the same sysctl (the kubelet's
    NormalizeName: with slashes as separators, dots inside a part stay)."""
    if "/" not in name:
        return name
    return ".".join(part.replace(".", "/") for part in name.split("/"))


def security_problems(
    m: Manifest, spec: dict[str, Any], containers: list[tuple[FieldPath, dict[str, Any]]]
) -> Iterator[Problem]:
    pod_sc = spec.get("securityContext")
    if isinstance(pod_sc, dict):
        yield from _seccomp(m, ("spec", "securityContext"), pod_sc)
        yield from _sysctls(m, pod_sc.get("sysctls"))
    for path, container in containers:
        sc = container.get("securityContext")
        if isinstance(sc, dict):
            yield from _seccomp(m, path + ("securityContext",), sc)
            yield from _escalation(m, path + ("securityContext",), sc)


def _seccomp(m: Manifest, where: FieldPath, sc: dict[str, Any]) -> Iterator[Problem]:
    profile = sc.get("seccompProfile")
    if not isinstance(profile, dict):
        return
    kind, local = profile.get("type"), profile.get("localhostProfile")
    where = where + ("seccompProfile",)
    if kind not in SECCOMP_TYPES:
        values = ", ".join(f'"{v}"' for v in SECCOMP_TYPES)
        yield m.problem(
            where + ("type",), f'unsupported value "{kind}"; supported values: {values}'
        )
    elif kind == "Localhost" and not local:
        yield m.problem(where + ("localhostProfile",), "must be set when seccomp type is Localhost")
    elif kind != "Localhost" and local is not None:
        yield m.problem(
            where + ("localhostProfile",), "can only be set when seccomp type is Localhost"
        )
    elif local is not None:
        if local.startswith("/"):
            yield m.problem(where + ("localhostProfile",), "must be a relative path")
        elif ".." in local.split("/"):
            yield m.problem(where + ("localhostProfile",), "must not contain '..'")


def _escalation(m: Manifest, where: FieldPath, sc: dict[str, Any]) -> Iterator[Problem]:
    if sc.get("allowPrivilegeEscalation") is not False:
        return
    if sc.get("privileged"):
        yield m.problem(
            where, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
        )
    added = (sc.get("capabilities") or {}).get("add") or []
    if any(str(c).upper().removeprefix("CAP_") == "SYS_ADMIN" for c in added):
        yield m.problem(
            where,
            "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
        )


def _sysctls(m: Manifest, items: Any) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            continue
        where = ("spec", "securityContext", "sysctls", index, "name")
        name = str(item.get("name") or "")
        if not name:
            yield m.problem(where, "required value")
            continue
        if not _SYSCTL_NAME.match(name) or len(name) > 253:
            yield m.problem(
                where,
                f"{name!r}: must have at most 253 characters and match the regex {_SYSCTL_REGEX}",
            )
            continue
        normalized = normalize_sysctl(name)
        if normalized in seen:
            yield m.problem(where, f'Duplicate value: "{name}"')
            continue
        seen[normalized] = index
        if normalized not in SAFE_SYSCTLS:
            yield m.problem(
                where,
                f'forbidden sysctl: "{name}" not allowlisted (the kubelet allows only the safe '
                f"sysctls: {', '.join(SAFE_SYSCTLS)})",
            )
