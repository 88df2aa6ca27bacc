"""Services through podkit serve, with real traffic: a ClusterIP reached from the host and
from a pod (its own Service too: hairpin), spread over the ready endpoints, a pod made unready
taken out, a NodePort on 127.0.0.1, a Service without endpoints refusing at once, and the
apiserver's refusals; cluster DNS from a pod (search list, A, SRV, headless, a pod's
hostname.subdomain, NXDOMAIN) and forwarding to an upstream (dnsmasq, started here). As root:
a connect() to a cluster IP goes straight to an endpoint (the socket load balancer), and where
that is off, cluster IPs are DNATed by podkit's nftables table."""

from __future__ import annotations

import collections
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_harness import KUBECTL, Served, serving

import socket_peers
from podkit_harness import PODKIT_ENV, free_port, http_get, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cluster IPs need root")

WEB = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: simple-webapp
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: [sh, -c, "test ! -f /tmp/unready"]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http}]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """dnsmasq on 127.0.0.1 answering upstream.test, as a host's resolver would."""
    port = free_port()
    proc = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--port={port}",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--conf-file=/dev/null",
         "--pid-file=", "--address=/upstream.test/192.0.2.7"],
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


@pytest.fixture(scope="module")
def bridged_traffic_unfiltered() -> Iterator[None]:
    """The host as a fresh one may be: bridged traffic not passed to netfilter (serve must turn
    it on: pod to pod through a cluster IP needs it). Put back as it was after the module.
    Where br_netfilter is not loaded at all, that is the fresh host already."""
    if not BRIDGE_NF.exists():
        yield
        return
    before = BRIDGE_NF.read_text()
    BRIDGE_NF.write_text("0\n")
    try:
        yield
    finally:
        BRIDGE_NF.write_text(before)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: int, bridged_traffic_unfiltered: None
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("services")
    with serving(base, "--dns-upstream", f"127.0.0.1:{upstream}", env=PODKIT_ENV) as s:
        applied = s.kubectl("apply", "-f", "-", stdin=WEB)
        assert applied.returncode == 0, applied.stderr
        done = s.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        assert done.returncode == 0, done.stderr
        yield s


