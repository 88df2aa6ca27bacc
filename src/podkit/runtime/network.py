"""Pod IPs on a host bridge (as root): the one-machine version of a CNI bridge network.

    host:  podkit0 (10.88.0.1/16) --- pk0a580002 <veth> eth0 (10.88.0.2/16, default via .1) :pod A
                                  --- pk0a580003 <veth> eth0 (10.88.0.3/16, default via .1) :pod B
           nft table ip podkit_podkit0: traffic from the subnet leaving by any other interface
           is masqueraded, so a pod reaches whatever the host reaches.

The defaults are podman's CNI `podman` network (podman0... here podkit0, 10.88.0.0/16) so users
recognise them; PODKIT_BRIDGE / PODKIT_SUBNET change them.

IPAM is a lease table (address -> pod uid, owning podkit, host veth) in
<state>/network/<bridge>/leases.json, read and written only under an exclusive flock on the
lock file beside it, so podkit processes running at once never hand out the same address. A
podkit killed with SIGKILL cannot release its leases; the next allocation reclaims leases whose
owner is dead (its pod's netns, and with it the veth, died with it). The pure part (which
address is free, which leases are dead) is apart from the file and `ip` I/O.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from podkit.runtime import statedir

DEFAULT_BRIDGE = "podkit0"
DEFAULT_SUBNET = "10.88.0.0/16"
_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
_BRIDGE_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
# RFC 1918 only: pods must never take addresses that mean something beyond this machine.
_PRIVATE = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
# Tools live in sbin, which a non-login root shell may not have on PATH.
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])


class NetworkError(RuntimeError):
    """Setting up the pod network failed; the message says which command and why."""


class AddressPoolExhausted(NetworkError):
    pass


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class NetworkConfig:
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET

    def __post_init__(self) -> None:
        if not _BRIDGE_NAME.fullmatch(self.bridge) or self.bridge in (".", ".."):
            raise ValueError(
                f"PODKIT_BRIDGE={self.bridge!r}: a Linux interface name is 1-15 characters "
                "from a-z A-Z 0-9 _ . -"
            )
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise ValueError(
                f"PODKIT_SUBNET={self.subnet!r}: not an IPv4 network such as 10.88.0.0/16 ({exc})"
            ) from None
        if not any(net.subnet_of(p) for p in _PRIVATE):
            raise ValueError(
                f"PODKIT_SUBNET={self.subnet!r}: must be a private range inside 10.0.0.0/8, "
                "172.16.0.0/12 or 192.168.0.0/16"
            )
        if net.prefixlen > 30:
            raise ValueError(
                f"PODKIT_SUBNET={self.subnet!r}: prefix /{net.prefixlen} leaves no address for "
                "a pod beside the gateway; use /30 or shorter"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> NetworkConfig:
        env = os.environ if environ is None else environ
        return cls(
            bridge=env.get("PODKIT_BRIDGE") or DEFAULT_BRIDGE,
            subnet=env.get("PODKIT_SUBNET") or DEFAULT_SUBNET,
        )

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefix(self) -> int:
        return self.network.prefixlen

    @property
    def gateway(self) -> str:
        """The bridge's own address: the pods' default route and how they reach the host."""
        return str(self.network.network_address + 1)

    @property
    def nft_table(self) -> str:
        return f"podkit_{self.bridge}"


@dataclass(frozen=True)
class PodNetwork:
    ip: str
    prefix: int
    gateway: str
    veth_host: str
    pod_uid: str = ""  # so a late detach never releases an address handed to another pod


def available() -> str | None:
    """None if pod IPs on a bridge can work here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "pod IPs on a bridge need root (without it pods get loopback and published ports)"
    for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux")):
        if not _tool(tool):
            return f"the `{tool}` command is missing (apt-get install {package})"
    if not os.access(_IP_FORWARD, os.W_OK):
        return f"{_IP_FORWARD} is not writable (is /proc/sys mounted read-only here?)"
    return None


# ---------------------------------------------------------------------------------------------
# IPAM, pure: a lease table is {address: Lease}


@dataclass(frozen=True)
class Lease:
    uid: str
    owner: str  # statedir.owner_record() of the podkit that holds it
    veth: str


Leases = dict[str, Lease]


