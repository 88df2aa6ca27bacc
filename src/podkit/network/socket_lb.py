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
Unlike DNAT, the client sees the endpoint as its socket's peer (getpeername), as under Cilium
without its getpeername hook.

The map (one per serve): key (cluster IP, port, slot), value (IP, port, count). Slot 0 of a
Service port holds the number of its endpoints, slots 1..n the endpoints. The kernel reads and
writes the addresses as they are in a sockaddr_in: network byte order.
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
    EXIT,
    FUNC_GET_PRANDOM_U32,
    FUNC_MAP_LOOKUP_ELEM,
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
# struct bpf_sock_addr: where connect4's context keeps what it may read and write.
USER_IP4, USER_PORT, PROTOCOL = 4, 24, 36
IPPROTO_TCP = 6
LICENSE = "Dual MIT/GPL"  # a GPL-compatible string; the program uses no GPL-only helper


def program(map_fd: int) -> bytes:
    """The connect4 program. It always returns 1 (let the connect go on), rewritten or not."""
    key = -KEY_SIZE  # the key is built on the stack: ip at -8, port at -4, slot at -2
    lookup = [
        load_map_fd(R1, map_fd),
        insn(ALU64 | MOV | X, R2, R10),
        insn(ALU64 | ADD | K, R2, imm=key),
        insn(JMP | CALL, imm=FUNC_MAP_LOOKUP_ELEM),
    ]
    body: list[bytes | _OnlyIf] = [
        insn(ALU64 | MOV | X, R6, R1),
        insn(LDX | MEM | W, R2, R6, PROTOCOL),
        _OnlyIf(JNE, R2, IPPROTO_TCP),
        insn(LDX | MEM | W, R2, R6, USER_IP4),
        insn(STX | MEM | W, R10, R2, key),
        insn(LDX | MEM | W, R2, R6, USER_PORT),
        insn(STX | MEM | H, R10, R2, key + 4),
        insn(ST | MEM | H, R10, off=key + 6, imm=0),
        *lookup,
        _OnlyIf(JEQ, R0, 0),
        insn(LDX | MEM | H, R7, R0, 6),  # the count
        _OnlyIf(JEQ, R7, 0),
        insn(JMP | CALL, imm=FUNC_GET_PRANDOM_U32),
        insn(ALU64 | MOD | X, R0, R7),
        insn(ALU64 | ADD | K, R0, imm=1),
        insn(STX | MEM | H, R10, R0, key + 6),
        *lookup,
        _OnlyIf(JEQ, R0, 0),
        insn(LDX | MEM | W, R2, R0, 0),
        insn(STX | MEM | W, R6, R2, USER_IP4),
        insn(LDX | MEM | H, R2, R0, 4),
        insn(STX | MEM | W, R6, R2, USER_PORT),
    ]
    return _link_jumps(body, [insn(ALU64 | MOV | K, R0, imm=1), insn(JMP | EXIT)])


@dataclass(frozen=True)
class _OnlyIf:
    """A jump to the program's end (no rewrite) if `dst <op> imm`."""

    op: int
    dst: int
    imm: int


def _link_jumps(body: list[bytes | _OnlyIf], end: list[bytes]) -> bytes:
    """Assemble `body` then `end`, each _OnlyIf in `body` a jump to `end`."""
    slots = sum(1 if isinstance(i, _OnlyIf) else len(i) // 8 for i in body)
    out, at = b"", 0
    for i in body:
        if isinstance(i, _OnlyIf):
            at += 1
            out += insn(JMP | i.op | K, i.dst, off=slots - at, imm=i.imm)
        else:
            at += len(i) // 8
            out += i
    return out + b"".join(end)


def _port16(port: int) -> bytes:
    return struct.pack("!H", port)


def key(ip: str, port: int, slot: int) -> bytes:
    return socket.inet_aton(ip) + _port16(port) + struct.pack("=H", slot)


def value(ip: str, port: int, count: int = 0) -> bytes:
    return socket.inet_aton(ip) + _port16(port) + struct.pack("=H", count)


def entries(services: list[Obj], slices: list[Obj]) -> dict[bytes, bytes]:
    """The map's content for these Services: their ClusterIP TCP ports with ready endpoints."""
    by_ns: dict[str, list[Obj]] = {}
    for s in slices:
        by_ns.setdefault(s["metadata"].get("namespace", ""), []).append(s)
    out: dict[bytes, bytes] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName" or ":" in ip:
            continue
        found = service_rules.backends(svc, by_ns.get(svc["metadata"].get("namespace", ""), []))
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            ends = found.get((port.get("name", ""), "TCP"), [])[:0xFFFF]
            if not ends:
                continue  # nftables rejects it, as kube-proxy does
            number = int(port["port"])
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
    """The program attached to the cgroup2 root, and its map kept equal to `entries`."""

    def __init__(self, name: str) -> None:
        root = cgroup2_root(Path("/proc/self/mountinfo").read_text())
        if root is None:
            raise bpf.BpfError(errno.ENOENT, "no cgroup2 hierarchy is mounted")
        self.map = bpf.HashMap.create(name, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES)
        try:
            prog = bpf.load(bpf.PROG_TYPE_CGROUP_SOCK_ADDR, bpf.CGROUP_INET4_CONNECT,
                            program(self.map.fd), name, LICENSE)  # fmt: skip
            try:
                self.link = bpf.link_cgroup(prog, root, bpf.CGROUP_INET4_CONNECT)
            finally:
                os.close(prog)  # the link holds the program
        except OSError:
            self.map.close()
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
        os.close(self.link)
        self.map.close()
