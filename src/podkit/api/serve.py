"""`podkit serve`: the API on HTTPS (127.0.0.1:6443 by default), its state in
`<state dir>/serve/` (state.db, pki/, kubeconfig.yaml), in the foreground until Ctrl-C or
SIGTERM. It serves Namespaces, ConfigMaps, Secrets, Pods (run on this machine by the node
agent, runtime/node_agent.py), Events, the Node, ServiceAccounts, Deployments and ReplicaSets
(kept by the controllers, controllers/manager.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from podkit.api import kubeconfig, pki, tokens
from podkit.api.kinds import NAMESPACE, services
from podkit.api.rest import Rest
from podkit.api.server import Api, tls_context
from podkit.controllers import manager
from podkit.network import cluster_dns, service_proxy, userspace_proxy
from podkit.network.cluster_dns import DOMAIN, ClusterDns
from podkit.runtime import dns, network, statedir
from podkit.runtime.node_agent import NodeAgent
from podkit.runtime.podfs import host_resolv_conf
from podkit.store import objects
from podkit.store.objects import HISTORY, ObjectStore, StoreError

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--listen {text!r}: expected HOST:PORT, for example 127.0.0.1:6443")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"--listen {text!r}: {host!r} is not an IP address") from None
        return cls(host, int(port))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def paths(state_dir: Path) -> tuple[Path, Path, Path]:
    """serve/, its kubeconfig.yaml and its state.db."""
    base = state_dir / "serve"
    return base, base / "kubeconfig.yaml", base / "state.db"


def serve(
    state_dir: Path,
    listen: Listen,
    say: Callable[[str], None],
    keep_pods: bool = False,
    history: int = HISTORY,
    dns_upstreams: list[tuple[str, int]] | None = None,
    service_account_writes: bool = False,
    service_cidr: str | None = None,
    node_port_addresses: list[str] | None = None,
    socket_lb: bool = True,
) -> int:
    base, config_path, db_path = paths(state_dir)
    _lock(base)
    cidr = _service_cidr(base, service_cidr)
    store = ObjectStore(db_path, history)  # StoreError: a clear message, before listening
    # The names in-cluster clients use too (the `kubernetes` Service: its cluster IP and DNS
    # names, and the pods' gateway where serve answers them).
    in_cluster = [
        network.NetworkConfig.from_env().gateway,
        services.reserved(cidr)[0],
        "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        f"kubernetes.default.svc.{DOMAIN}",
    ]  # fmt: skip
    keys = pki.ensure(base / "pki", [listen.host, *in_cluster])
    server = (
        listen.url
        if listen.host not in ("0.0.0.0", "::")
        else "https://127.0.0.1:" + str(listen.port)
    )
    kubeconfig.write(config_path, kubeconfig.render(keys, server))
    rest = Rest(store, node_name=os.uname().nodename, service_cidr=cidr)
    rest.signer = tokens.Signer(base / "pki" / "sa.key")
    rest.root_ca = keys.ca.read_text()
    for name in SYSTEM_NAMESPACES:
        rest.ensure_namespace(name)
    for ns in rest.list_objects(NAMESPACE, None)[0]:
        rest.publish_root_ca(ns["metadata"]["name"])  # namespaces from before this start
    ctx = tls_context(str(keys.ca), str(keys.server_cert), str(keys.server_key))
    try:
        import uvloop

        agent = NodeAgent(rest, state_dir)
        api = Api(rest, state_dir=state_dir)
        api.sa_writes = service_account_writes
        return uvloop.run(
            _run(
                api.app(),
                agent,
                listen,
                ctx,
                config_path,
                say,
                keep_pods,
                dns_upstreams,
                node_port_addresses or service_proxy.NODE_PORT_ADDRESSES,
                socket_lb,
            )  # fmt: skip
        )
    finally:
        store.close()


def _rootless() -> bool:
    return os.geteuid() != 0


def _service_cidr(base: Path, asked: str | None) -> str:
    """The range Services' cluster IPs come from: the one this state was first served with
    (its Services hold addresses from it), kept in serve/service-cidr. Rootless, a range of
    loopback addresses (network/userspace_proxy.py)."""
    record = base / "service-cidr"
    try:
        kept = record.read_text().strip()
    except FileNotFoundError:
        kept = None
    if kept is not None and asked is not None and asked != kept:
        raise StoreError(
            "Internal",
            f"{base}: its Services have addresses from {kept}; --service-cidr {asked} needs "
            "a state of its own (another --state-dir, or podkit serve --reset)",
        )
    default = userspace_proxy.ROOTLESS_SERVICE_CIDR if _rootless() else services.SERVICE_CIDR
    cidr = kept or asked or default
    loopback = ipaddress.IPv4Network(cidr).subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    if loopback != _rootless():
        why = (
            "without root, Services live on the pods' loopback: a range inside 127.0.0.0/8"
            if _rootless()
            else "as root, cluster IPs are routed to pods: not a loopback range"
        )
        raise StoreError("Internal", f"{base}: service range {cidr}: {why}")
    pods = network.NetworkConfig.from_env().subnet
    if ipaddress.IPv4Network(cidr).overlaps(ipaddress.IPv4Network(pods)):
        raise StoreError("Internal", f"--service-cidr {cidr} overlaps the pods' network {pods}")
    if kept is None:
        record.write_text(cidr + "\n")
    return cidr


def _lock(base: Path) -> int:
    """One serve per state directory (a second would run every pod twice): a lock held while
    it runs, and by --reset while it removes the state."""
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise StoreError(
            "Internal", f"{base}: another podkit serve uses this state directory"
        ) from None
    return lock


def reset(state_dir: Path, say: Callable[[str], None], deadline: float = 60.0) -> int:
    """`podkit serve --reset`: stops every pod podkit serve started (gracefully: each
    supervisor gets SIGTERM and gives its containers their grace periods; SIGKILL after
    `deadline` seconds) and removes serve's state: its objects, certificates, kubeconfig and
    its pods' directories. Images stay: they are `podkit run`'s too (`podkit image prune`)."""
    base, _, db_path = paths(state_dir)
    if not base.exists():
        say(f"podkit serve --reset: nothing to reset in {state_dir}")
        return 0
    lock = _lock(base)
    try:
        uids = {p.stem for p in (base / "pods").glob("*.yaml")}
        if db_path.exists():
            store = ObjectStore(db_path)
            try:
                pods, _ = store.list_prefix(objects.prefix("core", "pods", ""))
                uids |= {p["metadata"]["uid"] for p in pods}
            finally:
                store.close()
        pod_dirs = [d for d in (state_dir / "pods").glob("*_*") if d.name.rsplit("_", 1)[1] in uids]
        stopped = statedir.stop_owners(pod_dirs, deadline)
        for d in pod_dirs:
            statedir.forget(d)
        service_proxy.remove(state_dir)
        shutil.rmtree(base)
    finally:
        os.close(lock)
    say(
        f"podkit serve --reset: {stopped} running pod(s) stopped; removed {base} and "
        f"{len(pod_dirs)} pod director{'y' if len(pod_dirs) == 1 else 'ies'}"
    )
    return 0


async def _run(
    app: web.Application,
    agent: NodeAgent,
    listen: Listen,
    ctx: ssl.SSLContext,
    config_path: Path,
    say: Callable[[str], None],
    keep_pods: bool,
    dns_upstreams: list[tuple[str, int]] | None,
    node_port_addresses: list[str],
    socket_lb: bool,
) -> int:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # Watches and log streams last until their client goes: a stop waits 2 s for them, not 60.
    site = web.TCPSite(
        runner,
        listen.host,
        listen.port,
        ssl_context=ctx,
        shutdown_timeout=2.0,
    )
    await site.start()
    say(f"podkit serve: the API is on {listen.url}")
    say(f"export KUBECONFIG={config_path}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Before the pods: they are told of it.
    dns_server = await _cluster_dns(agent, stop, say, dns_upstreams)
    if dns_server is not None:  # pods can reach serve: on its gateway, or rootless by proxy
        await _kubernetes_service(runner, agent.rest, listen, ctx)
    node = asyncio.ensure_future(agent.run(stop))
    controllers = asyncio.ensure_future(
        manager.run(agent.rest, stop, agent.state_dir, say, node_port_addresses, socket_lb)
    )
    await stop.wait()
    await node
    await controllers
    if not keep_pods:
        say("podkit serve: stopping the pods (--keep-pods leaves them running)")
        await agent.stop_all()
        service_proxy.remove(agent.state_dir)  # its rules go with the pods they lead to
    agent.close()
    if dns_server is not None:
        dns_server.close()
    with contextlib.suppress(Exception):
        await runner.cleanup()
    return 0


async def _kubernetes_service(
    runner: web.AppRunner, rest: Rest, listen: Listen, ctx: ssl.SSLContext
) -> None:
    """default/kubernetes, as every cluster has it: its cluster IP (the range's first address)
    leads to serve, listening on the pods' gateway too (rootless, the Service proxy carries
    it to where serve listens), so KUBERNETES_SERVICE_HOST and KUBERNETES_PORT exist in every
    pod and lead to this API."""
    port = listen.port
    if _rootless():
        address = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
    else:
        address = network.NetworkConfig.from_env().gateway
        with contextlib.suppress(OSError):  # taken: the Service still names it
            site = web.TCPSite(runner, address, port, ssl_context=ctx, shutdown_timeout=2.0)
            await site.start()
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"component": "apiserver", "provider": "kubernetes"}},
           "spec": {"clusterIP": services.reserved(rest.service_cidr)[0],
                    "ports": [{"name": "https", "port": 443, "targetPort": port}]}}  # fmt: skip
    cluster_dns.register_endpoint(rest, svc, address, [("https", port, "TCP")])


def parse_upstream(text: str) -> tuple[str, int]:
    """--dns-upstream IP[:PORT]."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "53")
    try:
        ipaddress.ip_address(host)
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"--dns-upstream {text!r}: expected IP[:PORT]") from None
    return host, int(port)