def veth_name(ip: str) -> str:
    """Host-side veth name: `pk` + the address in hex (10 chars). Unique while the lease is
    held, and a leftover of a dead lease is recognisable by the same name."""
    return f"pk{int(ipaddress.IPv4Address(ip)):08x}"


def bridge_mac(gateway: str) -> str:
    """The bridge's own MAC: fixed, locally administered, from its gateway address (as Docker
    gives docker0 02:42:<ip>). Left unset, a Linux bridge takes the lowest MAC among its ports,
    so it changes whenever that pod's veth comes or goes; pods keep the old one cached for their
    gateway and their packets to the host and beyond are lost until they ARP again (up to a
    minute: clients of a Service saw requests hang in a rolling update)."""
    return "02:70:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(gateway).packed)


def free_address(
    net: ipaddress.IPv4Network, taken: Iterable[str], after: str | None = None
) -> str | None:
    """The first address after `after` (round robin, as CNI's host-local IPAM hands them out;
    from the lowest without it) that is not the network, the gateway (.1), the broadcast or
    taken. An address just freed is thus not handed out again at once: the host's neighbour
    cache may still give it the old pod's MAC, a black hole for the new pod's first packets."""
    used = set(taken)
    first, last = int(net.network_address) + 2, int(net.broadcast_address) - 1
    start = first
    if after is not None and first <= int(ipaddress.IPv4Address(after)) < last:
        start = int(ipaddress.IPv4Address(after)) + 1
    for n in [*range(start, last + 1), *range(first, start)]:
        candidate = str(ipaddress.IPv4Address(n))
        if candidate not in used:
            return candidate
    return None


def split_dead(leases: Leases, alive: Callable[[str], bool]) -> tuple[Leases, Leases]:
    """(leases whose owner runs, leases whose owner is gone)."""
    live: Leases = {}
    dead: Leases = {}
    for ip, lease in leases.items():
        (live if alive(lease.owner) else dead)[ip] = lease
    return live, dead


def lease_for(
    leases: Leases, net: ipaddress.IPv4Network, uid: str, owner: str, after: str | None = None
) -> tuple[Leases, str]:
    """The table with a lease for `uid` (its existing one, else the next free address after
    `after`, the last one handed out)."""
    for ip, lease in leases.items():
        if lease.uid == uid and lease.owner == owner:
            return leases, ip
    free = free_address(net, leases, after)
    if free is None:
        raise AddressPoolExhausted(
            f"no free pod address left in {net} ({len(leases)} leases held); "
            "set PODKIT_SUBNET to a larger private network"
        )
    return {**leases, free: Lease(uid, owner, veth_name(free))}, free


def without(leases: Leases, ip: str, uid: str = "") -> Leases:
    """The table without `ip`'s lease (only if it is `uid`'s, when uid is given)."""
    lease = leases.get(ip)
    if lease is None or (uid and lease.uid != uid):
        return leases
    return {k: v for k, v in leases.items() if k != ip}


# ---------------------------------------------------------------------------------------------
# IPAM, the file store


# The bridge is host-wide, so are its leases: every podkit on this host keeps them here,
# whatever its --state-dir (runtime/ passes this; tests pass directories of their own).
HOST_DIR = Path("/run/podkit")


def _net_dir(cfg: NetworkConfig, state_dir: Path) -> Path:
    return Path(state_dir) / "network" / cfg.bridge


@contextlib.contextmanager
def _locked(cfg: NetworkConfig, state_dir: Path) -> Iterator[Path]:
    """Exclusive lock shared by every podkit using this state dir and bridge."""
    d = _net_dir(cfg, state_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield d


def _load(path: Path) -> Leases:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:  # unreadable table: start afresh rather than refuse every pod
        return {}
    return {ip: Lease(**entry) for ip, entry in doc.get("leases", {}).items()}


def _save(path: Path, leases: Leases) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"leases": {ip: asdict(le) for ip, le in leases.items()}}, indent=1))
    os.replace(tmp, path)  # readers (without the lock, e.g. `cat`) never see half a file


@contextlib.contextmanager
def _lease_table(cfg: NetworkConfig, state_dir: Path) -> Iterator[list[Leases]]:
    """Read-modify-write the lease table under the lock: the caller replaces box[0]."""
    with _locked(cfg, state_dir) as d:
        path = d / "leases.json"
        box = [_load(path)]
        before = box[0]
        yield box
        if box[0] != before:
            _save(path, box[0])


