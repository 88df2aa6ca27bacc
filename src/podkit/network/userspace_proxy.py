"""Services without root: a userspace proxy on each pod's loopback (kube-proxy's old userspace
mode, moved into the pods).

Rootless pods have no IP of their own, only loopback, so cluster IPs cannot be DNATed to them.
Instead the service range lies inside 127.0.0.0/8 (serve's rootless default 127.96.0.0/12):
every address of it is local in every pod's network namespace. For each pod and each Service
port, this proxy listens *inside the pod* on CLUSTER_IP:PORT, with a socket the pod's sandbox
makes for it (runtime/sandbox.py, pod_sockets); what a connection there sends goes to one of
the Service's ready endpoints, chosen at random: into the endpoint pod, to its 127.0.0.1:PORT,
through a socket made inside that pod in turn, or to a host address (serve's own endpoints:
the API, the cluster DNS). UDP goes the same way, one datagram and its answer at a time (the
cluster DNS's queries).

So names and environment variables work unchanged in pods: `web` resolves to the cluster IP,
`WEB_SERVICE_HOST` is it, and a connection to it reaches a `web` pod. From the host, a
NodePort on 127.0.0.1 leads to the same endpoints (nothing listens on the host's cluster
IPs). Traffic passes through serve, so it stops while serve is down, and costs a copy each
way (the kernel's DNAT, as root, costs none).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podkit.api.kinds import ENDPOINT_SLICE, POD, SERVICE
from podkit.api.rest import Rest
from podkit.controllers import replicas
from podkit.controllers.loop import Key, Singleton
from podkit.network import relay, service_proxy, service_rules
from podkit.runtime import sandbox, statedir

Obj = dict[str, Any]
UDP_WAIT = 5.0  # seconds an endpoint has to answer a datagram
WAIT_FOR_SANDBOX = 30.0  # seconds a new pod's sandbox is looked for, 5 times a second
CONNECT_ATTEMPTS = 3  # endpoints tried for one connection (the ambassador's number)
ROOTLESS_SERVICE_CIDR = "127.96.0.0/12"


@dataclass(frozen=True)
class Port:
    """One Service port as a pod's listener serves it."""

    ip: str
    port: int
    protocol: str  # TCP or UDP


@dataclass(frozen=True)
class Endpoint:
    pod: Path | None  # the endpoint pod's sandbox listener, or None: a host address
    address: str
    port: int


def routes(services: list[Obj], slices: list[Obj], state_dir: Path) -> dict[Port, list[Endpoint]]:
    """Each Service port -> its ready endpoints (pure)."""
    out: dict[Port, list[Endpoint]] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        ns = svc["metadata"].get("namespace", "")
        found = service_rules.ready_endpoints(
            svc, [s for s in slices if s["metadata"].get("namespace", "") == ns]
        )
        for port in spec.get("ports") or []:
            protocol = port.get("protocol", "TCP")
            if protocol not in ("TCP", "UDP"):
                continue
            ends = []
            for e in found.get((port.get("name", ""), protocol), []):
                ref = e.get("targetRef") or {}
                pod = (
                    statedir.pod_dir(state_dir, ref["namespace"], ref["name"], ref["uid"])
                    / sandbox.LISTEN_NAME
                    if ref.get("kind") == "Pod"
                    else None
                )
                ends += [Endpoint(pod, a, e["port"]) for a in e.get("addresses") or []]
            out[Port(ip, int(port["port"]), protocol)] = ends
    return out


def created(pod: Obj) -> float:
    made = replicas.when(pod["metadata"].get("creationTimestamp"))
    return made.timestamp() if made is not None else 0.0