async def _cluster_dns(
    agent: NodeAgent,
    stop: asyncio.Event,
    say: Callable[[str], None],
    upstreams: list[tuple[str, int]] | None,
) -> ClusterDns | None:
    """The cluster DNS behind the kube-dns Service's cluster IP (the service range's tenth
    address); pods with dnsPolicy ClusterFirst use it. As root, on the pods' bridge gateway,
    port 53 (the Service's rules DNAT to it); rootless, on 127.0.0.1, where the Service proxy
    carries the pods' queries."""
    if not _rootless() and service_proxy.why_not() is not None:
        return None  # as root without nftables: no address for pods to reach it at
    try:
        if upstreams is None:  # the host's resolvers
            upstreams = [(ip, 53) for ip in dns.parse(host_resolv_conf())[0]]
        server = ClusterDns(DOMAIN, upstreams)
        if _rootless():
            host, port = "127.0.0.1", await server.start("127.0.0.1", 0)
        else:
            cfg = network.NetworkConfig.from_env()
            network.ensure_bridge(cfg, network.HOST_DIR)
            host = cfg.gateway
            try:
                port = await server.start(host, 53)
            except OSError as exc:  # most often another podkit serve's
                # Any port does: pods reach the server through its own cluster IP's DNAT.
                port = await server.start(host, 0)
                say(f"podkit serve: cluster DNS on port {port} ({host}:53: {exc})")
    except (OSError, network.NetworkError) as exc:
        say(f"podkit serve: no cluster DNS (pods use the host's resolvers): {exc}")
        return None
    address = services.reserved(agent.rest.service_cidr)[1]
    cluster_dns.register(agent.rest, host, address, port)
    agent.cluster_dns = (address, DOMAIN)
    asyncio.ensure_future(cluster_dns.DnsRecords(agent.rest, server).run(stop))
    return server
