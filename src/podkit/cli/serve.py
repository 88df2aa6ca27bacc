"""`podkit serve` and `podkit kubeconfig`."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

from podkit.cli import out
from podkit.cli.parsing import add_state_dir, at_least, command


def add_commands(commands: Any) -> None:
    cmd = command(commands, "serve", serve, "Serve the Kubernetes API that kubectl drives.")
    cmd.add_argument(
        "--listen",
        default="127.0.0.1:6443",
        metavar="HOST:PORT",
        help="Where the API listens (HTTPS with client certificates; default %(default)s).",
    )
    cmd.add_argument(
        "--keep-pods",
        action="store_true",
        help="Leave the pods running when podkit serve stops (the next start adopts them); "
        "by default they are stopped gracefully.",
    )
    cmd.add_argument(
        "--history",
        type=at_least(int, 10),
        default=10_000,
        metavar="REVISIONS",
        help="How many past writes a watch may start from; older resourceVersions get 410 "
        "Gone, as after an etcd compaction (default %(default)s).",
    )
    cmd.add_argument(
        "--dns-upstream",
        action="append",
        metavar="IP[:PORT]",
        help="Where the cluster DNS asks for names outside cluster.local (repeatable); "
        "default: the host's nameservers (/etc/resolv.conf).",
    )
    cmd.add_argument(
        "--service-accounts-may-write",
        action="store_true",
        help="Let pods' service account tokens write in their own namespace (by default they "
        "may only read there; there is no RBAC yet).",
    )
    cmd.add_argument(
        "--service-cidr",
        metavar="CIDR",
        help="Where Services' cluster IPs come from (default 10.96.0.0/12; rootless "
        "127.96.0.0/12, addresses on each pod's loopback; the first address is the "
        "kubernetes Service's, the tenth the cluster DNS's). Two podkit serves on one machine "
        "need ranges of their own. Fixed at a state directory's first start.",
    )
    cmd.add_argument(
        "--node-port-address",
        action="append",
        metavar="IP",
        help="Where NodePorts are published (repeatable; default 127.0.0.1, as podkit publishes "
        "ports; 0.0.0.0 for every interface).",
    )
    cmd.add_argument(
        "--no-socket-lb",
        dest="socket_lb",
        action="store_false",
        help="Leave Services' cluster IPs to the nftables rules alone, as kube-proxy does. By "
        "default a TCP connect() to a cluster IP goes straight to an endpoint (a cgroup BPF "
        "program, as Cilium's socket LB), and so costs no NAT.",
    )
    cmd.add_argument(
        "--reset",
        action="store_true",
        help="Do not serve: stop every pod podkit serve started (gracefully) and remove its "
        "state (objects, certificates, kubeconfig, the pods' directories); images stay.",
    )
    add_state_dir(cmd)
    cmd = command(commands, "kubeconfig", kubeconfig, "Print the kubeconfig of podkit serve.")
    add_state_dir(cmd)


def serve(
    listen: str,
    keep_pods: bool = False,
    history: int = 10_000,
    reset: bool = False,
    dns_upstream: list[str] | None = None,
    service_accounts_may_write: bool = False,
    service_cidr: str | None = None,
    node_port_address: list[str] | None = None,
    socket_lb: bool = True,
    state_dir: Path | None = None,
) -> int:
    """Serve the Kubernetes API on HTTPS until Ctrl-C or SIGTERM: kubectl drives it with the
    kubeconfig written to <state dir>/serve/kubeconfig.yaml (printed as `export KUBECONFIG=...`).
    Pods run on this machine, each under its own supervisor (a `podkit run` of it), which a
    kill of podkit serve does not stop; the next start adopts them."""
    from podkit.api.serve import Listen, parse_upstream
    from podkit.api.serve import reset as reset_state
    from podkit.api.serve import serve as run
    from podkit.api.services import parse_cidr
    from podkit.runtime.statedir import default_state_dir
    from podkit.store.objects import StoreError

    try:
        where = Listen.parse(listen)
        upstreams = [parse_upstream(u) for u in dns_upstream] if dns_upstream else None
        cidr = parse_cidr(service_cidr) if service_cidr is not None else None
        for address in node_port_address or []:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"--node-port-address {address!r}: not an IP address") from None
    except ValueError as exc:
        raise out.fail(str(exc), 2) from None
    try:
        if reset:
            return reset_state(state_dir or default_state_dir(), out.note)
        return run(
            state_dir or default_state_dir(),
            where,
            out.note,
            keep_pods,
            history,
            upstreams,
            service_accounts_may_write,
            cidr,
            node_port_address,
            socket_lb,
        )
    except StoreError as exc:
        raise out.fail(str(exc), 1) from None
    except OSError as exc:
        raise out.fail(f"podkit serve: {exc.strerror or exc}", 1) from None


def kubeconfig(state_dir: Path | None = None) -> int:
    """Print the kubeconfig that podkit serve wrote."""
    from podkit.api.serve import paths
    from podkit.runtime.statedir import default_state_dir

    _, path, _ = paths(state_dir or default_state_dir())
    try:
        sys.stdout.write(path.read_text())
    except FileNotFoundError:
        raise out.fail(f"{path}: no kubeconfig yet: start `podkit serve` first", 1) from None
    return 0