def allocate(cfg: NetworkConfig, pod_uid: str, state_dir: Path) -> str:
    """Lease the lowest free address to `pod_uid` for this process; reclaims dead owners'."""
    last = _net_dir(cfg, state_dir) / "last"  # the address handed out last
    with _lease_table(cfg, state_dir) as box:
        live, _ = split_dead(box[0], statedir.owner_alive)
        try:
            after: str | None = last.read_text().strip()
            ipaddress.IPv4Address(after)
        except (OSError, ValueError):
            after = None
        box[0], ip = lease_for(live, cfg.network, pod_uid, statedir.owner_record(), after)
        last.write_text(ip)
    return ip


def release(cfg: NetworkConfig, ip: str, state_dir: Path, pod_uid: str = "") -> None:
    with _lease_table(cfg, state_dir) as box:
        box[0] = without(box[0], ip, pod_uid)


def leases(cfg: NetworkConfig, state_dir: Path) -> Leases:
    with _lease_table(cfg, state_dir) as box:
        return dict(box[0])


# ---------------------------------------------------------------------------------------------
# The bridge, NAT and veths


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_PATH)


def _run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    exe = _tool(args[0])
    if exe is None:
        raise NetworkError(f"the `{args[0]}` command is missing")
    p = subprocess.run([exe, *args[1:]], input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        what = " ".join(args) + (f" <<< {stdin.strip()!r}" if stdin else "")
        raise NetworkError(f"`{what}` failed: {p.stderr.strip() or p.stdout.strip()}")
    return p


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _delete_link(name: str) -> None:
    if _link_exists(name):
        _run("ip", "link", "del", name, check=False)  # it may vanish meanwhile: fine


def _check_overlap(cfg: NetworkConfig) -> None:
    """Refuse a subnet the host already routes elsewhere: pods would hijack those addresses."""
    out = _run("ip", "-j", "-4", "route", "show", "table", "all").stdout
    for route in json.loads(out or "[]"):
        dst, dev = route.get("dst", "default"), route.get("dev")
        if dst == "default" or dev == cfg.bridge or route.get("type") not in (None, "unicast"):
            continue
        try:
            other = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if other.overlaps(cfg.network):
            raise NetworkError(
                f"PODKIT_SUBNET={cfg.subnet} overlaps {dst} on {dev} of this host; "
                "set PODKIT_SUBNET to a private range the host does not use"
            )


def _ensure_nat(cfg: NetworkConfig) -> str | None:
    if _tool("nft"):
        # One table per bridge, rewritten atomically in one transaction: idempotent, and
        # removing podkit's NAT is deleting its table (no one else's rules are touched).
        table = f"ip {cfg.nft_table}"
        wanted = (
            f"table {table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {cfg.subnet} oifname != "{cfg.bridge}" masquerade\n'
            "  }\n}\n"
        )
        # A commit to the nat hook costs ~17 ms (the kernel waits out RCU); reading it, ~2 ms.
        # nft lists a table in this same syntax, so equal words mean the same rules.
        listed = _run("nft", "list", "table", *table.split(), check=False)
        if listed.returncode != 0 or listed.stdout.split() != wanted.split():
            _run("nft", "-f", "-", stdin=f"add table {table}\nflush table {table}\n{wanted}")
        return None
    if _tool("iptables"):
        rule = ["POSTROUTING", "-s", cfg.subnet, "!", "-o", cfg.bridge, "-j", "MASQUERADE"]
        if _run("iptables", "-t", "nat", "-C", *rule, check=False).returncode != 0:
            p = _run("iptables", "-t", "nat", "-A", *rule, check=False)
            if p.returncode != 0:
                return f"outbound NAT not set up: iptables failed: {p.stderr.strip()}"
        return None
    return (
        "outbound NAT not set up: neither `nft` nor `iptables` is installed "
        "(apt-get install nftables); pods reach each other and the host, not beyond"
    )


def _enable_ip_forward() -> None:
    """Outbound traffic from pods is routed by the host. (One write at offset 0: the kernel
    ignores sysctl writes at any other offset, so no read-then-write on one file.)"""
    if Path(_IP_FORWARD).read_text().strip() != "1":
        Path(_IP_FORWARD).write_text("1\n")


def ensure_bridge(cfg: NetworkConfig, state_dir: Path | None = None) -> str | None:
    """Create the bridge with the gateway address, enable forwarding and NAT; idempotent.
    Returns None, or why outbound NAT was skipped. Raises NetworkError."""
    with _locked(cfg, state_dir or statedir.default_state_dir()):
        _check_overlap(cfg)
        if not _link_exists(cfg.bridge):
            _run("ip", "link", "add", cfg.bridge, "type", "bridge")
        elif not os.path.isdir(f"/sys/class/net/{cfg.bridge}/bridge"):
            raise NetworkError(
                f"PODKIT_BRIDGE={cfg.bridge}: an interface of that name exists and is not a bridge"
            )
        _run(
            "ip",
            "-batch",
            "-",
            stdin=(
                f"addr replace {cfg.gateway}/{cfg.prefix} dev {cfg.bridge}\n"
                f"link set {cfg.bridge} up\n"
            ),
        )
        mac = bridge_mac(cfg.gateway)
        # A MAC set by hand stays whatever ports come and go. Set it only when it differs:
        # setting it at all makes the kernel forget the host's neighbours on the bridge.
        if Path(f"/sys/class/net/{cfg.bridge}/address").read_text().strip() != mac:
            _run("ip", "link", "set", cfg.bridge, "address", mac)
        _enable_ip_forward()
        return _ensure_nat(cfg)


def remove_bridge(cfg: NetworkConfig) -> None:
    """Delete the bridge and podkit's NAT for it (ip_forward is left as it is)."""
    _delete_link(cfg.bridge)
    if _tool("nft"):
        _run("nft", "delete", "table", "ip", cfg.nft_table, check=False)
    if _tool("iptables"):
        rule = ["POSTROUTING", "-s", cfg.subnet, "!", "-o", cfg.bridge, "-j", "MASQUERADE"]
        while _run("iptables", "-t", "nat", "-D", *rule, check=False).returncode == 0:
            pass


def attach(cfg: NetworkConfig, sandbox_pid: int, pod_uid: str, state_dir: Path) -> PodNetwork:
    """Give the pod whose netns `sandbox_pid` holds an eth0 with its own address on the bridge.
    ensure_bridge must have run. Raises NetworkError, leaving nothing behind."""
    ip = allocate(cfg, pod_uid, state_dir)
    net = PodNetwork(ip, cfg.prefix, cfg.gateway, veth_name(ip), pod_uid)
    try:
        _delete_link(net.veth_host)  # left by a dead owner whose lease was just reclaimed
        # The peer is born inside the pod as eth0: no name clash on the host, no rename.
        _run(
            "ip",
            "-batch",
            "-",
            stdin=(
                f"link add {net.veth_host} master {cfg.bridge} type veth "
                f"peer name eth0 netns {sandbox_pid}\n"
                f"link set {net.veth_host} up\n"
                # A pod may reach itself through a Service's cluster IP: the bridge sends
                # that frame back out the port it came in by (the kubelet's hairpin-veth).
                f"link set {net.veth_host} type bridge_slave hairpin on\n"
            ),
        )
        # The pod's netns has no name for `ip -n`; enter it by the sandbox's /proc entry.
        _run(
            "nsenter",
            f"--net=/proc/{sandbox_pid}/ns/net",
            "ip",
            "-batch",
            "-",
            stdin=(
                f"addr add {ip}/{cfg.prefix} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {cfg.gateway} dev eth0\n"
            ),
        )
    except BaseException:
        _delete_link(net.veth_host)
        release(cfg, ip, state_dir, pod_uid)
        raise
    return net


def detach(cfg: NetworkConfig, net: PodNetwork, state_dir: Path) -> None:
    """Delete the host veth (its pod end goes with it) and release the address. Fine if the
    pod's netns, and so the veth, is already gone."""
    _delete_link(net.veth_host)
    release(cfg, net.ip, state_dir, net.pod_uid)


def clean_stale(cfg: NetworkConfig, state_dir: Path) -> list[str]:
    """Release leases of podkits that died and delete their leftover veths; returns their IPs."""
    with _lease_table(cfg, state_dir) as box:
        box[0], dead = split_dead(box[0], statedir.owner_alive)
        for lease in dead.values():
            _delete_link(lease.veth)
    return sorted(dead, key=ipaddress.IPv4Address)
