"""The `podkit` command: argparse, so that `podkit run` spends its start-up on the pod.

typer, click and rich cost about 50 ms to import here, a quarter of a pod start (issue 16's
target is 0.8x podman kube play's time); argparse costs about 3 ms. rich still colours the
messages and bars on a terminal (cli/out.py, cli/images.py), imported only there.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podkit import __version__
from podkit.cli import export as _export
from podkit.cli import images as _images
from podkit.cli import out
from podkit.cli import serve as _serve
from podkit.cli.parsing import add_state_dir, at_least, command, env_path

EXIT_BAD_INPUT = 2
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
RELOAD_SIGNAL = signal.SIGUSR1  # re-read FILES (runtime/node.py)


def run(
    files: list[Path],
    grace: int | None = None,
    publish: list[str] | None = None,
    no_publish: bool = False,
    state_dir: Path | None = None,
    image_catalog: Path | None = None,
    registry_config: Path | None = None,
    seccomp_profile_root: Path = Path("/var/lib/kubelet/seccomp"),
    backoff_scale: float = 1.0,
    logs: bool | None = None,
    output: str | None = None,
    colour: bool | None = None,
    cluster_dns: str | None = None,
    cluster_domain: str = "cluster.local",
) -> int:
    """Run the pods in FILES until they finish or you press Ctrl-C.

    Every container runs as a process inside its pod's namespaces (network, UTS, IPC, mount,
    PID); containers of a pod share localhost and volumes. Ctrl-C or SIGTERM stops every
    container gracefully (SIGTERM, grace period, SIGKILL) and exits 0. Exit status: 0 when the
    pods succeeded or were stopped, 1 when a pod failed, 2 for bad input (nothing is started).
    """
    # A stop requested while podkit starts is held until it can stop the pods gracefully
    # (runtime/node.py unblocks these once its handlers are in place).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {RELOAD_SIGNAL})
    # Imports here keep `podkit --help` fast.
    from podkit.images import catalog
    from podkit.manifest.errors import ManifestError
    from podkit.manifest.load import load_files
    from podkit.runtime import forward, linux, node, ports
    from podkit.runtime.hostpath import HostPathError, check_host_paths
    from podkit.runtime.image_pull import ImageManager
    from podkit.runtime.logs import Terminal
    from podkit.runtime.network import NetworkConfig
    from podkit.runtime.pod import RunOptions
    from podkit.runtime.seccomp_bpf import BpfFiles
    from podkit.runtime.security import SecurityOptions, check_pods
    from podkit.runtime.statedir import default_state_dir

    if output not in (None, "json", "yaml"):
        raise out.fail(f"option -o {output!r}: expected json or yaml", EXIT_BAD_INPUT)
    try:
        bundle = load_files(files)
    except ManifestError as exc:
        for problem in exc.problems:
            out.error(str(problem))
        return EXIT_BAD_INPUT
    if not bundle.pods:
        raise out.fail(f"no Pod in {', '.join(map(str, files))}", EXIT_BAD_INPUT)
    for warning in bundle.warnings + ports.unpublished_warnings(bundle.pods):
        out.warning(warning)
    user_images: dict[str, catalog.Image] = {}
    try:
        if image_catalog is not None:
            user_images = catalog.load_user_catalog(image_catalog)
        remaps = [ports.parse_remap(text) for text in publish or []]
        published = ports.plan(bundle.pods, remaps, publish=not no_publish)
        check_host_paths(bundle.pods)
        NetworkConfig.from_env()  # PODKIT_BRIDGE / PODKIT_SUBNET, checked before anything starts
    except (OSError, ValueError, HostPathError) as exc:
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    opts_state_dir = state_dir or default_state_dir()
    bars = None
    if output is None and sys.stderr.isatty():  # a bar per layer while pulling
        from podkit.cli.images import RunProgress

        bars = RunProgress().for_image
    images = ImageManager(opts_state_dir, registry_config, bars)
    pulled = [
        c.image
        for pod in bundle.pods
        for c in [*pod.init_containers, *pod.containers]
        if catalog.resolve(c.image, user_images) is None
    ]
    try:
        if pulled:  # a bad registries file is bad input, found before anything starts
            images.check_config()
    except ValueError as exc:  # hosts.RegistryConfigError
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    try:
        opts_state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise out.fail(
            f"--state-dir {opts_state_dir}: cannot use it: {exc.strerror}", EXIT_BAD_INPUT
        ) from None
    security = SecurityOptions(BpfFiles(opts_state_dir / "seccomp"), seccomp_profile_root)
    errors, warnings = check_pods(bundle.pods, security)
    for warning in warnings:
        out.warning(warning)
    if errors:
        for message in errors:
            out.error(message)
        return EXIT_BAD_INPUT
    why_not = linux.namespaces_available()
    if why_not:
        raise out.fail(why_not, 1)
    listeners = []
    try:
        for p in published:
            listeners.append(forward.bind_listener(p))
    except OSError as exc:
        for sock in listeners:
            sock.close()
        raise out.fail(str(exc.strerror or exc), 1) from None
    opts = RunOptions(
        state_dir=opts_state_dir,
        grace=grace,
        user_images=user_images,
        backoff_scale=backoff_scale,
        security=security,
        images=images,
        cluster_dns=(cluster_dns, cluster_domain) if cluster_dns else None,
    )
    show_logs = logs if logs is not None else output is None
    terminal = Terminal(colour=colour) if show_logs else None
    watch = status_printer(output) if output else None
    return node.run(
        bundle, opts, published, listeners, out.report, terminal, watch, lambda: load_files(files)
    )


def status_printer(output: str) -> Callable[[dict[str, Any]], None]:
    """Writes each Pod document to stdout: one JSON object a line, or YAML documents."""
    import json

    def emit(doc: dict[str, Any]) -> None:
        if output == "json":
            sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        else:
            import yaml

            sys.stdout.write("---\n" + yaml.safe_dump(doc, sort_keys=False))
        sys.stdout.flush()

    return emit


def get(
    resource: str = "pods",
    name: str | None = None,
    namespace: str = "default",
    all_namespaces: bool = False,
    finished: bool = False,
    output: str | None = None,
    state_dir: Path | None = None,
) -> int:
    """List the pods podkit runs, as `kubectl get pods` does (from their status files)."""
    from podkit.runtime import podlist
    from podkit.runtime.statedir import default_state_dir

    if resource not in ("pods", "pod", "po"):
        raise out.fail(f"resource {resource!r}: podkit knows only pods", EXIT_BAD_INPUT)
    if output not in (None, "json", "yaml", "wide"):
        raise out.fail(f"option -o {output!r}: expected json, yaml or wide", EXIT_BAD_INPUT)
    docs = podlist.load(state_dir or default_state_dir(), finished)
    docs = [
        d
        for d in docs
        if (all_namespaces or d["metadata"]["namespace"] == namespace)
        and (name is None or d["metadata"]["name"] == name)
    ]
    if name is not None and not docs:
        raise out.fail(f'pods "{name}" not found', 1)
    if output in ("json", "yaml"):
        doc = docs[0] if name else {"apiVersion": "v1", "kind": "List", "items": docs}
        status_printer(output)(doc)
        return 0
    rows = podlist.table(docs, all_namespaces, wide=output == "wide")
    if len(rows) == 1:
        out.note(f"No resources found in {namespace} namespace.")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def port_forward(
    pod: str,
    ports: list[str],
    namespace: str = "default",
    address: str = "127.0.0.1",
    state_dir: Path | None = None,
) -> int:
    """Forward local ports to a pod that `podkit run` is running, until Ctrl-C."""
    import os

    from podkit.runtime import forward, podlist
    from podkit.runtime.ports import PublishError, parse_forward
    from podkit.runtime.seccomp_bpf import BpfFiles
    from podkit.runtime.seccomp_profile import runtime_default, runtime_default_key
    from podkit.runtime.statedir import default_state_dir

    name = pod.removeprefix("pod/").removeprefix("pods/")
    state = state_dir or default_state_dir()
    try:
        pairs = [parse_forward(text) for text in ports]
        _, sandbox_pid = podlist.find_running(state, namespace, name)
    except PublishError as exc:
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    except LookupError as exc:
        raise out.fail(str(exc), 1) from None
    seccomp = BpfFiles(state / "seccomp").path(runtime_default_key(()), lambda: runtime_default(()))
    confinement = forward.confined_forwarder(seccomp, rootless=os.geteuid() != 0)
    try:
        code = forward.port_forward(
            f"{namespace}/{name}", sandbox_pid, address, pairs, print, confinement
        )
    except OSError as exc:
        raise out.fail(str(exc.strerror or exc), 1) from None
    return code


def version() -> int:
    """Print podkit's version."""
    print(f"podkit {__version__}")
    return 0


