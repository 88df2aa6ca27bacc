"""Cluster DNS of `podkit serve` (CoreDNS's kubernetes plugin, in small): names in the
cluster domain answered from Services and EndpointSlices, everything else forwarded to the
host's resolvers.

    <svc>.<ns>.svc.cluster.local            A: the cluster IP; a headless Service's ready
                                            endpoints, one record each
    _<port>._<proto>.<svc>.<ns>.svc...      SRV for a named port (the Service's name and port,
                                            or each endpoint's for a headless Service)
    <hostname>.<svc>.<ns>.svc...            A: a pod with that hostname and subdomain <svc>
    <a-b-c-d>.<ns>.pod.cluster.local        A: a.b.c.d
    anything else in the domain             NXDOMAIN

dnspython builds and parses the messages and does the forwarding: it is maintained, typed,
speaks UDP and TCP with asyncio, and is the client the tests use too, so one library covers
both sides. (dnslib would do as well for the server; dnsmasq would need its config rewritten
on every Service change.)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Any, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from podkit.api.kinds import ENDPOINT_SLICE, SERVICE
from podkit.api.rest import Rest
from podkit.api.status import ApiError
from podkit.controllers.loop import Key, Singleton
from podkit.controllers.replicas import owner_ref

Obj = dict[str, Any]
TTL = 5  # seconds, CoreDNS's kubernetes plugin's default
DOMAIN = "cluster.local"
SERVICE_NAME = "kubernetes.io/service-name"


@dataclass
class Endpoint:
    ip: str
    hostname: str
    ports: dict[tuple[str, str], int]  # (port name, protocol) -> port


@dataclass
class Records:
    """What the DNS answers from: Services and their ready endpoints, by (namespace, name)."""

    services: dict[tuple[str, str], Obj] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], list[Endpoint]] = field(default_factory=dict)

    @classmethod
    def build(cls, services: list[Obj], slices: list[Obj]) -> Records:
        out = cls()
        for svc in services:
            meta = svc["metadata"]
            out.services[(meta.get("namespace", ""), meta["name"])] = svc
        for s in slices:
            meta = s["metadata"]
            owner = (meta.get("labels") or {}).get(SERVICE_NAME)
            key = (meta.get("namespace", ""), owner or "")
            owner_svc = out.services.get(key)
            if owner_svc is None:
                continue
            publish = bool((owner_svc.get("spec") or {}).get("publishNotReadyAddresses"))
            ports = {(p.get("name", ""), p.get("protocol", "TCP")): int(p["port"])
                     for p in s.get("ports") or []}  # fmt: skip
            for e in s.get("endpoints") or []:
                if not publish and (e.get("conditions") or {}).get("ready") is False:
                    continue
                for ip in e.get("addresses") or []:
                    out.endpoints.setdefault(key, []).append(
                        Endpoint(ip, e.get("hostname", ""), ports)
                    )
        return out


def _a(name: dns.name.Name, ips: list[str]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, TTL, "IN", "A", sorted(set(ips)))


def answer(query: dns.message.Message, records: Records, domain: str) -> dns.message.Message | None:
    """The reply to a query for a name in `domain`, or None for a name outside it (to
    forward)."""
    if not query.question:
        return None
    question = query.question[0]
    zone = dns.name.from_text(domain)
    qname = question.name
    if not qname.is_subdomain(zone):
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    labels = [label.decode().lower() for label in qname.relativize(zone).labels]
    found = _lookup(labels, question.rdtype, records, qname, zone)
    if found is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    else:
        reply.answer.extend(found)
    return reply


def _lookup(
    labels: list[str], qtype: int, records: Records, qname: dns.name.Name, zone: dns.name.Name
) -> list[dns.rrset.RRset] | None:
    """The answer records, [] for a name that exists with no record of this type, None for a
    name that does not exist."""
    if not labels or labels in (["svc"], ["pod"]):
        return []
    if len(labels) == 3 and labels[2] == "pod":  # a-b-c-d.<ns>.pod
        ip = labels[0].replace("-", ".")
        return [_a(qname, [ip])] if qtype == dns.rdatatype.A else []
    if labels[-1] != "svc" or len(labels) < 3:
        return None
    ns, name, rest = labels[-2], labels[-3], labels[:-3]
    svc = records.services.get((ns, name))
    if svc is None:
        return None
    spec = svc.get("spec") or {}
    headless = spec.get("clusterIP") == "None"
    ends = records.endpoints.get((ns, name), [])
    target = dns.name.from_text(f"{name}.{ns}.svc", zone)
    if not rest:  # the Service itself
        if headless and not ends:
            return None
        if qtype == dns.rdatatype.A:
            return [_a(qname, [e.ip for e in ends] if headless else [spec.get("clusterIP", "")])]
        if qtype == dns.rdatatype.SRV:
            return _srv(qname, spec, ends, headless, target, None, zone)
        return []
    if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
        if qtype != dns.rdatatype.SRV:
            return []
        port = (rest[0][1:], rest[1][1:].upper())
        srv = _srv(qname, spec, ends, headless, target, port, zone)
        return srv or None
    if len(rest) == 1 and headless:  # <hostname or a-b-c-d>.<svc>.<ns>.svc
        ips = [e.ip for e in ends if rest[0] in (e.hostname, e.ip.replace(".", "-"))]
        if not ips:
            return None
        return [_a(qname, ips)] if qtype == dns.rdatatype.A else []
    return None


def _srv(
    qname: dns.name.Name,
    spec: Obj,
    ends: list[Endpoint],
    headless: bool,
    target: dns.name.Name,
    port: tuple[str, str] | None,
    zone: dns.name.Name,
) -> list[dns.rrset.RRset]:
    lines = []
    for p in spec.get("ports") or []:
        key = (p.get("name", ""), p.get("protocol", "TCP"))
        if port is not None and key != port or not key[0]:
            continue
        if headless:
            for e in ends:
                host = e.hostname or e.ip.replace(".", "-")
                if key in e.ports:
                    lines.append(f"0 100 {e.ports[key]} {host}.{target}")
        else:
            lines.append(f"0 100 {int(p['port'])} {target}")
    if not lines:
        return []
    return [dns.rrset.from_text_list(qname, TTL, "IN", "SRV", sorted(set(lines)))]


def udp_wire(response: dns.message.Message, query: dns.message.Message) -> bytes:
    """The answer as a UDP datagram the client takes: 512 bytes, or the payload size its EDNS
    offers. Past that it goes with TC set and no records, and the client asks again over TCP
    (RFC 1035 4.2.1, RFC 6891), as CoreDNS does it for a large headless Service."""
    limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        short = dns.message.make_response(query)
        short.flags |= dns.flags.TC
        short.set_rcode(response.rcode())
        return short.to_wire()


# --- the server ------------------------------------------------------------------------------


class ClusterDns:
    """UDP and TCP on one address; `records` is replaced as Services change."""

    def __init__(self, domain: str, upstreams: list[tuple[str, int]]) -> None:
        self.domain = domain
        self.upstreams = upstreams  # (address, port): where other names are asked
        self.records = Records()
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, host: str, port: int = 53) -> int:
        """Answers on UDP and TCP `port` of `host` (0: a free one, the same for both); the
        port. Raises OSError."""
        loop = asyncio.get_running_loop()
        for _ in range(1 if port else 10):  # a UDP port whose TCP twin is taken: another
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, port)
            )
            bound = int(self._transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, host, bound)
                return bound
            except OSError:
                self._transport.close()
                if port:
                    raise
        raise OSError(f"no port of {host} free for both UDP and TCP")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()

    async def reply(self, wire: bytes, udp: bool = False) -> bytes | None:
        """The answer to a query: over UDP (`udp`), within the size its client takes."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - any malformed message: no answer, as servers do
            return None
        response = answer(query, self.records, self.domain)
        if response is None:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            for address, port in self.upstreams:
                with contextlib.suppress(Exception):
                    response = await dns.asyncquery.udp(query, address, port=port, timeout=2.0)
                    break
        return udp_wire(response, query) if udp else response.to_wire()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                out = await self.reply(await reader.readexactly(size))
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDns) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.ensure_future(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        out = await self.server.reply(data, udp=True)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class DnsRecords(Singleton):
    """Keeps the DNS server's records in step with Services and EndpointSlices."""

    name = "cluster-dns"
    watches = (SERVICE, ENDPOINT_SLICE)

    def __init__(self, rest: Rest, server: ClusterDns) -> None:
        super().__init__(rest)
        self.server = server

    def sync(self, key: Key) -> float | None:
        services, _ = self.rest.list_objects(SERVICE, None)
        slices, _ = self.rest.list_objects(ENDPOINT_SLICE, None)
        self.server.records = Records.build(services, slices)
        return None


def register(rest: Rest, address: str, cluster_ip: str, port: int = 53) -> None:
    """kube-system/kube-dns: the Service pods' resolv.conf names (cluster_ip, port 53 UDP and
    TCP) and its endpoint, this server (at `port`), as a cluster's DNS Deployment would have
    it."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]  # fmt: skip
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kube-dns", "namespace": "kube-system",
                        "labels": {"k8s-app": "kube-dns"}},
           "spec": {"clusterIP": cluster_ip, "ports": ports}}  # fmt: skip
    register_endpoint(rest, svc, address, [("dns", port, "UDP"), ("dns-tcp", port, "TCP")])


def register_endpoint(
    rest: Rest, svc: Obj, address: str, ports: list[tuple[str, int, str]]
) -> None:
    """A Service of serve's own (no selector) and the EndpointSlice that names serve as its
    endpoint, made again at each start (the address may have changed)."""
    meta = svc["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        current = rest.get(SERVICE, ns, name)
    except ApiError:
        current = rest.create(SERVICE, ns, svc)
    endpoint = {"addresses": [address], "conditions": {"ready": True}}
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": f"{name}-podkit", "namespace": ns,
                           "labels": {SERVICE_NAME: name,
                                      "endpointslice.kubernetes.io/managed-by": "podkit-serve"},
                           "ownerReferences": [owner_ref(current)]},
              "addressType": "IPv4", "endpoints": [endpoint],
              "ports": [{"name": n, "port": p, "protocol": proto}
                        for n, p, proto in ports]}  # fmt: skip
    with contextlib.suppress(ApiError):
        rest.delete(ENDPOINT_SLICE, ns, f"{name}-podkit")
    rest.create(ENDPOINT_SLICE, ns, slice_)
