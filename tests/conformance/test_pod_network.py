"""Pod networking as root: every pod has its own IP on podkit's bridge (the tests' bridge is
pktest0, 10.249.0.0/24; see conftest.py), pods and the host reach each other by IP."""

from __future__ import annotations

import ipaddress
import json
import socket
import textwrap
import threading

import pytest

from podkit_harness import wait_for

pytestmark = pytest.mark.needs_root

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
    subnet = ipaddress.ip_network("10.249.0.0/24")
    assert all(ipaddress.ip_address(ip) in subnet for ip in ips.values())
    assert ips["server"] != ips["client"]
    assert f"[client] my ip {ips['client']}" in wait_for(
        "client up", lambda: run.stdout_lines("[client] my ip"), 15
    )  # downward API sees it

    # The host reaches the server pod by its IP (no port is published).
    def from_host() -> str:
        with socket.create_connection((ips["server"], 7000), timeout=2) as c:
            return c.recv(100).decode()

    assert wait_for("host to pod", from_host, 10) == "server saw 10.249.0.1"  # the gateway

    # A server on the host, on the bridge's gateway address, for the pod to reach.
    host_server = socket.socket()
    host_server.bind(("10.249.0.1", 0))
    host_server.listen()
    host_port = host_server.getsockname()[1]

    def serve() -> None:
        c, addr = host_server.accept()
        c.sendall(f"host saw {addr[0]}".encode())
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    (shared / "target").write_text(f"{ips['server']}:7000 10.249.0.1:{host_port}")
    lines = wait_for(
        "client results",
        lambda: len(run.stdout_lines("[client] from")) == 2 and run.stdout_lines("[client] from"),
        15,
    )
    assert lines == [
        f"[client] from {ips['server']}:7000 -> server saw {ips['client']}",  # pod to pod
        f"[client] from 10.249.0.1:{host_port} -> host saw {ips['client']}",  # pod to host
    ]
    host_server.close()
    assert run.stop() == 0