class UserspaceProxy(Singleton):
    name = "userspace-service-proxy"
    watches = (SERVICE, ENDPOINT_SLICE, POD)

    def __init__(
        self,
        rest: Rest,
        state_dir: Path,
        node_port_addresses: list[str] = service_proxy.NODE_PORT_ADDRESSES,
    ) -> None:
        super().__init__(rest)
        self.state_dir = state_dir
        self.addresses = node_port_addresses
        self.routes: dict[Port, list[Endpoint]] = {}
        # By pod uid, or "@ADDRESS" for a NodePort on the host.
        self.listening: dict[tuple[str, Port], _Listener] = {}

    def sync(self, key: Key) -> float | None:
        services, _ = self.rest.list_objects(SERVICE, None)
        slices, _ = self.rest.list_objects(ENDPOINT_SLICE, None)
        self.routes = routes(services, slices, self.state_dir)
        pods: dict[str, Path] = {}
        waiting = False
        for pod in self.rest.list_objects(POD, None)[0]:
            meta = pod["metadata"]
            if (pod.get("status") or {}).get("phase") not in ("Pending", "Running"):
                continue
            listen = (
                statedir.pod_dir(self.state_dir, meta["namespace"], meta["name"], meta["uid"])
                / sandbox.LISTEN_NAME
            )
            if listen.exists():
                pods[meta["uid"]] = listen
            elif time.time() - created(pod) < WAIT_FOR_SANDBOX:
                waiting = True  # its sandbox is not up yet (a pod held longer: its events)
        # NodePorts: on the host's 127.0.0.1, as root's are (Port's ip: the cluster IP).
        published = {Port(ip, port, proto): node for node, (ip, port, proto)
                     in service_rules.node_ports(services).items()}  # fmt: skip
        wanted = {(uid, port) for uid in pods for port in self.routes}
        wanted |= {(f"@{address}", port) for address in self.addresses for port in published}
        for gone in set(self.listening) - wanted:
            self.listening.pop(gone).close()
        for uid, port in wanted - set(self.listening):
            try:
                if not uid.startswith("@"):
                    self.listening[(uid, port)] = self._listen(pods[uid], port)
                else:
                    host = socket.socket(socket.AF_INET6 if ":" in uid else socket.AF_INET)
                    self.listening[(uid, port)] = _Listener(
                        self, port, _bound(host, (uid[1:], published[port]))
                    )
            except OSError:  # the pod went meanwhile, or the port is taken already
                continue
        return 0.2 if waiting else None  # soon: its containers may look names up at once

    def _listen(self, pod: Path, port: Port) -> _Listener:
        """A listener inside the pod on the Service's address (its sandbox makes the socket)."""
        maker = sandbox.pod_sockets(pod)
        try:
            kind = socket.SOCK_STREAM if port.protocol == "TCP" else socket.SOCK_DGRAM
            sock = maker(socket.AF_INET, kind)
        finally:
            maker.close()
        return _Listener(self, port, _bound(sock, (port.ip, port.port)))

    def pick(self, port: Port, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        """A ready endpoint at random, one not tried yet if there is one."""
        ends = self.routes.get(port) or []
        fresh = [e for e in ends if e not in tried] or ends
        return random.choice(fresh) if fresh else None

    def close(self) -> None:
        for listener in self.listening.values():
            listener.close()
        self.listening.clear()


def _bound(sock: socket.socket, address: tuple[str, int]) -> socket.socket:
    """`sock` bound to `address`, listening if it is TCP; closed on failure."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
        if sock.type == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class _Listener:
    """A pod's listener for one Service port, served on serve's event loop."""

    def __init__(self, proxy: UserspaceProxy, port: Port, sock: socket.socket) -> None:
        self.proxy, self.port, self.sock = proxy, port, sock
        self.task = asyncio.ensure_future(self._serve())
        # Closed once the task has ended, whether or not it ever ran (a pod gone at once).
        self.task.add_done_callback(lambda _: sock.close())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        if self.port.protocol == "TCP":
            server = await asyncio.start_server(self._client, sock=self.sock)
            async with server:
                await server.serve_forever()
        else:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), sock=self.sock
            )
            try:
                await asyncio.Event().wait()  # until closed
            finally:
                transport.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tried: tuple[Endpoint, ...] = ()
        for _ in range(CONNECT_ATTEMPTS):
            end = self.proxy.pick(self.port, tried)
            if end is None:
                break
            tried += (end,)
            try:
                sock = await _connect(end, socket.SOCK_STREAM)
            except OSError:  # gone or not listening yet: another, as the ambassador does
                continue
            upstream = await asyncio.open_connection(sock=sock)
            await relay.both_ways((reader, writer), upstream)
            return
        writer.close()  # refused, as a Service without endpoints refuses

    def close(self) -> None:
        self.task.cancel()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.ensure_future(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        end = self.listener.proxy.pick(self.listener.port)
        if end is None or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, TimeoutError):
            up = await _connect(end, socket.SOCK_DGRAM)
            with up:
                await loop.sock_sendall(up, data)
                reply = await asyncio.wait_for(loop.sock_recv(up, 65535), UDP_WAIT)
                self.transport.sendto(reply, addr)


async def _connect(end: Endpoint, kind: int) -> socket.socket:
    """A socket connected to the endpoint: made inside its pod, or on the host."""
    if end.pod is not None:
        maker = sandbox.pod_sockets(end.pod)
        try:
            sock = maker(socket.AF_INET, kind)
        finally:
            maker.close()
        address = "127.0.0.1"  # the pod's own loopback: where its containers listen
    else:
        sock, address = socket.socket(socket.AF_INET, kind), end.address
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, end.port))
    except OSError:
        sock.close()
        raise
    return sock
