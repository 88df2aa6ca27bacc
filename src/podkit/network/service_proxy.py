"""The Service proxy of `podkit serve` (kube-proxy's part): it watches Services and
EndpointSlices, keeps the nftables table of network/service_rules.py in step with them (one
atomic `nft -f` per change, none when nothing changed) and, unless turned off, the socket load
balancer's map (network/socket_lb.py: TCP connects go straight to an endpoint, before the
table sees a packet), and publishes each NodePort on
127.0.0.1 (or the addresses serve is given), forwarding its connections to the Service's
cluster IP, where the table takes them.
As root only: without root there are no pod IPs to route to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from podkit.api.kinds import ENDPOINT_SLICE, SERVICE
from podkit.api.rest import Rest
from podkit.controllers.loop import Key, Singleton
from podkit.network import relay, service_rules, socket_lb
from podkit.network.socket_lb import SocketLb
from podkit.runtime import statedir

NODE_PORT_ADDRESSES = ["127.0.0.1"]  # as podkit publishes ports: never all interfaces unasked


def table_name(state_dir: Path) -> str:
    """One table per serve's state directory: two serves never share rules."""
    return "podkit_svc_" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def why_not() -> str | None:
    """Why cluster IPs cannot be routed here, or None."""
    if os.geteuid() != 0:
        return "Services' cluster IPs need root (pods have no IPs of their own without it)"
    if shutil.which("nft") is None:
        return "Services' cluster IPs need nftables (apt-get install nftables)"
    return None


OWNERS = Path("/run/podkit/service-tables")  # table name -> the serve that writes it
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def remove(state_dir: Path) -> None:
    if why_not() is None:
        _delete(table_name(state_dir))


def _delete(table: str) -> None:
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True, check=False)
    (OWNERS / table).unlink(missing_ok=True)


def filter_bridged_traffic() -> str | None:
    """Have bridged traffic pass the host's netfilter hooks (br_netfilter's
    bridge-nf-call-iptables, which kubeadm requires for kube-proxy). Without it, the reply of
    a pod to another pod on its bridge that reached it through a cluster IP goes straight over
    the bridge, never un-DNATed, and the client drops it. Returns why it could not, or None."""
    if not BRIDGE_NF.exists() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    try:
        if BRIDGE_NF.read_text().strip() != "1":
            BRIDGE_NF.write_text("1\n")
    except OSError as exc:
        return (
            "pods cannot reach Services whose endpoints share their bridge: "
            f"{BRIDGE_NF}: {exc.strerror} (load the br_netfilter module)"
        )
    return None


def claim(state_dir: Path) -> None:
    """Note this serve as its table's writer, and delete the tables of serves that died
    without removing theirs (a kill -9): their rules would catch the same cluster IPs. And
    have bridged traffic filtered, which the rules need."""
    why = filter_bridged_traffic()
    if why is not None:
        print(f"podkit serve: {why}", file=sys.stderr)
    OWNERS.mkdir(parents=True, exist_ok=True)
    mine = table_name(state_dir)
    for owned in OWNERS.iterdir():
        with contextlib.suppress(OSError):  # another serve's, deleted meanwhile
            if owned.name != mine and not statedir.owner_alive(owned.read_text()):
                _delete(owned.name)
    (OWNERS / mine).write_text(statedir.owner_record())


class ServiceProxy(Singleton):
    name = "service-proxy"
    watches = (SERVICE, ENDPOINT_SLICE)

    def __init__(
        self,
        rest: Rest,
        state_dir: Path,
        node_port_addresses: list[str] = NODE_PORT_ADDRESSES,
        socket_lb: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        super().__init__(rest)
        self.sockets: SocketLb | None = None
        if socket_lb:
            try:
                self.sockets = SocketLb("podkit_lb")
            except OSError as exc:  # an old kernel, no cgroup2, no BPF here: nftables alone
                say(f"podkit serve: Services' cluster IPs through NAT only: {exc.strerror or exc}")
        self.addresses = node_port_addresses
        self.table = table_name(state_dir)
        self.written = ""
        self.listeners: dict[int, asyncio.Server] = {}
        self.targets: dict[int, tuple[str, int, str]] = {}

    def sync(self, key: Key) -> float | None:
        services, _ = self.rest.list_objects(SERVICE, None)
        slices, _ = self.rest.list_objects(ENDPOINT_SLICE, None)
        text = service_rules.ruleset(self.table, services, slices)
        if text != self.written:
            done = subprocess.run(
                ["nft", "-f", "-"],
                input=f"add table ip {self.table}\ndelete table ip {self.table}\n{text}",
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"podkit serve: nft refused the Service rules: {done.stderr.strip()}",
                      file=sys.stderr)  # fmt: skip
                return 5.0  # a look again: a change may mend it
            self.written = text
        if self.sockets is not None:
            self.sockets.sync(socket_lb.entries(services, slices))
        self._publish(service_rules.node_ports(services))
        return None

    # --- node ports ----------------------------------------------------------------------

    def _publish(self, wanted: dict[int, tuple[str, int, str]]) -> None:
        self.targets = wanted
        for port in list(self.listeners):
            if port not in wanted:
                self.listeners.pop(port).close()
        for port in wanted:
            if port not in self.listeners:
                asyncio.ensure_future(self._listen(port))

    async def _listen(self, port: int) -> None:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            target = self.targets.get(port)
            if target is None:
                writer.close()
                return
            try:
                upstream = await asyncio.open_connection(target[0], target[1])
            except OSError:
                writer.close()
                return
            await relay.both_ways((reader, writer), upstream)

        with contextlib.suppress(OSError):  # taken by another program: the port stays unset
            self.listeners[port] = await asyncio.start_server(forward, self.addresses, port)

    def close(self) -> None:
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
