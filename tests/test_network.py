"""Pod IPs on a bridge, as root: real network namespaces (real pod sandboxes), real veths.

Every address used is on this machine: a test bridge and a 10.250.x.0/24 subnet the host does
not route, removed at teardown. No test sends traffic anywhere else.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podkit.runtime import network
from podkit.runtime.network import NetworkConfig
from podkit_harness import wait_for

_count = itertools.count()


def _unused_subnet() -> str:
    """A /24 in 10.250.0.0/16 that no route of this host touches (parallel runs included)."""
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True
        ).stdout
    )
    used = [ipaddress.IPv4Network(r["dst"], strict=False) for r in routes if r["dst"] != "default"]
    start = os.getpid() % 250
    for i in range(250):
        net = ipaddress.IPv4Network(f"10.250.{(start + i) % 250}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError("no free 10.250.x.0/24 on this host")


@pytest.fixture
def cfg(state_dir: Path) -> Iterator[NetworkConfig]:
    reason = network.available()
    assert reason is None, (
        f"pod networking must be possible here (the suite runs as root): {reason}"
    )
    c = NetworkConfig(bridge=f"pkt{os.getpid()}x{next(_count)}"[:15], subnet=_unused_subnet())
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    assert network.ensure_bridge(c, state_dir) is None  # nftables is a Makefile DEB
    yield c
    network.remove_bridge(c)
    Path("/proc/sys/net/ipv4/ip_forward").write_text(forward_before)


@pytest.fixture
def pods() -> Iterator[Callable[[int], list[int]]]:
    """`pods(n)` starts n real pod sandboxes (in a helper: forking one needs a single-threaded
    process) and returns their pids; they die with the helper at teardown."""
    helpers: list[subprocess.Popen] = []

    def start(n: int) -> list[int]:
        code = textwrap.dedent(
            f"""
            import sys
            from podkit.runtime.sandbox import fork_sandbox
            kept = []  # a sandbox exits when its control socket closes
            for i in range({n}):
                kept.append(fork_sandbox(f"pod{{i}}", []))
                print(kept[-1][0], flush=True)
            sys.stdin.read()
            """
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        helpers.append(p)
        return [int(p.stdout.readline()) for _ in range(n)]

    yield start
    for p in helpers:
        p.stdin.close()
        p.wait(10)


def in_pod(pid: int, code: str, **kw) -> subprocess.Popen:
    """Run Python inside the pod's network namespace."""
    return subprocess.Popen(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def connect_from_pod(pid: int, ip: str, port: int) -> subprocess.Popen:
    return in_pod(
        pid,
        f"""
        import socket
        c = socket.create_connection(("{ip}", {port}), timeout=5)
        c.sendall(b"ping")
        print(c.recv(100).decode(), flush=True)
        """,
    )


def pod_addresses(pid: int) -> list[str]:
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "-j", "-4", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]]


def pod_links(pid: int) -> list[str]:
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [link["ifname"] for link in json.loads(out)]


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def test_pods_get_their_own_ips_and_reach_each_other_by_ip(cfg, pods, state_dir):
    a_pid, b_pid = pods(2)
    a = network.attach(cfg, a_pid, "uid-a", state_dir)
    b = network.attach(cfg, b_pid, "uid-b", state_dir)
    subnet = ipaddress.IPv4Network(cfg.subnet)
    assert a.ip != b.ip
    assert {ipaddress.IPv4Address(a.ip), ipaddress.IPv4Address(b.ip)} <= set(subnet.hosts())
    assert cfg.gateway not in (a.ip, b.ip)
    assert pod_addresses(a_pid) == [f"{a.ip}/{subnet.prefixlen}"]
    assert pod_addresses(b_pid) == [f"{b.ip}/{subnet.prefixlen}"]

    server = in_pod(
        b_pid,
        f"""
        import socket
        s = socket.socket(); s.bind(("{b.ip}", 8080)); s.listen()
        print("listening", flush=True)
        c, peer = s.accept()
        c.sendall(b"pong from b, you are " + peer[0].encode() + b" sent " + c.recv(10))
        """,
    )
    try:
        assert server.stdout.readline().strip() == "listening", server.stderr.read()
        client = connect_from_pod(a_pid, b.ip, 8080)
        out, err = client.communicate(timeout=10)
        # Pod to pod is bridged, not NATed: B sees A's own address.
        assert out.strip() == f"pong from b, you are {a.ip} sent ping", err
    finally:
        server.kill()
        server.wait()


