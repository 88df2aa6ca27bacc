"""Publishing containerPorts on the host: the plan (pure) and who holds a taken port (/proc).

By default every TCP containerPort is published on 127.0.0.1 at the same number, never on all
interfaces unless asked (hostIP: 0.0.0.0, or -p 0.0.0.0:HOST:CONTAINER). hostPort picks the host
port; `-p [IP:]HOST:CONTAINER[@POD]` remaps; `--no-publish` publishes nothing but hostPorts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from podkit.manifest.model import Pod

_PUBLISH = re.compile(
    r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?P<host>\d+):(?P<container>\d+)"
    r"(?:@(?P<pod>[a-z0-9.-]+))?$"
)


class PublishError(ValueError):
    pass


@dataclass(frozen=True)
class Remap:
    host_ip: str
    host_port: int
    container_port: int
    pod: str | None


@dataclass(frozen=True)
class Published:
    pod: str  # namespace/name
    container: str
    container_port: int
    host_ip: str
    host_port: int

    @property
    def url(self) -> str:
        if self.host_ip == "127.0.0.1":
            return f"localhost:{self.host_port}"
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host}:{self.host_port}"


def parse_remap(text: str) -> Remap:
    m = _PUBLISH.match(text)
    if not m:
        raise PublishError(f"option -p {text!r}: expected [IP:]HOST_PORT:CONTAINER_PORT[@POD]")
    ports = int(m["host"]), int(m["container"])
    if not all(0 < p < 65536 for p in ports):
        raise PublishError(f"option -p {text!r}: ports must be between 1 and 65535")
    return Remap((m["ip"] or "127.0.0.1").strip("[]"), ports[0], ports[1], m["pod"])


def parse_forward(text: str) -> tuple[int, int]:
    """`podkit port-forward` spec: REMOTE, LOCAL:REMOTE or :REMOTE (0 = any free local port)."""
    local, sep, remote = text.rpartition(":")
    try:
        ports = (int(local) if local else 0) if sep else int(remote), int(remote)
    except ValueError:
        raise PublishError(f"port {text!r}: expected [LOCAL:]REMOTE") from None
    if not (0 <= ports[0] < 65536 and 0 < ports[1] < 65536):
        raise PublishError(f"port {text!r}: ports must be between 1 and 65535")
    return ports


def unpublished_warnings(pods: list[Pod]) -> list[str]:
    """UDP and SCTP containerPorts work inside the pod, but podkit publishes only TCP."""
    skipped = [
        f"{pod.name}/{c.name} {port.container_port}/{port.protocol}"
        for pod in pods
        for c in pod.containers + pod.init_containers
        for port in c.ports
        if port.protocol != "TCP"
    ]
    if not skipped:
        return []
    return [
        f"these ports are reachable inside their pods but not published on the host "
        f"(podkit publishes TCP only): {', '.join(skipped)}"
    ]


def plan(pods: list[Pod], remaps: list[Remap], publish: bool = True) -> list[Published]:
    """Which host address each pod port is reachable at; conflicts raise PublishError."""
    out: list[Published] = []
    used_remaps: set[Remap] = set()
    for pod in pods:
        for c in pod.containers + pod.init_containers:
            for port in c.ports:
                if port.protocol != "TCP":
                    continue
                matching = [
                    r
                    for r in remaps
                    if r.container_port == port.container_port and r.pod in (None, pod.name)
                ]
                for remap in matching:  # one container port may be published several times
                    used_remaps.add(remap)
                    out.append(
                        Published(
                            f"{pod.namespace}/{pod.name}",
                            c.name,
                            port.container_port,
                            remap.host_ip,
                            remap.host_port,
                        )
                    )
                if matching:
                    continue
                if port.host_port:
                    out.append(
                        Published(
                            f"{pod.namespace}/{pod.name}",
                            c.name,
                            port.container_port,
                            port.host_ip or "127.0.0.1",
                            port.host_port,
                        )
                    )
                elif publish:
                    out.append(
                        Published(
                            f"{pod.namespace}/{pod.name}",
                            c.name,
                            port.container_port,
                            "127.0.0.1",
                            port.container_port,
                        )
                    )
    for r in remaps:
        if r not in used_remaps:
            raise PublishError(
                f"option -p {r.host_port}:{r.container_port}: no pod declares "
                f"containerPort {r.container_port}"
            )
    seen: dict[tuple[str, int], Published] = {}
    for p in out:
        other = seen.get((p.host_ip, p.host_port))
        if other is not None:
            raise PublishError(
                f"pods {other.pod} and {p.pod} both publish port {p.container_port} on "
                f"{p.host_ip}:{p.host_port}; remap one with "
                f"-p OTHER_PORT:{p.container_port}@{p.pod.split('/', 1)[1]} or use --no-publish"
            )
        seen[(p.host_ip, p.host_port)] = p
    return out


def port_holder(port: int) -> str | None:
    """'pid 123 (nginx)' for the process listening on TCP `port`, if it can be found."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"pid {pid} ({f.read().strip()})"
        except OSError:
            continue
    return None
