"""A container's effective securityContext, as the kubelet computes it (pure; no I/O).

Container fields override the pod's for runAsUser, runAsGroup, runAsNonRoot and seccompProfile
(the kubelet's DetermineEffectiveSecurityContext); supplementalGroups, fsGroup and sysctls are
the pod's alone, and capabilities, privileged, allowPrivilegeEscalation,
readOnlyRootFilesystem and procMount the container's.

Where Kubernetes leaves the choice to the node, podkit takes the strict one: every container
runs under the RuntimeDefault seccomp profile unless it asks for Unconfined (the kubelet's
`--seccomp-default`, which podman also defaults to).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from podkit.manifest.security_checks import normalize_sysctl
from podkit.runtime import capabilities

# The kubelet's defaults for procMount: Default (pkg/securitycontext/util.go), the same paths
# containerd and Docker use.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READ_ONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

RUNTIME_DEFAULT, UNCONFINED, LOCALHOST = "RuntimeDefault", "Unconfined", "Localhost"


class Seccomp(NamedTuple):
    type: str  # RuntimeDefault | Unconfined | Localhost
    localhost_profile: str | None = None  # relative to the node's seccomp profile root
    pod_level: bool = False  # set in the pod's securityContext, not the container's


class ContainerSecurity(NamedTuple):
    privileged: bool = False
    capabilities: frozenset[int] = capabilities.DEFAULT
    unknown_capabilities: tuple[str, ...] = ()
    no_new_privs: bool = False
    seccomp: Seccomp = Seccomp(RUNTIME_DEFAULT)
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    supplemental_groups: tuple[int, ...] = ()  # the pod's fsGroup and supplementalGroups
    read_only_root: bool = False
    masked_paths: tuple[str, ...] = MASKED_PATHS
    read_only_paths: tuple[str, ...] = READ_ONLY_PATHS


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seccomp(pod_sc: dict[str, Any], sc: dict[str, Any], privileged: bool) -> Seccomp:
    if privileged:  # the kubelet runs privileged containers unconfined
        return Seccomp(UNCONFINED)
    for owner, pod_level in ((sc, False), (pod_sc, True)):
        profile = _dict(owner.get("seccompProfile"))
        if profile.get("type"):
            return Seccomp(str(profile["type"]), profile.get("localhostProfile"), pod_level)
    return Seccomp(RUNTIME_DEFAULT)


def effective(pod_spec: dict[str, Any], container: dict[str, Any]) -> ContainerSecurity:
    """The security of one container of the pod `pod_spec`."""
    pod_sc = _dict(pod_spec.get("securityContext"))
    sc = _dict(container.get("securityContext"))
    privileged = bool(sc.get("privileged"))
    caps_spec = _dict(sc.get("capabilities"))
    caps, unknown = capabilities.resolve(
        caps_spec.get("add") or [], caps_spec.get("drop") or [], privileged
    )

    def either(key: str) -> Any:
        return sc[key] if sc.get(key) is not None else pod_sc.get(key)

    # The kubelet's order: fsGroup, then supplementalGroups.
    groups = [] if pod_sc.get("fsGroup") is None else [int(pod_sc["fsGroup"])]
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    return ContainerSecurity(
        privileged=privileged,
        capabilities=caps,
        unknown_capabilities=tuple(unknown),
        # The kubelet's AddNoNewPrivileges: only an explicit allowPrivilegeEscalation: false.
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        seccomp=_seccomp(pod_sc, sc, privileged),
        run_as_user=either("runAsUser"),
        run_as_group=either("runAsGroup"),
        run_as_non_root=bool(either("runAsNonRoot")),
        supplemental_groups=tuple(groups),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        masked_paths=() if privileged else MASKED_PATHS,
        read_only_paths=() if privileged else READ_ONLY_PATHS,
    )


def non_root_violation(
    sec: ContainerSecurity, image_uid: int | None, image_user: str, pod: str, container: str
) -> str | None:
    """The kubelet's verifyRunAsNonRoot: its message (reason CreateContainerConfigError), or
    None. `pod` is the kubelet's format.Pod: name_namespace(uid). An image that names no user
    runs as root (uid 0)."""
    if not sec.run_as_non_root:
        return None
    which = f'(pod: "{pod}", container: {container})'
    if sec.run_as_user is not None:
        if sec.run_as_user == 0:
            return f"container's runAsUser breaks non-root policy {which}"
        return None
    if image_uid == 0 or (image_uid is None and not image_user):
        return f"container has runAsNonRoot and image will run as root {which}"
    if image_uid is None:
        return (
            f"container has runAsNonRoot and image has non-numeric user ({image_user}), cannot "
            f"verify user is non-root {which}"
        )
    return None


# ------------------------------------------------------------------------------------- sysctls


def sysctls(pod_spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The pod's sysctls as (normalized name, value); the manifest checks allowed only safe
    ones (manifest/security_checks.py)."""
    pod_sc = _dict(pod_spec.get("securityContext"))
    return [
        (normalize_sysctl(str(s.get("name", ""))), str(s.get("value", "")))
        for s in pod_sc.get("sysctls") or []
        if isinstance(s, dict)
    ]


def sysctl_path(name: str) -> str:
    """Where a (normalized) sysctl lives under /proc/sys."""
    return "/proc/sys/" + "/".join(p.replace("/", ".") for p in name.split("."))