def service(served: Served, name: str = "web") -> dict:  # type: ignore[type-arg]
    got = served.kubectl("get", "svc", name, "-o", "json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)  # type: ignore[no-any-return]


def endpoints(served: Served) -> list[dict]:  # type: ignore[type-arg]
    """The endpoints of the `web` Service's EndpointSlices."""
    label = "kubernetes.io/service-name=web"
    found = json.loads(served.kubectl("get", "endpointslices", "-l", label, "-o", "json").stdout)
    return [e for s in found["items"] for e in s.get("endpoints") or []]


def ready_endpoints(served: Served) -> list[str]:
    return sorted(e["targetRef"]["name"] for e in endpoints(served) if e["conditions"]["ready"])


def answers(url: str, n: int) -> collections.Counter[str]:
    """Which pod answered each of n requests."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        code, body = http_get(url)
        assert code == 200, body
        seen[json.loads(body)["pod_name"]] += 1
    return seen


def test_the_cluster_ip_spreads_requests_over_the_ready_endpoints(served: Served) -> None:
    wait_for("3 ready endpoints", lambda: len(ready_endpoints(served)) == 3, 20)
    svc = service(served)
    ip = svc["spec"]["clusterIP"]
    assert ip.startswith("10.") and ip != "10.96.0.10"
    label = "kubernetes.io/service-name=web"
    slices = json.loads(served.kubectl("get", "endpointslices", "-l", label, "-o", "json").stdout)
    ports = [p["port"] for p in slices["items"][0]["ports"]]
    assert ports == [8080]  # the named targetPort, resolved
    # The readiness probe looks at a file, not at the port: a pod is ready (and an endpoint)
    # before its webapp listens, as it would be on a cluster. So each must answer first (CI once
    # sent a request to one in that moment). And the rules follow the API a moment later (as
    # kube-proxy's do): until they hold the endpoints, the cluster IP refuses.
    for address in (a for e in slices["items"][0]["endpoints"] for a in e["addresses"]):
        url = f"http://{address}:8080/api/info"
        wait_for(f"{address} answering", lambda url=url: http_get(url)[0] == 200, 10)
    wait_for("the cluster IP answering", lambda: http_get(f"http://{ip}/api/info")[0] == 200, 10)
    seen = answers(f"http://{ip}/api/info", 60)
    assert len(seen) == 3 and min(seen.values()) >= 5, seen  # random, each picked
    rows = served.kubectl("get", "svc", "web").stdout.split()
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert f"80:{node_port}/TCP" in rows and 30000 <= node_port <= 32767
    assert answers(f"http://127.0.0.1:{node_port}/api/info", 3).total() == 3


def test_pods_reach_services_even_their_own(served: Served) -> None:
    assert BRIDGE_NF.read_text() == "1\n"  # turned on by serve (the module turned it off)
    ip = service(served)["spec"]["clusterIP"]
    pod = ready_endpoints(served)[0]
    seen = collections.Counter()
    for _ in range(12):  # some land on the pod that asks: hairpin
        got = served.kubectl("exec", pod, "--", "curl", "-s", "-m", "3", f"http://{ip}/api/info")
        assert got.returncode == 0, got.stderr
        seen[json.loads(got.stdout)["pod_name"]] += 1
    assert pod in seen and len(seen) >= 2, seen


def pod_ips(served: Served) -> dict[str, str]:
    return {e["targetRef"]["name"]: e["addresses"][0] for e in endpoints(served)}


def connected(served: Served, ip: str, asker: str | None = None) -> tuple[str, str, str]:
    """One request to http://IP/api/info, from the host or from the pod `asker`: (the pod that
    answered, the client socket's peer as the client sees it, as the kernel holds it)."""
    if asker is None:
        body, peer, kernel = socket_peers.request(ip, 80, "/api/info")
    else:
        ran = served.kubectl("exec", asker, "--", "python3", socket_peers.__file__, ip, "80",
                             "/api/info")  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        body, peer, kernel = json.loads(ran.stdout)
    pod = json.loads(body)["pod_name"]
    return pod, f"{peer[0]}:{peer[1]}", f"{kernel[0]}:{kernel[1]}"


def test_a_connection_to_the_cluster_ip_is_made_straight_to_an_endpoint(served: Served) -> None:
    """The socket load balancer: connect() to the cluster IP is turned into a connect() to the
    endpoint, from the host and from a pod: the kernel's connection is to the endpoint (its
    packets are a direct connection's, with no NAT), while the client sees the cluster IP as
    its peer, as under DNAT. `--no-socket-lb` leaves it to nftables (the second serve below)."""
    ip = service(served)["spec"]["clusterIP"]
    ips = pod_ips(served)
    wait_for("the cluster IP answering", lambda: http_get(f"http://{ip}/api/info")[0] == 200, 10)
    asker = ready_endpoints(served)[0]
    for _ in range(3):
        for where in (None, asker):
            pod, peer, kernel = connected(served, ip, where)
            assert (peer, kernel) == (f"{ip}:80", f"{ips[pod]}:8080")


def test_an_unready_pod_leaves_the_service(served: Served) -> None:
    pod = ready_endpoints(served)[0]
    assert served.kubectl("exec", pod, "--", "touch", "/tmp/unready").returncode == 0
    wait_for("the endpoint not ready", lambda: pod not in ready_endpoints(served), 15)
    ip = service(served)["spec"]["clusterIP"]
    seen = answers(f"http://{ip}/api/info", 30)
    assert pod not in seen and len(seen) == 2
    served.kubectl("exec", pod, "--", "rm", "/tmp/unready")
    wait_for("the endpoint back", lambda: pod in ready_endpoints(served), 15)


def test_a_service_without_endpoints_refuses_at_once(served: Served) -> None:
    made = served.kubectl("create", "service", "clusterip", "nobody", "--tcp=81:81")
    assert made.returncode == 0, made.stderr  # protobuf, as kubectl sends it
    ip = service(served, "nobody")["spec"]["clusterIP"]

    def rejected() -> bool:
        began = time.monotonic()
        got = subprocess.run(["curl", "-s", "-m", "5", f"http://{ip}:81/"], capture_output=True)
        return got.returncode == 7 and time.monotonic() - began < 1  # refused, not timed out

    wait_for("a refusal", rejected, 10)


def test_bad_services_get_the_apiservers_errors(served: Served) -> None:
    outside = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: outside}\n"
        "spec: {clusterIP: 192.168.7.7, ports: [{port: 80}]}\n"
    )
    refused = served.kubectl("apply", "-f", "-", stdin=outside)
    assert "the provided IP (192.168.7.7) is not in the valid range. The range of valid IPs is " \
        "10.96.0.0/12" in refused.stderr  # fmt: skip
    clash = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\n"
        "spec: {ports: [{name: a, port: 80}, {name: b, port: 80}]}\n"
    )
    assert "spec.ports[1]: Duplicate value" in served.kubectl(
        "apply", "-f", "-", stdin=clash).stderr  # fmt: skip
    taken = service(served)["spec"]["ports"][0]["nodePort"]
    same = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: same}\n"
        f"spec: {{type: NodePort, ports: [{{port: 80, nodePort: {taken}}}]}}\n"
    )
    assert "provided port is already allocated" in served.kubectl(
        "apply", "-f", "-", stdin=same).stderr  # fmt: skip