def _add_run(commands: Any) -> None:
    cmd = command(commands, "run", run, "Run the pods in FILES until they finish or Ctrl-C.")
    cmd.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="Manifest files (YAML, several documents each): Pods, ConfigMaps, Secrets.",
    )
    cmd.add_argument(
        "--grace",
        type=at_least(int, 0),
        metavar="SECONDS",
        help="Seconds each container gets between SIGTERM and SIGKILL when the pod "
        "stops; overrides the pod's terminationGracePeriodSeconds (default 30).",
    )
    cmd.add_argument(
        "--publish",
        "-p",
        action="append",
        metavar="[IP:]HOST:CONTAINER[@POD]",
        help="Publish a containerPort on another host port or address "
        "(repeatable). Without it every containerPort is published on 127.0.0.1 "
        "at the same number.",
    )
    cmd.add_argument(
        "--no-publish",
        action="store_true",
        help="Publish no containerPort (hostPorts and -p still apply).",
    )
    add_state_dir(cmd, ", where pods keep logs, status and volumes")
    cmd.add_argument(
        "--image-catalog",
        type=Path,
        default=env_path("PODKIT_IMAGE_CATALOG"),
        help="YAML file naming the images that run host programs "
        "(images: {NAME: {command: [...], args: [...]}}); every other name is "
        "pulled from its registry. Default $PODKIT_IMAGE_CATALOG.",
    )
    _images.add_registry_config(cmd)
    cmd.add_argument(
        "--seccomp-profile-root",
        type=Path,
        default=Path("/var/lib/kubelet/seccomp"),
        help="Where seccompProfile.localhostProfile paths start (the kubelet's, as "
        "podman kube play's). Default %(default)s.",
    )
    cmd.add_argument(
        "--backoff-scale",
        type=at_least(float, 0.0),
        default=1.0,
        metavar="FACTOR",
        help="Multiply the restart backoff (10 s doubling to 300 s) by this "
        "factor; 1 (the default) is the kubelet's timing.",
    )
    cmd.add_argument(
        "--logs",
        action=argparse.BooleanOptionalAction,
        help="Stream the containers' output with a [container] prefix "
        "(default: yes, unless -o is given).",
    )
    cmd.add_argument(
        "--output",
        "-o",
        metavar="json|yaml",
        help="Print the Pod, status included, each time its status changes (as "
        "`kubectl get pod -w -o json|yaml` would) instead of the progress lines.",
    )
    cmd.add_argument(
        "--cluster-dns",
        metavar="IP",
        help="The cluster DNS server pods with dnsPolicy ClusterFirst use, as the kubelet's "
        "flag of that name (podkit serve gives its own); default: the host's resolvers.",
    )
    cmd.add_argument(
        "--cluster-domain",
        default="cluster.local",
        metavar="DOMAIN",
        help="The cluster's DNS domain, for the pods' search list (default %(default)s).",
    )
    cmd.add_argument(
        "--color",
        dest="colour",
        action=argparse.BooleanOptionalAction,
        help="Colour the prefixes (default: when stdout is a terminal).",
    )


