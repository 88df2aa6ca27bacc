"""The socket load balancer (network/socket_lb.py) with the real kernel: its BPF programs loaded
and attached to the cgroup2 root, connect()s to a "cluster IP" on 127.99.0.0/16 (no route or
listener needed: the rewrite happens before any packet) made by this test process, as any
process on the host or in a pod makes them. And its pure parts: the map's content for Services
and EndpointSlices, and the order of writes."""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit.network import bpf, service_rules, socket_lb
from podkit_harness import free_port, wait_for
from socket_peers import kernel_peer

needs_bpf = pytest.mark.skipif(bpf.supported() is not None, reason=str(bpf.supported()))
CLUSTER_IP = "127.99.0.1"  # nothing listens there: a connect() not rewritten is refused


def svc(name: str, ip: str, *ports: tuple[str, int, str]) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": ip,
                 "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]},
    }  # fmt: skip


def endpoint_slice(service: str, port: tuple[str, int, str], *ips: tuple[str, bool]) -> dict:  # type: ignore[type-arg]
    name, number, proto = port
    return {
        "metadata": {"namespace": "ns", "labels": {service_rules.SERVICE_NAME: service}},
        "ports": [{"name": name, "port": number, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in ips],
    }


def test_the_map_holds_each_tcp_cluster_port_with_its_ready_endpoints() -> None:
    services = [
        svc("web", "10.96.0.5", ("http", 80, "TCP"), ("dns", 53, "UDP")),
        svc("empty", "10.96.0.6", ("http", 80, "TCP")),
        svc("headless", "None", ("http", 80, "TCP")),
    ]
    slices = [
        endpoint_slice(
            "web",
            ("http", 8080, "TCP"),
            ("10.0.0.2", True),
            ("10.0.0.3", False),
            ("10.0.0.4", True),
        ),  # fmt: skip
        endpoint_slice("web", ("dns", 5353, "UDP"), ("10.0.0.2", True)),
        endpoint_slice("headless", ("http", 8080, "TCP"), ("10.0.0.9", True)),
    ]
    got = socket_lb.entries(services, slices)
    assert got == {
        socket_lb.key("10.96.0.5", 80, 0): socket_lb.value("0.0.0.0", 0, 2),
        socket_lb.key("10.96.0.5", 80, 1): socket_lb.value("10.0.0.2", 8080),
        socket_lb.key("10.96.0.5", 80, 2): socket_lb.value("10.0.0.4", 8080),
    }  # UDP, no endpoints (nftables rejects) and headless: not here
    assert socket_lb.key("10.96.0.5", 80, 1) == bytes([10, 96, 0, 5, 0, 80]) + (1).to_bytes(
        2, sys.byteorder
    )  # as a sockaddr_in has them: network byte order


def test_changes_never_let_a_count_reach_a_missing_endpoint() -> None:
    def state(ip: str, *ends: str) -> dict[bytes, bytes]:
        out = {socket_lb.key(ip, 80, 0): socket_lb.value("0.0.0.0", 0, len(ends))}
        for slot, end in enumerate(ends, 1):
            out[socket_lb.key(ip, 80, slot)] = socket_lb.value(end, 8080)
        return out

    def replay(old: dict[bytes, bytes], new: dict[bytes, bytes]) -> None:
        """Apply the changes one by one; after each, every count's slots must exist."""
        now = dict(old)
        for k, v in socket_lb.changes(old, new):
            if v is None:
                del now[k]
            else:
                now[k] = v
            for head, count in now.items():
                if head[6:] == b"\0\0":
                    n = int.from_bytes(count[6:], sys.byteorder)
                    for slot in range(1, n + 1):
                        assert head[:6] + slot.to_bytes(2, sys.byteorder) in now
        assert now == new

    a = state("10.96.0.5", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    replay({}, a)  # created
    replay(a, state("10.96.0.5", "10.0.0.3"))  # shrunk
    replay(state("10.96.0.5", "10.0.0.3"), a)  # grown
    replay(a, {**state("10.96.0.7", "10.0.0.9")})  # one gone, another come
    assert socket_lb.changes(a, a) == []


def listeners(n: int) -> list[socket.socket]:
    """n servers on 127.0.0.2, .3 ... all on one port, as a Service's endpoints are."""
    out: list[socket.socket] = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i}", out[0].getsockname()[1] if out else 0))
        s.listen(512)
        s.setblocking(False)
        out.append(s)
    return out


@pytest.fixture
def balancer() -> Iterator[socket_lb.SocketLb]:
    lb = socket_lb.SocketLb("podkit_lb_test")
    try:
        yield lb
    finally:
        lb.close()


def point(lb: socket_lb.SocketLb, port: int, ends: list[socket.socket]) -> None:
    services = [svc("web", CLUSTER_IP, ("http", port, "TCP"))]
    addresses = [(e.getsockname()[0], True) for e in ends]
    slices = [endpoint_slice("web", ("http", ends[0].getsockname()[1] if ends else 1, "TCP"),
                             *addresses)] if ends else []  # fmt: skip
    lb.sync(socket_lb.entries(services, slices))


@needs_bpf
def test_a_connect_to_a_cluster_ip_goes_to_a_ready_endpoint_chosen_at_random(
    balancer: socket_lb.SocketLb,
) -> None:
    port = free_port()
    ends = listeners(3)
    number = ends[0].getsockname()[1]
    point(balancer, port, ends)
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        with socket.create_connection((CLUSTER_IP, port), timeout=2) as c:
            assert c.getpeername() == (CLUSTER_IP, port)  # as the program asked, as under DNAT
            peer = kernel_peer(c)  # where the kernel connected it
            assert peer[1] == number
            seen[peer[0]] += 1
        for e in ends:  # accept what came, so the backlogs never fill
            with contextlib.suppress(BlockingIOError):
                e.accept()[0].close()
    assert set(seen) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert min(seen.values()) >= 50, seen  # 100 each expected; 50 is 6 sigma below

    # Endpoints change: a connection made before stays; new ones go to what is left.
    kept = socket.create_connection((CLUSTER_IP, port), timeout=2)
    point(balancer, port, ends[:1])
    for _ in range(20):
        with socket.create_connection((CLUSTER_IP, port), timeout=2) as c:
            assert kernel_peer(c) == ("127.0.0.2", number)
    kept.sendall(b"still here")  # no reset from the change
    # Other ports of the cluster IP, UDP, and a Service without endpoints: untouched.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((CLUSTER_IP, port + 1), timeout=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect((CLUSTER_IP, port))
        assert u.getpeername() == (CLUSTER_IP, port)
    point(balancer, port, [])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((CLUSTER_IP, port), timeout=2)
    for e in [*ends, kept]:
        e.close()


HOLDER = """
import sys
from podkit.network import socket_lb
lb = socket_lb.SocketLb("podkit_lb_test")
lb.sync({socket_lb.key(sys.argv[1], int(sys.argv[2]), 0): socket_lb.value("0.0.0.0", 0, 1),
         socket_lb.key(sys.argv[1], int(sys.argv[2]), 1): socket_lb.value(sys.argv[3],
                                                                           int(sys.argv[4]))})
print("ready", flush=True)
sys.stdin.read()
"""


@needs_bpf
def test_a_socket_connected_elsewhere_after_a_refusal_shows_its_real_peer(
    balancer: socket_lb.SocketLb,
) -> None:
    """The peer shown is the cluster IP only while the socket is connected to the endpoint
    chosen for it: a connect() refused there, then made straight to another address, shows
    that address (Linux lets a TCP socket connect again after a refusal)."""
    (end,) = listeners(1)
    gone = socket.socket()
    gone.bind(("127.0.0.3", 0))  # an endpoint with nothing listening: refused
    port = free_port()
    point(balancer, port, [gone])
    gone.close()
    with socket.socket() as s:
        with pytest.raises(ConnectionRefusedError):
            s.connect((CLUSTER_IP, port))
        s.connect(end.getsockname())
        assert s.getpeername() == end.getsockname() == kernel_peer(s)
    end.close()


@needs_bpf
def test_the_program_goes_with_the_process_that_attached_it_even_on_kill_9() -> None:
    """As `podkit serve` killed: nothing of it is left to rewrite connections (its nftables
    rules, which a next serve cleans up, go on serving meanwhile)."""
    (end,) = listeners(1)
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, CLUSTER_IP, str(port), *map(str, end.getsockname())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        with socket.create_connection((CLUSTER_IP, port), timeout=2) as c:
            assert kernel_peer(c) == end.getsockname()
    finally:
        holder.kill()
        holder.wait(10)

    def refused() -> bool:
        try:
            socket.create_connection((CLUSTER_IP, port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for("no rewrite after the kill", refused, 10)  # the kernel frees the link at exit
    end.close()


@needs_bpf
def test_without_cgroup2_the_reason_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    line = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"
    assert socket_lb.cgroup2_root(line) == "/sys/fs/cgroup/unified"
    assert os.path.isdir(socket_lb.cgroup2_root(Path("/proc/self/mountinfo").read_text()) or "")
    monkeypatch.setattr(socket_lb, "cgroup2_root", lambda mountinfo: None)
    with pytest.raises(OSError) as refused:
        socket_lb.SocketLb("podkit_lb_test")
    assert refused.value.strerror == "no cgroup2 hierarchy is mounted"