def test_pod_reaches_a_server_on_the_host_by_the_gateway_ip(cfg, pods, state_dir):
    (pid,) = pods(1)
    pod = network.attach(cfg, pid, "uid-a", state_dir)
    assert pod.gateway == cfg.gateway
    with socket.socket() as listener:
        listener.bind((cfg.gateway, 0))  # a host server bound to the bridge address only
        listener.listen()
        listener.settimeout(10)
        client = connect_from_pod(pid, cfg.gateway, listener.getsockname()[1])
        conn, peer = listener.accept()
        with conn:
            assert peer[0] == pod.ip
            assert conn.recv(10) == b"ping"
            conn.sendall(b"pong from host")
        out, err = client.communicate(timeout=10)
    assert out.strip() == "pong from host", err


def test_a_pod_keeps_reaching_the_host_when_the_pod_with_the_lowest_mac_leaves(
    cfg, pods, state_dir
):
    """A Linux bridge without a MAC of its own takes its lowest port's. When that pod left, the
    bridge's MAC changed under the other pods, whose cached gateway MAC then led nowhere for up
    to a minute (CI: requests through a Service hung in a rolling update)."""
    a_pid, b_pid = pods(2)
    a = network.attach(cfg, a_pid, "uid-a", state_dir)
    # a's host end gets the lowest MAC a port can have: a bridge without one would take it
    subprocess.run(["ip", "link", "set", a.veth_host, "address", "02:00:00:00:00:01"], check=True)
    network.attach(cfg, b_pid, "uid-b", state_dir)
    with socket.socket() as listener:
        listener.bind((cfg.gateway, 0))
        listener.listen()
        listener.settimeout(10)

        def ping_host_from_b() -> str:
            client = connect_from_pod(b_pid, cfg.gateway, listener.getsockname()[1])
            conn, _ = listener.accept()
            with conn:
                conn.recv(10)
                conn.sendall(b"pong")
            out, err = client.communicate(timeout=10)
            return out.strip() or err

        assert ping_host_from_b() == "pong"  # b now has the gateway's MAC in its cache
        network.detach(cfg, a, state_dir)
        assert ping_host_from_b() == "pong"
    mac = Path(f"/sys/class/net/{cfg.bridge}/address").read_text().strip()
    assert mac == network.bridge_mac(cfg.gateway)  # its own, whatever ports come and go


def test_detach_frees_the_ip_for_the_next_pod(cfg, pods, state_dir):
    a_pid, b_pid = pods(2)
    a = network.attach(cfg, a_pid, "uid-a", state_dir)
    assert link_exists(a.veth_host)
    network.detach(cfg, a, state_dir)
    assert not link_exists(a.veth_host)
    assert pod_links(a_pid) == ["lo"]  # the pod end went with it
    assert network.leases(cfg, state_dir) == {}
    b = network.attach(cfg, b_pid, "uid-b", state_dir)
    assert b.ip != a.ip  # round robin: the address just freed rests a while
    assert list(network.leases(cfg, state_dir)) == [b.ip]


def test_detach_after_the_pod_is_gone_still_releases_the_ip(cfg, pods, state_dir):
    (pid,) = pods(1)
    pod = network.attach(cfg, pid, "uid-a", state_dir)
    os.kill(pid, signal.SIGKILL)  # the netns dies, and the veth pair with it
    wait_for("the veth to go with the pod", lambda: not link_exists(pod.veth_host))
    network.detach(cfg, pod, state_dir)
    assert network.leases(cfg, state_dir) == {}


def test_a_failed_attach_leaves_nothing_behind(cfg, state_dir):
    with pytest.raises(network.NetworkError):
        network.attach(cfg, 2**22 + 7, "uid-a", state_dir)  # no such process
    assert network.leases(cfg, state_dir) == {}
    assert not link_exists(network.veth_name(str(ipaddress.IPv4Address(cfg.gateway) + 1)))


