"""What the apiserver does to a core/v1 Service besides storing it, pure functions: defaults
(type ClusterIP, TCP, targetPort = port, single-stack IPv4), validation (unique port names and
numbers, the ports a type allows), and the allocation of cluster IPs from the service range
(10.96.0.0/12, its `.1` for the `kubernetes` Service and `.10` kept for cluster DNS, as
clusters do) and of node ports (30000-32767). An update keeps what was allocated.
"""

from __future__ import annotations

import copy
import ipaddress
import random
from typing import Any

Obj = dict[str, Any]
Causes = list[tuple[str, str]]
SERVICE_CIDR = "10.96.0.0/12"
NODE_PORTS = range(30000, 32768)


def parse_cidr(text: str) -> str:
    """A service range as --service-cidr gives it (kube-apiserver's
    --service-cluster-ip-range): an IPv4 network from /12 (the largest it takes) to /28 (room
    for the tenth address). Raises ValueError."""
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise ValueError(f"--service-cidr {text!r}: {exc}") from None
    if not 12 <= net.prefixlen <= 28:
        raise ValueError(f"--service-cidr {text!r}: the prefix must be from /12 to /28")
    return str(net)


def reserved(cidr: str) -> tuple[str, str]:
    """The `kubernetes` Service's address (the range's first) and cluster DNS's (its tenth)."""
    net = ipaddress.IPv4Network(cidr)
    return str(net.network_address + 1), str(net.network_address + 10)


def defaulted(obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})
    return obj


def problems(obj: Obj, old: Obj | None) -> Causes:
    spec = obj.get("spec") or {}
    causes: Causes = []
    ports = spec.get("ports") or []
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(("spec.type", f'Unsupported value: "{kind}": supported values: '
                       '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'))  # fmt: skip
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(("spec.ports", "Required value"))
    seen_names: set[str] = set()
    seen_ports: set[tuple[Any, str]] = set()
    for i, port in enumerate(ports):
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            causes.append((f"spec.ports[{i}].name", "Required value"))
        elif name in seen_names:
            causes.append((f"spec.ports[{i}].name", f'Duplicate value: "{name}"'))
        seen_names.add(name)
        key = (port.get("port"), port.get("protocol", "TCP"))
        if key in seen_ports:
            causes.append((f"spec.ports[{i}]", f"Duplicate value: {{port: {key[0]}, protocol: "
                                               f"{key[1]}}}"))  # fmt: skip
        seen_ports.add(key)
        if not 0 < int(port.get("port") or 0) < 65536:
            causes.append((f"spec.ports[{i}].port", f"Invalid value: {port.get('port')}: must be "
                                                    "between 1 and 65535, inclusive"))  # fmt: skip
        if port.get("nodePort") and kind not in ("NodePort", "LoadBalancer"):
            causes.append((f"spec.ports[{i}].nodePort", "Forbidden: may not be used when `type` "
                                                        f"is '{kind}'"))  # fmt: skip
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        now = spec.get("clusterIP")
        if before and now and before != now:
            causes.append(("spec.clusterIPs[0]", f'Invalid value: ["{now}"]: may not change '
                                                 "once set"))  # fmt: skip
    return causes


def allocate(
    obj: Obj, old: Obj | None, used_ips: set[str], used_ports: set[int], cidr: str
) -> tuple[Obj, Causes]:
    """The Service with its cluster IP and node ports: kept from `old` on an update, the
    asked ones checked (in the range, free), the others chosen at random among the free."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    before = (old or {}).get("spec") or {}
    net = ipaddress.IPv4Network(cidr)
    causes: Causes = []
    if spec.get("type") == "ExternalName":
        return obj, causes
    ip = spec.get("clusterIP") or before.get("clusterIP")
    if ip and ip != "None" and ip != before.get("clusterIP"):
        try:
            inside = ipaddress.IPv4Address(ip) in net
        except ValueError:
            inside = False
        if not inside:
            causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to allocate IP '
                           f"{ip}: the provided IP ({ip}) is not in the valid range. The range "
                           f"of valid IPs is {cidr}"))  # fmt: skip
        elif ip in used_ips:
            causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to allocate IP '
                           f"{ip}: provided IP is already allocated"))  # fmt: skip
    if not ip:
        ip = _free_ip(net, used_ips | set(reserved(cidr)))
        if ip is None:
            causes.append(("spec.clusterIPs", f"Internal error: the range {cidr} is full"))
    if ip:
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in before.get("ports") or []}
    taken = set(used_ports)
    for i, port in enumerate(spec.get("ports") or []):
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            port.pop("nodePort", None)
            continue
        previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")), {})
        asked = port.get("nodePort") or previous.get("nodePort")
        if asked and asked != previous.get("nodePort"):
            if int(asked) not in NODE_PORTS:
                causes.append((f"spec.ports[{i}].nodePort", f"Invalid value: {asked}: provided "
                               "port is not in the valid range. The range of valid ports is "
                               "30000-32767"))  # fmt: skip
            elif int(asked) in taken:
                causes.append((f"spec.ports[{i}].nodePort", f"Invalid value: {asked}: provided "
                               "port is already allocated"))  # fmt: skip
        if not asked:
            free = [p for p in NODE_PORTS if p not in taken]
            asked = random.choice(free) if free else None
        if asked:
            port["nodePort"] = int(asked)
            taken.add(int(asked))
    return obj, causes


def _free_ip(net: ipaddress.IPv4Network, used: set[str]) -> str | None:
    size = net.num_addresses
    for _ in range(64):  # random first, as the apiserver's allocator picks
        candidate = str(net.network_address + random.randrange(1, size - 1))
        if candidate not in used:
            return candidate
    for offset in range(1, size - 1):
        candidate = str(net.network_address + offset)
        if candidate not in used:
            return candidate
    return None


def allocated(services: list[Obj], skip_uid: str = "") -> tuple[set[str], set[int]]:
    """The cluster IPs and node ports the Services hold (but the one being updated)."""
    ips, ports = set(), set()
    for svc in services:
        if svc["metadata"].get("uid") == skip_uid:
            continue
        spec = svc.get("spec") or {}
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            ips.add(spec["clusterIP"])
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                ports.add(int(p["nodePort"]))
    return ips, ports


def ports_text(svc: Obj) -> str:
    """kubectl's PORT(S): `80/TCP`, or `80:30080/TCP` with a node port."""
    shown = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        shown.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(shown) or "<none>"
