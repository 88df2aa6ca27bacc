"""From a container's securityContext to what the launcher applies (confine.Confinement).

The I/O shell around security_context.py (pure) and the seccomp modules: it reads Localhost
profiles from the node's profile root (the kubelet's <root-dir>/seccomp; podman kube play's
--seccomp-profile-root) and compiles each distinct profile once (seccomp_bpf.BpfFiles).
"""

from __future__ import annotations

from pathlib import Path

from podkit.manifest.model import Container, Pod
from podkit.runtime import capabilities, security_context
from podkit.runtime.confine import Confinement
from podkit.runtime.seccomp_bpf import BpfFiles
from podkit.runtime.seccomp_profile import (
    Profile,
    ProfileError,
    parse_oci,
    runtime_default,
    runtime_default_key,
)
from podkit.runtime.security_context import LOCALHOST, UNCONFINED, ContainerSecurity

DEFAULT_PROFILE_ROOT = Path("/var/lib/kubelet/seccomp")


class SecurityOptions:
    """Where compiled programs are kept, and where Localhost profiles are found."""

    def __init__(self, bpf: BpfFiles, profile_root: Path = DEFAULT_PROFILE_ROOT) -> None:
        self.bpf, self.profile_root = bpf, profile_root
        self._profiles: dict[str, tuple[str, Profile]] = {}

    def localhost(self, name: str) -> tuple[str, Profile]:
        """A Localhost profile by its localhostProfile path, with the name of its program;
        ProfileError names the file."""
        known = self._profiles.get(name)
        if known is None:
            import hashlib

            path = self.profile_root / name
            try:
                text = path.read_text()
            except OSError as exc:
                raise ProfileError(f"seccomp profile {path}: {exc.strerror}") from None
            profile = parse_oci(text, f"seccomp profile {path}")
            key = "localhost-" + hashlib.sha256(text.encode()).hexdigest()[:32]
            known = self._profiles[name] = (key, profile)
        return known


def container_security(pod: Pod, c: Container) -> ContainerSecurity:
    return security_context.effective(pod.raw.get("spec") or {}, c.raw)


def confinement(sec: ContainerSecurity, opts: SecurityOptions) -> Confinement:
    """The launcher's part of `sec`; raises ProfileError when its seccomp profile is unusable."""
    seccomp: str | None = None
    flags: list[str] = []
    if sec.seccomp.type == LOCALHOST:
        key, profile = opts.localhost(sec.seccomp.localhost_profile or "")
        seccomp, flags = opts.bpf.path(key, lambda: profile), list(profile.flags)
    elif sec.seccomp.type != UNCONFINED:
        caps = sec.capabilities
        seccomp = opts.bpf.path(runtime_default_key(caps), lambda: runtime_default(caps))
    return Confinement(
        capabilities=capabilities.mask(sec.capabilities),
        no_new_privs=sec.no_new_privs,
        seccomp=seccomp,
        seccomp_flags=flags,
        uid=sec.run_as_user,
        gid=sec.run_as_group,
        supplemental_groups=list(sec.supplemental_groups),
        read_only_root=sec.read_only_root,
        masked_paths=list(sec.masked_paths),
        read_only_paths=list(sec.read_only_paths),
        privileged=sec.privileged,
    )


def check_pods(pods: list[Pod], opts: SecurityOptions) -> tuple[list[str], list[str]]:
    """Before anything starts: (errors, warnings). An error is a Localhost profile that cannot
    be read, parsed or compiled; a warning names capabilities that do not exist (runc ignores
    them, with a warning)."""
    errors: list[str] = []
    warnings: list[str] = []
    for pod in pods:
        kinds = (("containers", pod.containers), ("initContainers", pod.init_containers))
        for kind, containers in kinds:
            for i, c in enumerate(containers):
                sec = container_security(pod, c)
                own = f"spec.{kind}[{i}].securityContext"
                where = f"{pod.source}: pod {pod.name}"
                if sec.unknown_capabilities:
                    names = ", ".join(sec.unknown_capabilities)
                    warnings.append(
                        f"{where}: {own}.capabilities: no such capability, ignored: {names}"
                    )
                try:
                    confinement(sec, opts)
                except ProfileError as exc:
                    owner = "spec.securityContext" if sec.seccomp.pod_level else own
                    errors.append(f"{where}: {owner}.seccompProfile.localhostProfile: {exc}")
    return errors, list(dict.fromkeys(warnings))
