"""A pod's /etc/resolv.conf from dnsPolicy and dnsConfig, as the kubelet writes it
(pkg/kubelet/network/dns). Pure: the caller reads the host's file and writes the result.

    Default       the host's nameservers, search list and options
    ClusterFirst  the cluster's DNS (podkit serve's, given as --cluster-dns): its address,
                  the search list <ns>.svc.<domain> svc.<domain> <domain> and the host's,
                  ndots:5; without one (podkit run), the host's, as a kubelet without
                  --cluster-dns falls back
    None          only what dnsConfig gives
    dnsConfig     nameservers and searches appended (deduplicated), options merged by name
                  (a later value wins); at most 3 nameservers and 32 search domains
"""

from __future__ import annotations

from typing import Any

MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def parse(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of a resolv.conf."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]  # the last one wins, as the resolver reads it
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, searches, options


def resolv_conf(
    pod_spec: dict[str, Any],
    host_text: str,
    cluster: tuple[str, str] | None = None,
    namespace: str = "default",
) -> str:
    """`cluster`: the cluster DNS's address and domain, when there is one."""
    policy = pod_spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        servers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
    else:
        servers, searches, options = parse(host_text)
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster is not None:
        address, domain = cluster
        servers = [address]
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *searches]
        options = ["ndots:5"]
    config = pod_spec.get("dnsConfig") or {}
    servers = _unique([*servers, *(config.get("nameservers") or [])])[:MAX_NAMESERVERS]
    searches = _unique([*searches, *(config.get("searches") or [])])[:MAX_SEARCHES]
    merged: dict[str, str | None] = {}
    for opt in options:
        name, _, value = opt.partition(":")
        merged[name] = value or None
    for opt in config.get("options") or []:
        merged[str(opt.get("name"))] = opt.get("value")
    lines = [f"nameserver {s}" for s in servers]
    if searches:
        lines.append("search " + " ".join(searches))
    if merged:
        lines.append(
            "options " + " ".join(n if v is None else f"{n}:{v}" for n, v in merged.items())
        )
    return "".join(line + "\n" for line in lines)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in items))
