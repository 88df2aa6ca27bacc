"""A pod's files on the host: state directory, sandbox, volumes, /etc/hosts, mount lists."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from podkit.manifest import quantity
from podkit.manifest.model import Bundle, Container, Pod
from podkit.runtime import atomic_volume, dns, sandbox, security_context, statedir
from podkit.runtime import network as podnet
from podkit.runtime.env import ResolveError
from podkit.runtime.network import NetworkConfig, PodNetwork
from podkit.runtime.volume_files import projected_files

PROJECTED = ("configMap", "secret", "downwardAPI", "projected")  # always mounted read-only


def fs_group_mode(mode: int, is_dir: bool, read_only: bool) -> int:
    """The kubelet's SetVolumeOwnership: the fsGroup may read (and, on a writable volume,
    write) every file; directories also let it through and hand their group down (setgid)."""
    mode |= 0o440 if read_only else 0o660
    if is_dir:
        mode |= 0o2110
    return mode


def _give_to_group(top: str, gid: int, read_only: bool) -> None:
    """pod.spec.securityContext.fsGroup on a volume: its files belong to that group."""
    for directory, _, files in os.walk(top):
        for path in [directory, *(os.path.join(directory, f) for f in files)]:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            os.lchown(path, -1, gid)
            is_dir = stat.S_ISDIR(info.st_mode)
            os.chmod(path, fs_group_mode(stat.S_IMODE(info.st_mode), is_dir, read_only))


def hosts_file(pod: Pod, pod_ip: str) -> str:
    """The kubelet's managed /etc/hosts: localhost, the pod's own name, then hostAliases."""
    text = (
        "# Kubernetes-managed hosts file (podkit).\n127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
        f"{pod_ip}\t{pod.hostname}\n"
    )
    aliases = (pod.raw.get("spec") or {}).get("hostAliases") or []
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        for alias in aliases:
            text += "\t".join([str(alias.get("ip", "")), *map(str, alias.get("hostnames") or [])])
            text += "\n"
    return text


def host_resolv_conf() -> str:
    """The host's resolver configuration (empty when the host has none)."""
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