def _add_get(commands: Any) -> None:
    cmd = command(commands, "get", get, "List the pods podkit runs, as `kubectl get pods`.")
    cmd.add_argument("resource", nargs="?", default="pods", help="pods (or pod, po)")
    cmd.add_argument("name", nargs="?", help="Only this pod.")
    cmd.add_argument("--namespace", "-n", default="default")
    cmd.add_argument("--all-namespaces", "-A", action="store_true", help="Pods of every namespace.")
    cmd.add_argument(
        "--finished", action="store_true", help="Also pods whose podkit run has ended."
    )
    cmd.add_argument("--output", "-o", metavar="json|yaml|wide")
    add_state_dir(cmd, ", as given to `podkit run`")


def _add_port_forward(commands: Any) -> None:
    cmd = command(
        commands,
        "port-forward",
        port_forward,
        "Forward local ports to a pod that `podkit run` is running, until Ctrl-C.",
    )
    cmd.add_argument("pod", help="The pod's name (or pod/NAME).")
    cmd.add_argument(
        "ports",
        nargs="+",
        metavar="[LOCAL:]REMOTE",
        help="REMOTE is a port inside the pod; LOCAL defaults to it, and :REMOTE "
        "picks a free local port.",
    )
    cmd.add_argument("--namespace", "-n", default="default")
    cmd.add_argument(
        "--address", default="127.0.0.1", help="Local address to listen on (default %(default)s)."
    )
    add_state_dir(cmd, ", as given to `podkit run`")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="podkit", description="Run Kubernetes multi-container pods on this Linux machine."
    )
    top.add_argument("--version", action="version", version=f"podkit {__version__}")
    commands = top.add_subparsers(metavar="COMMAND", required=True)
    _add_run(commands)
    _add_get(commands)
    _add_port_forward(commands)
    command(commands, "version", version, "Print podkit's version.")
    _images.add_commands(commands)
    _serve.add_commands(commands)
    _export.add_commands(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    func = args.pop("func")
    try:
        return int(func(**args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
