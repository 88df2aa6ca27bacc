"""Socket-level load balancing for Services' cluster IPs (as Cilium's socket LB does): a BPF
program on the cgroup hook `connect4` rewrites a TCP connect() to ClusterIP:port into a connect()
to one of the Service's ready endpoints, chosen at random. The connection is then made straight
to the endpoint: its packets take the path of a direct connection, with no DNAT, no conntrack
NAT entry and no second routing, which the nftables table (service_rules.py) costs every packet.
A cluster IP then costs no more than a pod IP (bench/scale.py compares the two).

It runs for every process under the cgroup2 root it is attached to: pods and the host alike.
What it does not take, the nftables table still does, as kube-proxy's: UDP (cluster DNS),
connections made before the program was there, IPv6 sockets, a Service with no ready endpoint
(nftables rejects it), and everything when BPF cannot be used here (serve says why).
As under DNAT, the client sees the cluster IP and port as its socket's peer: a second program,
on the hook `getpeername4`, shows them for a socket that is still connected to the endpoint
chosen for it (the connect program notes both by the socket's cookie, as Cilium's does). The
kernel's own tables (ss, /proc/net/tcp) show the endpoint.

The Services' map (one per serve): key (cluster IP, port, slot), value (IP, port, count).
Slot 0 of a Service port holds the number of its endpoints, slots 1..n the endpoints. The
kernel reads and writes the addresses as they are in a sockaddr_in: network byte order.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podkit.network import bpf, service_rules
from podkit.network.bpf import (
    ADD,
    ALU64,
    CALL,
    DW,
    EXIT,
    FUNC_GET_PRANDOM_U32,
    FUNC_GET_SOCKET_COOKIE,
    FUNC_MAP_LOOKUP_ELEM,
    FUNC_MAP_UPDATE_ELEM,
    JEQ,
    JMP,
    JNE,
    LDX,
    MEM,
    MOD,
    MOV,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R10,
    ST,
    STX,
    H,
    K,
    W,
    X,
    insn,
    load_map_fd,
)
from podkit.runtime.cgroups import parse_mountinfo

Obj = dict[str, Any]
KEY_SIZE = VALUE_SIZE = 8
MAX_ENTRIES = 65536
# The peers shown: socket cookie -> (cluster IP, port, 0, endpoint IP, port, 0), for as many
# connected sockets; beyond that the least recently connected show their endpoint.
PEERS = 16384
# struct bpf_sock_addr: where the hooks' context keeps what they may read and write.
USER_IP4, USER_PORT, PROTOCOL = 4, 24, 36
IPPROTO_TCP = 6
LICENSE = "Dual MIT/GPL"  # a GPL-compatible string; the programs use no GPL-only helper
# The connect program's stack: the Service key, the peer to remember, the socket's cookie.
KEY, PEER, COOKIE = -8, -24, -32


def _lookup(map_fd: int, at: int) -> list[bytes]:
    """r0 = the element of the map whose key is on the stack at `at`, or 0."""
    return [
        load_map_fd(R1, map_fd),
        insn(ALU64 | MOV | X, R2, R10),
        insn(ALU64 | ADD | K, R2, imm=at),
        insn(JMP | CALL, imm=FUNC_MAP_LOOKUP_ELEM),
    ]


def connect_program(services_fd: int, peers_fd: int) -> bytes:
    """connect4: a TCP connect() to a Service's ClusterIP:port goes to one of its endpoints,
    chosen at random, and the socket's cookie is noted with both, for getpeername. It always
    returns 1 (let the connect go on), rewritten or not."""
    body: list[bytes | _OnlyIf] = [
        insn(ALU64 | MOV | X, R6, R1),
        insn(LDX | MEM | W, R2, R6, PROTOCOL),
        _OnlyIf(JNE, R2, IPPROTO_TCP),
        insn(LDX | MEM | W, R2, R6, USER_IP4),
        insn(STX | MEM | W, R10, R2, KEY),
        insn(LDX | MEM | W, R2, R6, USER_PORT),
        insn(STX | MEM | H, R10, R2, KEY + 4),
        insn(ST | MEM | H, R10, off=KEY + 6, imm=0),
        *_lookup(services_fd, KEY),
        _OnlyIf(JEQ, R0, 0),
        insn(LDX | MEM | H, R7, R0, 6),  # the count
        _OnlyIf(JEQ, R7, 0),
        insn(JMP | CALL, imm=FUNC_GET_PRANDOM_U32),
        insn(ALU64 | MOD | X, R0, R7),
        insn(ALU64 | ADD | K, R0, imm=1),
        insn(STX | MEM | H, R10, R0, KEY + 6),
        *_lookup(services_fd, KEY),
        _OnlyIf(JEQ, R0, 0),
        # The peer to remember: the Service's address, then the endpoint's.
        insn(LDX | MEM | W, R2, R10, KEY),
        insn(STX | MEM | W, R10, R2, PEER),
        insn(LDX | MEM | H, R2, R10, KEY + 4),
        insn(STX | MEM | H, R10, R2, PEER + 4),
        insn(ST | MEM | H, R10, off=PEER + 6, imm=0),
        insn(LDX | MEM | W, R2, R0, 0),
        insn(STX | MEM | W, R6, R2, USER_IP4),
        insn(STX | MEM | W, R10, R2, PEER + 8),
        insn(LDX | MEM | H, R2, R0, 4),
        insn(STX | MEM | W, R6, R2, USER_PORT),
        insn(STX | MEM | H, R10, R2, PEER + 12),
        insn(ST | MEM | H, R10, off=PEER + 14, imm=0),
        insn(ALU64 | MOV | X, R1, R6),
        insn(JMP | CALL, imm=FUNC_GET_SOCKET_COOKIE),
        insn(STX | MEM | DW, R10, R0, COOKIE),
        load_map_fd(R1, peers_fd),
        insn(ALU64 | MOV | X, R2, R10),
        insn(ALU64 | ADD | K, R2, imm=COOKIE),
        insn(ALU64 | MOV | X, R3, R10),
        insn(ALU64 | ADD | K, R3, imm=PEER),
        insn(ALU64 | MOV | K, R4, imm=0),  # BPF_ANY: a new connect of the socket replaces it
        insn(JMP | CALL, imm=FUNC_MAP_UPDATE_ELEM),
    ]
    return _link_jumps(body)


def getpeername_program(peers_fd: int) -> bytes:
    """getpeername4: a socket whose connect() was sent to an endpoint, and is still connected
    there, shows the cluster IP and port it asked for, as under DNAT."""
    body: list[bytes | _OnlyIf] = [
        insn(ALU64 | MOV | X, R6, R1),
        insn(JMP | CALL, imm=FUNC_GET_SOCKET_COOKIE),
        insn(STX | MEM | DW, R10, R0, -8),
        *_lookup(peers_fd, -8),
        _OnlyIf(JEQ, R0, 0),
        insn(LDX | MEM | W, R2, R0, 8),
        insn(LDX | MEM | W, R3, R6, USER_IP4),
        _OnlyIf(JNE, R2, src=R3),  # connected elsewhere since (after a failed connect)
        insn(LDX | MEM | H, R2, R0, 12),
        insn(LDX | MEM | W, R3, R6, USER_PORT),
        _OnlyIf(JNE, R2, src=R3),
        insn(LDX | MEM | W, R2, R0, 0),
        insn(STX | MEM | W, R6, R2, USER_IP4),
        insn(LDX | MEM | H, R2, R0, 4),
        insn(STX | MEM | W, R6, R2, USER_PORT),
    ]
    return _link_jumps(body)


@dataclass(frozen=True)
class _OnlyIf:
    """A jump to the program's end (nothing rewritten) if `dst <op> imm` (or `<op> src`)."""

    op: int
    dst: int
    imm: int = 0
    src: int | None = None


