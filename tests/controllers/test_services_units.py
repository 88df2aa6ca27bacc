"""Services' pure parts: cluster IP and node port allocation, the endpoints of a Service,
and the nftables ruleset kube-proxy's nftables mode would write."""

from __future__ import annotations

from pathlib import Path

from podkit.api import services
from podkit.controllers.endpoints import endpoints
from podkit.network import service_rules, userspace_proxy


def svc(name: str = "web", **spec: object) -> dict:
    base = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                   "targetPort": "http"}]}  # fmt: skip
    return services.defaulted({"metadata": {"name": name, "namespace": "ns", "uid": name},
                               "spec": {**base, **spec}})  # fmt: skip


def pod(name: str, ip: str, ready: bool = True, deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "ns", "uid": name, "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-05T12:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": "vm", "containers": [{"ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip


def test_allocation_keeps_the_reserved_and_the_taken() -> None:
    made, causes = services.allocate(svc(), None, set(), set(), "10.96.0.0/28")
    assert causes == [] and made["spec"]["clusterIP"] not in ("10.96.0.1", "10.96.0.10")
    full = {f"10.96.0.{i}" for i in range(15)}
    _, causes = services.allocate(svc(), None, full, set(), "10.96.0.0/28")
    assert "is full" in causes[0][1]
    again, causes = services.allocate(svc(clusterIP=None), made, set(), set(), "10.96.0.0/28")
    assert again["spec"]["clusterIP"] == made["spec"]["clusterIP"]  # an update keeps it
    node = svc(type="NodePort")
    given, _ = services.allocate(node, None, set(), {30000}, "10.96.0.0/12")
    assert 30000 < given["spec"]["ports"][0]["nodePort"] <= 32767
    headless, _ = services.allocate(svc(clusterIP="None"), None, set(), set(), "10.96.0.0/12")
    assert headless["spec"]["clusterIP"] == "None"


def test_endpoints_follow_readiness_and_named_ports() -> None:
    found = endpoints(svc(), [pod("a", "10.0.0.2"), pod("b", "10.0.0.3", ready=False),
                              pod("c", "10.0.0.4", deleting=True)])  # fmt: skip
    ((ports, eps),) = found
    assert ports == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in eps}
    assert conditions == {
        "a": {"ready": True, "serving": True, "terminating": False},
        "b": {"ready": False, "serving": False, "terminating": False},
        "c": {"ready": False, "serving": True, "terminating": True},
    }


def test_the_ruleset_dnats_to_ready_endpoints_and_rejects_without_any() -> None:
    web = svc(clusterIP="10.96.0.5")
    empty = svc("empty", clusterIP="10.96.0.6", selector={"app": "none"})
    ready = {"addresses": ["10.0.0.2"], "conditions": {"ready": True}}
    unready = {"addresses": ["10.0.0.3"], "conditions": {"ready": False}}
    slices = [{"metadata": {"namespace": "ns", "labels": {service_rules.SERVICE_NAME: "web"}},
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [ready, unready]}]  # fmt: skip
    text = service_rules.ruleset("t", [web, empty], slices)
    assert "ip daddr 10.96.0.5 tcp dport 80 goto svc-0" in text
    assert "numgen random mod 1 vmap { 0 : goto svc-0-ep-0 }" in text
    assert "meta l4proto tcp dnat ip to 10.0.0.2:8080" in text and "10.0.0.3" not in text
    assert "ip daddr 10.96.0.6 tcp dport 80 reject" in text
    node = svc(type="NodePort", clusterIP="10.96.0.7",
               ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"}])  # fmt: skip
    assert service_rules.node_ports([node]) == {30080: ("10.96.0.7", 80, "TCP")}


def test_rootless_routes_lead_into_the_endpoint_pods_or_to_the_host() -> None:
    web = svc(clusterIP="127.96.0.5")
    into_pod = {
        "addresses": ["127.0.0.1"],
        "conditions": {"ready": True},
        "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "u-a"},
    }
    unready = {**into_pod, "conditions": {"ready": False}}
    host = {"addresses": ["127.0.0.1"], "conditions": {"ready": True}}  # serve's own
    slices = [{"metadata": {"namespace": "ns", "labels": {service_rules.SERVICE_NAME: "web"}},
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [into_pod, unready, host]}]  # fmt: skip
    other_ns = {
        **slices[0],
        "metadata": {"namespace": "elsewhere", "labels": {service_rules.SERVICE_NAME: "web"}},
    }
    got = userspace_proxy.routes([web], [*slices, other_ns], Path("/state"))
    listener = Path("/state/pods/ns_a_u-a/sandbox.sock")
    assert got == {
        userspace_proxy.Port("127.96.0.5", 80, "TCP"): [
            userspace_proxy.Endpoint(listener, "127.0.0.1", 8080),
            userspace_proxy.Endpoint(None, "127.0.0.1", 8080),
        ]
    }


def test_dns_answers_from_services_and_forwards_the_rest() -> None:
    import dns.flags
    import dns.message
    import dns.rcode

    from podkit.network.cluster_dns import Records, answer, udp_wire

    headless = svc("peers", clusterIP="None")
    records = Records.build(
        [svc(clusterIP="10.96.0.5"), headless],
        [{"metadata": {"namespace": "ns", "labels": {service_rules.SERVICE_NAME: "peers"}},
          "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
          "endpoints": [{"addresses": ["10.0.0.2"], "hostname": "a", "conditions": {"ready": True}},
                        {"addresses": ["10.0.0.3"], "conditions": {"ready": False}}]}],
    )  # fmt: skip

    def ask(name: str, kind: str = "A") -> tuple[str, list[str]]:
        reply = answer(dns.message.make_query(name, kind), records, "cluster.local")
        assert reply is not None
        values = [r.to_text() for rrset in reply.answer for r in rrset]
        return dns.rcode.to_text(reply.rcode()), values

    assert ask("web.ns.svc.cluster.local") == ("NOERROR", ["10.96.0.5"])
    assert ask("peers.ns.svc.cluster.local") == ("NOERROR", ["10.0.0.2"])  # ready ones only
    assert ask("a.peers.ns.svc.cluster.local") == ("NOERROR", ["10.0.0.2"])
    assert ask("_http._tcp.web.ns.svc.cluster.local", "SRV") == (
        "NOERROR", ["0 100 80 web.ns.svc.cluster.local."])  # fmt: skip
    assert ask("web.ns.svc.cluster.local", "AAAA") == ("NOERROR", [])
    assert ask("10-1-2-3.ns.pod.cluster.local") == ("NOERROR", ["10.1.2.3"])
    # Too large for a datagram: TC, and the client asks again over TCP.
    many = [{"addresses": [f"10.0.1.{i}"], "conditions": {"ready": True}} for i in range(60)]
    big = Records.build([headless], [{"metadata": {"namespace": "ns", "labels": {
        service_rules.SERVICE_NAME: "peers"}}, "ports": [], "endpoints": many}])  # fmt: skip
    query = dns.message.make_query("peers.ns.svc.cluster.local", "A")
    full = answer(query, big, "cluster.local")
    assert full is not None and len(full.to_wire()) > 512
    short = dns.message.from_wire(udp_wire(full, query))
    assert short.flags & dns.flags.TC and not short.answer
    offered = dns.message.make_query("peers.ns.svc.cluster.local", "A", use_edns=0, payload=4096)
    whole = dns.message.from_wire(udp_wire(full, offered))
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 60
    assert ask("gone.ns.svc.cluster.local")[0] == "NXDOMAIN"
    assert answer(dns.message.make_query("pypi.org", "A"), records, "cluster.local") is None


def test_cluster_first_resolv_conf_names_the_cluster_dns() -> None:
    from podkit.runtime import dns as resolv

    host = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"
    assert resolv.resolv_conf({}, host, ("10.96.0.10", "cluster.local"), "team") == (
        "nameserver 10.96.0.10\n"
        "search team.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "options ndots:5\n"
    )
    assert resolv.resolv_conf({"dnsPolicy": "Default"}, host, ("10.96.0.10", "x"), "t") == host


def test_service_environment_variables_as_the_kubelet_writes_them() -> None:
    from podkit.runtime.service_env import service_env

    web = svc("web-front", clusterIP="10.96.0.5", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"}])  # fmt: skip
    master = svc("kubernetes", clusterIP="10.96.0.1",
                 ports=[{"name": "https", "port": 443, "protocol": "TCP"}])  # fmt: skip
    master["metadata"]["namespace"] = "default"
    headless = svc("peers", clusterIP="None")
    found = {("ns", "web-front"): web, ("default", "kubernetes"): master, ("ns", "peers"): headless}
    env = service_env(found, "ns", enable_links=True)
    assert env["WEB_FRONT_SERVICE_HOST"] == "10.96.0.5"
    assert env["WEB_FRONT_SERVICE_PORT"] == "80" and env["WEB_FRONT_SERVICE_PORT_DNS"] == "53"
    assert env["WEB_FRONT_PORT"] == "tcp://10.96.0.5:80"
    assert env["WEB_FRONT_PORT_53_UDP"] == "udp://10.96.0.5:53"
    assert env["WEB_FRONT_PORT_53_UDP_ADDR"] == "10.96.0.5"
    assert not any(k.startswith("PEERS_") for k in env)  # headless: none
    assert set(service_env(found, "ns", enable_links=False)) == {
        k for k in env if k.startswith("KUBERNETES_")
    }


def test_bound_tokens_and_what_a_service_account_may_do(tmp_path: Path) -> None:
    from podkit.api import service_accounts, tokens

    signer = tokens.Signer(tmp_path / "sa.key")
    who = tokens.Identity("team", "default", "web-1", "uid-1")
    token = signer.issue(who, "sa-uid")
    assert signer.check(token) == who
    assert tokens.Signer(tmp_path / "sa.key").check(token) == who  # the key is kept
    assert tokens.Signer(tmp_path / "other.key").check(token) is None  # another serve's
    assert signer.check(signer.issue(who, "sa-uid", lifetime=-5)) is None  # expired
    assert not service_accounts.forbidden("list", "team", "team", writes=False)
    assert service_accounts.forbidden("create", "team", "team", writes=False)
    assert not service_accounts.forbidden("create", "team", "team", writes=True)
    assert service_accounts.forbidden("get", "other", "team", writes=True)
    pod = {"spec": {"containers": [{"name": "c"}]}}
    mounted = service_accounts.admitted(pod, None, "abcde")
    assert mounted["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "kube-api-access-abcde", "mountPath": service_accounts.MOUNT, "readOnly": True}
    ]
    assert service_accounts.admitted(pod, {"automountServiceAccountToken": False}, "x") == pod