PEERS = """apiVersion: v1
kind: Service
metadata: {name: peers}
spec: {clusterIP: None, selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: named, labels: {app: web}}
spec:
  hostname: first
  subdomain: peers
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while sleep 1; do :; done"]
"""


def test_cluster_dns_answers_pods_as_coredns_would(served: Served) -> None:
    assert served.kubectl("apply", "-f", "-", stdin=PEERS).returncode == 0
    ready = served.kubectl("wait", "--for=condition=Ready", "pod/named", "--timeout=30s")
    assert ready.returncode == 0, ready.stderr
    resolv = served.kubectl("exec", "named", "--", "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines() == [
        "nameserver 10.96.0.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]

    def hosts(name: str) -> list[str]:
        got = served.kubectl("exec", "named", "--", "getent", "hosts", name)
        return sorted(line.split()[0] for line in got.stdout.splitlines())

    ip = service(served)["spec"]["clusterIP"]
    assert hosts("web") == [ip]  # through the search list
    assert hosts("web.default.svc.cluster.local") == [ip]
    wait_for("the named pod among the peers", lambda: len(hosts("peers")) == 4, 15)
    named_ip = json.loads(served.kubectl("get", "pod", "named", "-o", "json").stdout)
    assert hosts("first.peers") == [named_ip["status"]["podIP"]]
    assert hosts("nowhere.default.svc.cluster.local") == []  # NXDOMAIN
    assert hosts("upstream.test") == ["192.0.2.7"]  # forwarded to dnsmasq
    got = served.kubectl("exec", "named", "--", "curl", "-s", "-m", "3", "http://web/api/info")
    assert json.loads(got.stdout)["app"] == "simple-webapp"  # by name, through the cluster IP
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["10.96.0.10"]  # from the host too, through kube-dns's cluster IP
    srv = resolver.resolve("_web._tcp.web.default.svc.cluster.local", "SRV")
    assert [(r.port, str(r.target)) for r in srv] == [(80, "web.default.svc.cluster.local.")]
    peers = resolver.resolve("_http._tcp.peers.default.svc.cluster.local", "SRV")
    targets = sorted(str(r.target) for r in peers)
    assert "first.peers.default.svc.cluster.local." in targets and len(targets) == 4
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nowhere.default.svc.cluster.local", "A")


LINKS = """apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  enableServiceLinks: {links}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while sleep 1; do :; done"]
    env: [{{name: WEB_AT, value: "$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"}}]
"""


def test_pods_learn_services_from_their_environment(served: Served) -> None:
    for name, links in (("linked", "true"), ("unlinked", "false")):
        made = served.kubectl("apply", "-f", "-", stdin=LINKS.format(name=name, links=links))
        assert made.returncode == 0, made.stderr
        done = served.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s")
        assert done.returncode == 0, done.stderr

    def env(pod: str) -> dict[str, str]:
        got = served.kubectl("exec", pod, "--", "env").stdout
        return dict(line.split("=", 1) for line in got.splitlines() if "=" in line)

    ip = service(served)["spec"]["clusterIP"]
    linked = env("linked")
    assert linked["WEB_SERVICE_HOST"] == ip and linked["WEB_SERVICE_PORT_WEB"] == "80"
    assert linked["WEB_PORT_80_TCP"] == f"tcp://{ip}:80"
    assert linked["WEB_AT"] == f"{ip}:80"  # $(VAR) sees them
    assert linked["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert linked["KUBERNETES_SERVICE_PORT"] == "443"
    unlinked = env("unlinked")
    assert "WEB_SERVICE_HOST" not in unlinked and unlinked["KUBERNETES_SERVICE_HOST"]
    # The `kubernetes` Service leads to this API, by name and cluster IP, from a pod.
    got = served.kubectl("exec", "linked", "--", "curl", "-sk", "-m", "3",
                         "https://kubernetes.default.svc/version")  # fmt: skip
    assert json.loads(got.stdout)["gitVersion"] == "v1.37.0", got.stderr


IN_CLUSTER = """apiVersion: v1
kind: Pod
metadata: {{name: in-cluster}}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: x
    command:
    - {python}
    - -c
    - |
      from kubernetes import client, config
      config.load_incluster_config()  # the pod's token, ca.crt and KUBERNETES_SERVICE_*
      api = client.CoreV1Api()
      mine = api.list_namespaced_pod("default").items
      print("pods", " ".join(sorted(p.metadata.name for p in mine)))
      made = {{"metadata": {{"name": "x"}}}}
      for name, call in (
          ("create", lambda: api.create_namespaced_config_map("default", made)),
          ("elsewhere", lambda: api.list_namespaced_pod("kube-system")),
      ):
          try:
              call()
              print(name, "allowed")
          except client.ApiException as exc:
              print(name, exc.status, exc.reason)
"""


def test_an_in_cluster_client_reads_its_namespace_and_may_not_write(served: Served) -> None:
    import sys

    pod = IN_CLUSTER.format(python=sys.executable)  # the official client, from the venv
    assert served.kubectl("apply", "-f", "-", stdin=pod).returncode == 0

    def finished() -> str | None:
        got = served.kubectl("get", "pod", "in-cluster", "-o", "jsonpath={.status.phase}")
        return got.stdout if got.stdout in ("Succeeded", "Failed") else None

    assert wait_for("the client done", finished, 30) == "Succeeded"
    lines = served.kubectl("logs", "in-cluster").stdout.splitlines()
    assert lines[0].startswith("pods ") and "in-cluster" in lines[0].split()
    assert lines[1:] == ["create 403 Forbidden", "elsewhere 403 Forbidden"]
    volumes = json.loads(served.kubectl("get", "pod", "in-cluster", "-o", "json").stdout)
    sources = volumes["spec"]["volumes"][0]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}


ASKER = """apiVersion: v1
kind: Pod
metadata: {name: asker}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while sleep 1; do :; done"]
"""


def test_a_second_serve_with_a_service_range_of_its_own_runs_beside(
    served: Served, tmp_path: Path
) -> None:
    """Two podkit serves on one machine: each with its own cluster IPs, DNS and Services (the
    second's DNS on another port of the gateway, behind its own cluster IP). The second
    publishes its NodePorts on 127.0.0.2, as asked, and not on 127.0.0.1."""
    asked = ("--service-cidr", "10.112.0.0/16", "--node-port-address", "127.0.0.2",
             "--no-socket-lb")  # fmt: skip
    with serving(tmp_path, *asked, env=PODKIT_ENV) as second:
        applied = second.kubectl(
            "apply", "-f", "-", stdin=WEB.replace("replicas: 3", "replicas: 1")
        )
        assert applied.returncode == 0, applied.stderr
        assert second.kubectl("apply", "-f", "-", stdin=ASKER).returncode == 0
        done = second.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        assert done.returncode == 0, done.stderr
        ready = second.kubectl("wait", "--for=condition=Ready", "pod/asker", "--timeout=30s")
        assert ready.returncode == 0, ready.stderr
        ip = service(second)["spec"]["clusterIP"]
        assert ip.startswith("10.112.")
        assert service(second, "kubernetes")["spec"]["clusterIP"] == "10.112.0.1"
        resolv = second.kubectl("exec", "asker", "--", "cat", "/etc/resolv.conf").stdout
        assert resolv.splitlines()[0] == "nameserver 10.112.0.10"
        got = second.kubectl("exec", "asker", "--", "getent", "hosts", "web")
        assert got.stdout.split()[:1] == [ip]
        (theirs,) = ready_endpoints(second)
        for _ in range(3):  # by name, through the second's DNS and cluster IP
            got = second.kubectl(
                "exec", "asker", "--", "curl", "-s", "-m", "3", "http://web/api/info"
            )
            assert json.loads(got.stdout)["pod_name"] == theirs, got.stderr
        # NATed, as --no-socket-lb asks: the kernel's connection is to the cluster IP. From a
        # pod, from the endpoint to its own Service (hairpin), and from the host.
        for where in ("asker", theirs, None):
            assert connected(second, ip, where) == (theirs, f"{ip}:80", f"{ip}:80")
        node_port = service(second)["spec"]["ports"][0]["nodePort"]
        assert answers(f"http://127.0.0.2:{node_port}/api/info", 2) == {theirs: 2}
        if node_port != service(served)["spec"]["ports"][0]["nodePort"]:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", node_port), timeout=2)
        # The first serve goes on answering for its own Service, with its own pods.
        first = answers(f"http://{service(served)['spec']['clusterIP']}/api/info", 10)
        assert set(first) <= set(ready_endpoints(served)) and theirs not in first
        # A connection through the rules stays while they change (the table is replaced
        # whole; conntrack keeps what it has), as kube-proxy's do.
        kept = http.client.HTTPConnection(ip, 80, timeout=5)
        kept.request("GET", "/api/info")
        assert json.loads(kept.getresponse().read())["pod_name"] == theirs
        before = kept.sock.getsockname()
        assert second.kubectl("scale", "deployment/web", "--replicas=2").returncode == 0
        wait_for("the new endpoint behind the cluster IP",
                 lambda: len(answers(f"http://{ip}/api/info", 10)) == 2, 30)  # fmt: skip
        kept.request("GET", "/api/info")
        assert json.loads(kept.getresponse().read())["pod_name"] == theirs
        assert kept.sock.getsockname() == before  # the same connection, not a new one
        kept.close()
    moved = subprocess.run(
        [str(KUBECTL.parent / "podkit"), "serve", "--state-dir", str(second.state),
         "--service-cidr", "10.113.0.0/16"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert moved.returncode == 1
    assert "its Services have addresses from 10.112.0.0/16" in moved.stderr
