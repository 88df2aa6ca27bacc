"""The nftables ruleset that makes Services' cluster IPs work, as kube-proxy's nftables mode
writes it, pure: a table of podkit's own where traffic to a ClusterIP:port (from pods, through
prerouting; from the host, through output) is DNATed to one of the Service's ready endpoints,
chosen with `numgen random`; traffic an endpoint sends to its own Service is marked and
masqueraded (hairpin), so the reply comes back through the host; a Service with no ready
endpoint rejects, as kube-proxy's does, instead of leaving the client to time out.

The whole table is replaced in one nft transaction: conntrack keeps the connections already
made, so endpoints that stay keep their connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
HAIRPIN = "0x4000"  # kube-proxy's masquerade mark
SERVICE_NAME = "kubernetes.io/service-name"


def ready_endpoints(svc: Obj, slices: list[Obj]) -> dict[tuple[str, str], list[Obj]]:
    """(port name, protocol) -> the ready endpoints of one Service, each as its slice has it,
    with that port's number as `port`."""
    name = svc["metadata"]["name"]
    out: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) != name:
            continue
        for port in s.get("ports") or []:
            key = (port.get("name", ""), port.get("protocol", "TCP"))
            for e in s.get("endpoints") or []:
                if (e.get("conditions") or {}).get("ready") is not False:
                    out.setdefault(key, []).append({**e, "port": int(port["port"])})
    return out


def backends(svc: Obj, slices: list[Obj]) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(port name, protocol) -> the ready endpoints' (ip, port) for one Service."""
    return {
        key: sorted({(ip, e["port"]) for e in ends for ip in e.get("addresses") or []})
        for key, ends in ready_endpoints(svc, slices).items()
    }


def cluster_ports(
    services: list[Obj], slices: list[Obj]
) -> Iterator[tuple[str, int, str, list[tuple[str, int]]]]:
    """(cluster IP, port, protocol, the ready endpoints' (ip, port)) for each port of each
    Service that has a cluster IP, in the order of namespace and name."""
    by_ns: dict[str, list[Obj]] = {}
    for s in slices:
        by_ns.setdefault(s["metadata"].get("namespace", ""), []).append(s)
    for svc in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""),
                                               s["metadata"]["name"])):  # fmt: skip
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        found = backends(svc, by_ns.get(svc["metadata"].get("namespace", ""), []))
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol", "TCP"))
            yield ip, int(port["port"]), protocol, found.get((port.get("name", ""), protocol), [])


def ruleset(table: str, services: list[Obj], slices: list[Obj]) -> str:
    """The `table ip <table> {...}` text for these Services and EndpointSlices."""
    dispatch: list[str] = []
    chains: list[str] = []
    rejects: list[str] = []
    for ip, number, protocol, ends in cluster_ports(services, slices):
        proto = protocol.lower()
        if proto not in ("tcp", "udp"):
            continue
        match = f"ip daddr {ip} {proto} dport {number}"
        if not ends:
            rejects.append(f"    {match} reject")
            continue
        svc_chain = f"svc-{len(chains)}"
        dispatch.append(f"    {match} goto {svc_chain}")
        picks = []
        for i, (end_ip, end_port) in enumerate(ends):
            ep_chain = f"{svc_chain}-ep-{i}"
            picks.append(f"{i} : goto {ep_chain}")
            chains.append(
                f"  chain {ep_chain} {{\n"
                f"    ip saddr {end_ip} meta mark set meta mark | {HAIRPIN}\n"
                f"    meta l4proto {proto} dnat ip to {end_ip}:{end_port}\n  }}"
            )
        chains.append(
            f"  chain {svc_chain} {{\n"
            f"    numgen random mod {len(ends)} vmap {{ {', '.join(picks)} }}\n  }}"
        )
    hooks = [
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
        "    jump services\n  }",
        "  chain output {\n    type nat hook output priority -100; policy accept;\n"
        "    jump services\n  }",
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    meta mark & {HAIRPIN} == {HAIRPIN} masquerade\n  }}",
        "  chain no-endpoints {\n" + "".join(r + "\n" for r in rejects) + "  }",
        "  chain filter-forward {\n    type filter hook forward priority filter; policy accept;\n"
        "    jump no-endpoints\n  }",
        "  chain filter-output {\n    type filter hook output priority filter; policy accept;\n"
        "    jump no-endpoints\n  }",
        "  chain services {\n" + "".join(d + "\n" for d in dispatch) + "  }",
    ]
    return f"table ip {table} {{\n" + "\n".join(hooks + chains) + "\n}\n"


def node_ports(services: list[Obj]) -> dict[int, tuple[str, int, str]]:
    """nodePort -> (cluster IP, port, protocol) for every NodePort Service's TCP ports."""
    out = {}
    for svc in services:
        spec = svc.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer") or not spec.get("clusterIP"):
            continue
        for port in spec.get("ports") or []:
            if port.get("nodePort") and port.get("protocol", "TCP") == "TCP":
                out[int(port["nodePort"])] = (spec["clusterIP"], int(port["port"]), "TCP")
    return out