def _link_jumps(body: list[bytes | _OnlyIf]) -> bytes:
    """Assemble `body`, each _OnlyIf a jump to its end, then `return 1`."""
    slots = sum(1 if isinstance(i, _OnlyIf) else len(i) // 8 for i in body)
    out, at = b"", 0
    for i in body:
        if isinstance(i, _OnlyIf):
            at += 1
            if i.src is None:
                out += insn(JMP | i.op | K, i.dst, off=slots - at, imm=i.imm)
            else:
                out += insn(JMP | i.op | X, i.dst, i.src, off=slots - at)
        else:
            at += len(i) // 8
            out += i
    return out + insn(ALU64 | MOV | K, R0, imm=1) + insn(JMP | EXIT)


def _port16(port: int) -> bytes:
    return struct.pack("!H", port)


def key(ip: str, port: int, slot: int) -> bytes:
    return socket.inet_aton(ip) + _port16(port) + struct.pack("=H", slot)


def value(ip: str, port: int, count: int = 0) -> bytes:
    return socket.inet_aton(ip) + _port16(port) + struct.pack("=H", count)


def entries(services: list[Obj], slices: list[Obj]) -> dict[bytes, bytes]:
    """The map's content for these Services: their IPv4 cluster IPs' TCP ports with ready
    endpoints (one with none is left to nftables, which rejects it, as kube-proxy does)."""
    out: dict[bytes, bytes] = {}
    for ip, number, protocol, ends in service_rules.cluster_ports(services, slices):
        if protocol != "TCP" or ":" in ip or not ends:
            continue
        ends = ends[:0xFFFF]  # what a slot number holds
        out[key(ip, number, 0)] = value("0.0.0.0", 0, len(ends))
        for slot, (end_ip, end_port) in enumerate(ends, 1):
            out[key(ip, number, slot)] = value(end_ip, end_port)
    return out


def changes(old: dict[bytes, bytes], new: dict[bytes, bytes]) -> list[tuple[bytes, bytes | None]]:
    """The writes (key, value) and deletions (key, None) that turn `old` into `new`, in an order
    where a connect() between two of them finds a usable endpoint or no Service: endpoints
    first, then the counts that make them chosen, then endpoints no count reaches any more."""

    def is_count(k: bytes) -> bool:
        return k[6:] == b"\0\0"

    writes = [(k, v) for k, v in new.items() if old.get(k) != v]
    gone = [(k, None) for k in old if k not in new]
    return [
        *[(k, v) for k, v in writes if not is_count(k)],
        *[(k, v) for k, v in gone if is_count(k)],
        *[(k, v) for k, v in writes if is_count(k)],
        *[(k, v) for k, v in gone if not is_count(k)],
    ]


def cgroup2_root(mountinfo: str) -> str | None:
    """Where the cgroup2 hierarchy is mounted (its root as this process sees it), or None."""
    return next((m.mount_point for m in parse_mountinfo(mountinfo) if m.fstype == "cgroup2"), None)


class SocketLb:
    """The programs linked to the cgroup2 root, and the Services' map kept equal to `entries`."""

    def __init__(self, name: str) -> None:
        why = bpf.supported()
        if why is not None:
            raise bpf.BpfError(errno.EPERM, why)
        root = cgroup2_root(Path("/proc/self/mountinfo").read_text())
        if root is None:
            raise bpf.BpfError(errno.ENOENT, "no cgroup2 hierarchy is mounted")
        self.links: list[int] = []
        self.map = bpf.HashMap.create(name, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES)
        try:
            peers = bpf.HashMap.create(name + "_peer", 8, 16, PEERS, lru=True)
            try:
                hooks = [
                    (bpf.CGROUP_INET4_CONNECT, connect_program(self.map.fd, peers.fd)),
                    (bpf.CGROUP_INET4_GETPEERNAME, getpeername_program(peers.fd)),
                ]
                for hook, code in hooks:
                    prog = bpf.load(bpf.PROG_TYPE_CGROUP_SOCK_ADDR, hook, code, name, LICENSE)
                    try:
                        self.links.append(bpf.link_cgroup(prog, root, hook))
                    finally:
                        os.close(prog)  # the link holds the program, the program its maps
            finally:
                peers.close()
        except OSError:
            self.close()
            raise
        self.content: dict[bytes, bytes] = {}

    def sync(self, wanted: dict[bytes, bytes]) -> None:
        for k, v in changes(self.content, wanted):
            if v is None:
                self.map.delete(k)
                del self.content[k]
            else:
                self.map.update(k, v)
                self.content[k] = v

    def close(self) -> None:
        for link in self.links:
            os.close(link)
        self.links = []
        self.map.close()