class PodFiles:
    def __init__(
        self, pod: Pod, bundle: Bundle, state_dir: Path, cluster_dns: tuple[str, str] | None = None
    ) -> None:
        self.pod, self.bundle = pod, bundle
        self.cluster_dns = cluster_dns  # (address, domain) of podkit serve's DNS
        self.pod_ip = "127.0.0.1"  # until the pod has an address on the bridge
        self.network: tuple[NetworkConfig, PodNetwork] | None = None
        self.dir = statedir.pod_dir(state_dir, pod.namespace, pod.name, pod.uid)
        self.sandbox_pid: int | None = None
        self.pid_ns_pid: int | None = None  # PID 1 of the pod's PID namespace, when shared
        self.socket: sandbox.PodSockets | sandbox.NetnsSockets | None = None  # in the pod
        self.volume_paths: dict[str, str] = {}
        self.kinds = {v.name: v.kind for v in pod.volumes}

    def tmpfs_volumes(self) -> list[tuple[str, int | None]]:
        """Volumes that must live in memory: emptyDir medium Memory, secrets (never on disk)."""
        specs: list[tuple[str, int | None]] = [(f"{self.dir}/shm", None)]
        for v in self.pod.volumes:
            path = f"{self.dir}/volumes/{v.name}"
            if v.kind == "emptyDir" and v.source.get("medium") == "Memory":
                limit = v.source.get("sizeLimit")
                size = quantity.value(quantity.parse_quantity(limit)) if limit else None
                specs.append((path, size or None))
            elif v.kind == "secret":
                specs.append((path, None))
        return specs

    def create(self, share_pid: bool, network: NetworkConfig | None) -> None:
        """State dirs, the sandbox (forked: podkit must still be single-threaded), its
        address on the bridge (raises network.NetworkError), /etc files and volumes."""
        statedir.claim(self.dir)  # first: another podkit's clean-up leaves it be from now on
        for sub in ("logs", "volumes", "containers", "etc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        sysctls = [
            (security_context.sysctl_path(name), value)
            for name, value in security_context.sysctls(self.pod.raw.get("spec") or {})
        ]
        self.sandbox_pid, self.pid_ns_pid, self.socket = sandbox.fork_sandbox(
            self.pod.hostname, self.tmpfs_volumes(), share_pid, sysctls,
            listen=self.dir / sandbox.LISTEN_NAME,
        )  # fmt: skip
        (self.dir / "sandbox").write_text(str(self.sandbox_pid))  # for `podkit port-forward`
        if network is not None:
            net = podnet.attach(network, self.sandbox_pid, self.pod.uid, podnet.HOST_DIR)
            self.network = (network, net)
            self.pod_ip = net.ip
        self._write_etc()
        self._prepare_volumes()

    def in_sandbox(self, path: str) -> str:
        """A path as the sandbox's mount namespace sees it (where its tmpfs mounts live)."""
        return f"/proc/{self.sandbox_pid}/root{path}"

    def _write_etc(self) -> None:
        etc = self.dir / "etc"
        (etc / "hostname").write_text(self.pod.hostname + "\n")
        spec = self.pod.raw.get("spec") or {}
        text = dns.resolv_conf(spec, host_resolv_conf(), self.cluster_dns, self.pod.namespace)
        (etc / "resolv.conf").write_text(text)
        (etc / "hosts").write_text(hosts_file(self.pod, self.pod_ip))

    def _fs_group(self) -> int | None:
        group = ((self.pod.raw.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        return None if group is None else int(group)

    def _prepare_volumes(self) -> None:
        fs_group = self._fs_group()
        for v in self.pod.volumes:
            path = f"{self.dir}/volumes/{v.name}"
            if v.kind == "hostPath":
                self.volume_paths[v.name] = v.source["path"]
                continue
            os.makedirs(self.in_sandbox(path), exist_ok=True)
            if v.kind == "emptyDir":  # the kubelet's emptyDir is world-writable
                os.chmod(self.in_sandbox(path), 0o777)
            if v.kind in PROJECTED:
                atomic_volume.write(
                    self.in_sandbox(path), projected_files(self.pod, v, self.bundle)
                )
            if fs_group is not None:
                _give_to_group(self.in_sandbox(path), fs_group, v.kind in PROJECTED)
            self.volume_paths[v.name] = path

    def refresh_volumes(self, pod: Pod, bundle: Bundle) -> list[tuple[str, str]]:
        """The kubelet's periodic remount: configMap, secret, downwardAPI and projected volumes
        rewritten from newer objects (labels, ConfigMaps, Secrets), each all at once. Returns
        (volume, error) for those whose sources cannot be read now; they keep their files."""
        self.pod, self.bundle = pod, bundle
        failed: list[tuple[str, str]] = []
        if self.sandbox_pid is None:
            return failed
        for v in pod.volumes:
            if v.kind not in PROJECTED:
                continue
            path = self.in_sandbox(f"{self.dir}/volumes/{v.name}")
            try:
                changed = atomic_volume.write(path, projected_files(pod, v, bundle))
            except ResolveError as exc:
                failed.append((v.name, str(exc)))
                continue
            group = self._fs_group()
            if changed and group is not None:
                _give_to_group(path, group, True)
        return failed

    def mounts(self, c: Container) -> list[dict[str, Any]]:
        """The launcher's mount list for `c`: pod files first, then its volumeMounts."""
        mounts: list[dict[str, Any]] = []
        targets = {m.mount_path for m in c.volume_mounts}
        for name in ("hosts", "hostname", "resolv.conf"):
            if f"/etc/{name}" not in targets:
                source = str(self.dir / "etc" / name)
                mounts.append({"source": source, "target": f"/etc/{name}", "read_only": False})
        mounts.append({"source": str(self.dir / "shm"), "target": "/dev/shm", "read_only": False})
        for m in c.volume_mounts:
            source = self.volume_paths[m.name]
            if m.sub_path:
                source = os.path.join(source, m.sub_path)
                kind = self.kinds[m.name]
                in_sb = source if kind == "hostPath" else self.in_sandbox(source)
                if not os.path.exists(in_sb):
                    os.makedirs(in_sb)  # the kubelet creates a missing subPath
            read_only = m.read_only or self.kinds[m.name] in PROJECTED
            mounts.append({"source": source, "target": m.mount_path, "read_only": read_only})
        return mounts

    def stop(self) -> None:
        if self.network is not None:
            podnet.detach(*self.network, podnet.HOST_DIR)
            self.network = None
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.sandbox_pid is not None:
            sandbox.stop_sandbox(self.sandbox_pid)
            self.sandbox_pid = None
        statedir.remove_volatile(self.dir)
