"""Pod networking as root: every pod has its own IP on podkit's bridge (the tests' bridge is
podkit_harness.TEST_BRIDGE), pods and the host reach each other by IP."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from podkit_harness import TEST_GATEWAY, TEST_SUBNET, wait_for

PODS = """
    apiVersion: v1
    kind: Pod
    metadata: {{name: server}}
    spec:
      containers:
      - name: server
        image: x
        command: ["python3", "-c"]
        args:
        - |
          import socket
          s = socket.socket(); s.bind(("0.0.0.0", 7000)); s.listen()
          while True:
              c, addr = s.accept(); c.sendall(f"server saw {{addr[0]}}".encode()); c.close()
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: client}}
    spec:
      containers:
      - name: client
        image: x
        env:
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        command: ["python3", "-c"]
        args:
        - |
          import os, socket, time
          print("my ip", os.environ["POD_IP"], flush=True)
          while not os.path.exists("/shared/target"):
              time.sleep(0.05)
          for target in open("/shared/target").read().split():
              host, port = target.split(":")
              with socket.create_connection((host, int(port)), timeout=5) as c:
                  print("from", target, "->", c.recv(100).decode(), flush=True)
          time.sleep(600)
        volumeMounts: [{{name: shared, mountPath: /shared}}]
      volumes: [{{name: shared, hostPath: {{path: {shared}}}}}]
    """


def test_pods_reach_each_other_and_the_host_by_ip(tmp_path, podkit, state_dir):
    shared = tmp_path / "shared"
    shared.mkdir()
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(textwrap.dedent(PODS.format(shared=shared)))
    run = podkit("run", str(manifest), "--grace", "1", "--no-publish")

    def pod_ips() -> dict[str, str] | None:
        docs = [json.loads(p.read_text()) for p in state_dir.glob("pods/*/status.json")]
        ips = {d["metadata"]["name"]: d["status"]["podIP"] for d in docs}
        return ips if len(ips) == 2 and "127.0.0.1" not in ips.values() else None

    ips = wait_for("both pods with an IP", pod_ips, 15)
    subnet = ipaddress.ip_network(TEST_SUBNET)
    assert all(ipaddress.ip_address(ip) in subnet for ip in ips.values())
    assert ips["server"] != ips["client"]
    assert f"[client] my ip {ips['client']}" in wait_for(
        "client up", lambda: run.stdout_lines("[client] my ip"), 15
    )  # downward API sees it

    # The host reaches the server pod by its IP (no port is published).
    def from_host() -> str:
        with socket.create_connection((ips["server"], 7000), timeout=2) as c:
            return c.recv(100).decode()

    assert wait_for("host to pod", from_host, 10) == f"server saw {TEST_GATEWAY}"  # the gateway

    # A server on the host, on the bridge's gateway address, for the pod to reach.
    host_server = socket.socket()
    host_server.bind((TEST_GATEWAY, 0))
    host_server.listen()
    host_port = host_server.getsockname()[1]

    def serve() -> None:
        c, addr = host_server.accept()
        c.sendall(f"host saw {addr[0]}".encode())
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    (shared / "target").write_text(f"{ips['server']}:7000 {TEST_GATEWAY}:{host_port}")
    lines = wait_for(
        "client results",
        lambda: len(run.stdout_lines("[client] from")) == 2 and run.stdout_lines("[client] from"),
        15,
    )
    assert lines == [
        f"[client] from {ips['server']}:7000 -> server saw {ips['client']}",  # pod to pod
        f"[client] from {TEST_GATEWAY}:{host_port} -> host saw {ips['client']}",  # pod to host
    ]
    host_server.close()
    assert run.stop() == 0


@pytest.fixture
def outside_host() -> Iterator[str]:
    """A host beyond this one: a network namespace on a veth of its own (10.247.0.0/30), the
    way a router would sit. Only this machine's namespaces are involved."""
    name = f"pkout{os.getpid() % 100000}"
    cmds = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", "10.247.0.1/30", "dev", f"{name}h"],
        ["ip", "link", "set", f"{name}h", "up"],
        ["ip", "-n", name, "addr", "add", "10.247.0.2/30", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", f"{name}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_outbound_traffic_leaves_through_nat(tmp_path, podkit, outside_host):
    # A server on the outside host tells who connected: the host's address, not the pod's.
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            outside_host,
            sys.executable,
            "-c",
            "import socket\ns = socket.socket(); s.bind(('10.247.0.2', 7100)); s.listen()\n"
            "while True:\n    c, a = s.accept(); c.sendall(a[0].encode()); c.close()",
        ]
    )
    try:
        manifest = tmp_path / "client.yaml"
        manifest.write_text(
            textwrap.dedent("""
            apiVersion: v1
            kind: Pod
            metadata: {name: outbound}
            spec:
              restartPolicy: Never
              containers:
              - name: client
                image: x
                command: ["python3", "-c"]
                args:
                - |
                  import socket, time
                  for _ in range(100):
                      try:
                          c = socket.create_connection(("10.247.0.2", 7100), timeout=2)
                          break
                      except OSError:
                          time.sleep(0.05)
                  print("outside saw", c.recv(100).decode())
            """)
        )
        run = podkit("run", str(manifest))
        assert run.wait(30) == 0, run.text()
        assert run.stdout_lines("[client] ") == ["[client] outside saw 10.247.0.1"]
    finally:
        server.kill()
        server.wait()