def _allocator(cfg: NetworkConfig, state_dir: Path, count: int, then: str) -> subprocess.Popen:
    """Another podkit process: says `ready`, waits for a line on stdin, leases `count` addresses,
    prints them as JSON, then `then`: 'wait' (holds them until stdin closes) or 'exit' (dies
    holding them)."""
    code = textwrap.dedent(
        f"""
        import json, os, sys
        from pathlib import Path
        from podkit.runtime.network import NetworkConfig, allocate
        cfg = NetworkConfig({cfg.bridge!r}, {cfg.subnet!r})
        print("ready", flush=True)
        sys.stdin.readline()
        ips = [allocate(cfg, f"uid-{{os.getpid()}}-{{i}}", Path({str(state_dir)!r}))
               for i in range({count})]
        print(json.dumps(ips), flush=True)
        if {then!r} == "wait":
            sys.stdin.read()
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_two_processes_allocating_at_once_never_share_an_ip(cfg, state_dir):
    procs = [_allocator(cfg, state_dir, 20, "wait") for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline() == "ready\n"
        for p in procs:  # both have started up: go together, so their allocations overlap
            p.stdin.write("go\n")
            p.stdin.flush()
        got = [json.loads(p.stdout.readline()) for p in procs]
        assert all(len(ips) == 20 for ips in got)
        assert len(set(got[0]) | set(got[1])) == 40
        assert set(network.leases(cfg, state_dir)) == set(got[0]) | set(got[1])
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(10)


def test_a_dead_podkits_lease_is_reclaimed(cfg, state_dir):
    p = _allocator(cfg, state_dir, 1, "exit")
    (ip,) = json.loads(p.communicate("go\n", timeout=10)[0].splitlines()[-1])
    assert ip in network.leases(cfg, state_dir)  # it died without releasing
    new = network.allocate(cfg, "uid-new", state_dir)
    assert list(network.leases(cfg, state_dir)) == [new]  # its lease reclaimed
    assert network.leases(cfg, state_dir)[new].uid == "uid-new"


def test_clean_stale_releases_dead_leases_and_deletes_their_veths(cfg, state_dir):
    mine = network.allocate(cfg, "uid-live", state_dir)  # this live podkit's lease stays
    p = _allocator(cfg, state_dir, 2, "exit")
    ips = json.loads(p.communicate("go\n", timeout=10)[0].splitlines()[-1])
    leftover = network.veth_name(ips[0])  # as if its pod's netns had outlived podkit
    subprocess.run(
        ["ip", "link", "add", leftover, "type", "veth", "peer", "name", leftover + "p"], check=True
    )
    assert network.clean_stale(cfg, state_dir) == ips
    assert not link_exists(leftover)
    assert list(network.leases(cfg, state_dir)) == [mine]


def test_bridge_forwarding_and_nat_are_in_place_and_idempotent(cfg, state_dir):
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    assert link_exists(cfg.bridge)
    out = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", cfg.bridge], capture_output=True, text=True
    ).stdout
    assert [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"]] == [
        f"{cfg.gateway}/{cfg.prefix}"
    ]
    assert network.ensure_bridge(cfg, state_dir) is None  # again: nothing doubles

    def nat_rules() -> list[str]:
        listing = subprocess.run(
            ["nft", "list", "table", "ip", cfg.nft_table], capture_output=True, text=True
        ).stdout
        return [line.strip() for line in listing.splitlines() if "masquerade" in line]

    assert nat_rules() == [f'ip saddr {cfg.subnet} oifname != "{cfg.bridge}" masquerade']
    # The table is read before it is rewritten: a changed or emptied one is put right.
    nft = ["nft", "add", "rule", "ip", cfg.nft_table, "postrouting"]
    subprocess.run([*nft, "ip", "saddr", "192.0.2.0/24", "masquerade"], check=True)
    assert len(nat_rules()) == 2
    assert network.ensure_bridge(cfg, state_dir) is None
    assert nat_rules() == [f'ip saddr {cfg.subnet} oifname != "{cfg.bridge}" masquerade']
    subprocess.run(["nft", "flush", "chain", "ip", cfg.nft_table, "postrouting"], check=True)
    assert network.ensure_bridge(cfg, state_dir) is None
    assert nat_rules() == [f'ip saddr {cfg.subnet} oifname != "{cfg.bridge}" masquerade']
    network.remove_bridge(cfg)
    assert nat_rules() == []
    assert not link_exists(cfg.bridge)


def test_a_subnet_the_host_already_uses_is_refused(cfg, state_dir):
    clash = NetworkConfig(bridge=f"pktclash{next(_count)}", subnet=cfg.subnet)
    with pytest.raises(network.NetworkError, match="PODKIT_SUBNET"):
        network.ensure_bridge(clash, state_dir)
    assert not link_exists(clash.bridge)
