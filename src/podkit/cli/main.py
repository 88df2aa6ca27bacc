"""The `podkit` command."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

# typer loads rich's whole help renderer at import (~0.2 s on a small machine), and `podkit
# run` has a 1 s budget to bring a pod up: typer gets rich only when help is asked for (its
# error messages are then click's plain ones). podkit's own output still uses rich.
_WANTS_HELP = len(sys.argv) < 2 or any(arg in ("--help", "-h") for arg in sys.argv[1:])
if not _WANTS_HELP:
    sys.modules["rich"] = None  # type: ignore[assignment]
import typer  # noqa: E402

if not _WANTS_HELP:
    del sys.modules["rich"]
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from podkit import __version__  # noqa: E402
from podkit.cli import images as _images  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run Kubernetes multi-container pods on this Linux machine.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_BAD_INPUT = 2
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_STYLE = {"info": "cyan", "warn": "yellow", "error": "bold red"}


def report(who: str, level: str, message: str) -> None:
    subject = "" if who == "podkit" else f" [{_STYLE[level]}]{escape(who)}[/]"
    err.print(f"[dim]podkit[/dim]{subject} {escape(message)}")


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@app.command()
def run(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Manifest files (YAML, several documents each): Pods, ConfigMaps, Secrets.",
            show_default=False,
        ),
    ],
    grace: Annotated[
        int | None,
        typer.Option(
            "--grace",
            show_default=False,
            min=0,
            help="Seconds each container gets between SIGTERM and SIGKILL when the pod stops; "
            "overrides the pod's terminationGracePeriodSeconds (default 30).",
        ),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            show_default=False,
            metavar="[IP:]HOST:CONTAINER[@POD]",
            help="Publish a containerPort on another host port or address (repeatable). "
            "Without it every containerPort is published on 127.0.0.1 at the same number.",
        ),
    ] = None,
    no_publish: Annotated[
        bool,
        typer.Option(
            "--no-publish", help="Publish no containerPort (hostPorts and -p still apply)."
        ),
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            show_default=False,
            help="Where pods keep logs, status and volumes "
            "(default /var/lib/podkit as root, or $PODKIT_STATE_DIR).",
        ),
    ] = None,
    image_catalog: Annotated[
        Path | None,
        typer.Option(
            "--image-catalog",
            envvar="PODKIT_IMAGE_CATALOG",
            show_default=False,
            help="YAML file naming the images that run host programs "
            "(images: {NAME: {command: [...], args: [...]}}); every other name is pulled "
            "from its registry.",
        ),
    ] = None,
    registry_config: Annotated[
        Path | None,
        typer.Option(
            "--registry-config",
            show_default=False,
            help="Registries file in k3s's registries.yaml format (mirrors, auth, TLS); "
            "default /etc/podkit/registries.yaml as root, else "
            "$XDG_CONFIG_HOME/podkit/registries.yaml.",
        ),
    ] = None,
    seccomp_profile_root: Annotated[
        Path,
        typer.Option(
            "--seccomp-profile-root",
            help="Where seccompProfile.localhostProfile paths start (the kubelet's, as podman "
            "kube play's).",
        ),
    ] = Path("/var/lib/kubelet/seccomp"),
    backoff_scale: Annotated[
        float,
        typer.Option(
            "--backoff-scale",
            min=0.0,
            help="Multiply the restart backoff (10 s doubling to 300 s) by this factor; "
            "1 is the kubelet's timing.",
        ),
    ] = 1.0,
    logs: Annotated[
        bool | None,
        typer.Option(
            "--logs/--no-logs",
            help="Stream the containers' output with a [container] prefix "
            "(default: yes, unless -o is given).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            show_default=False,
            metavar="json|yaml",
            help="Print the Pod, status included, each time its status changes (as "
            "`kubectl get pod -w -o json|yaml` would) instead of the progress lines.",
        ),
    ] = None,
    colour: Annotated[
        bool | None,
        typer.Option(
            "--color/--no-color",
            help="Colour the prefixes (default: when stdout is a terminal).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the pods in FILES until they finish or you press Ctrl-C.

    Every container runs as a process inside its pod's namespaces (network, UTS, IPC, mount,
    PID); containers of a pod share localhost and volumes. Ctrl-C or SIGTERM stops every
    container gracefully (SIGTERM, grace period, SIGKILL) and exits 0. Exit status: 0 when the
    pods succeeded or were stopped, 1 when a pod failed, 2 for bad input (nothing is started).
    """
    # A stop requested while podkit starts is held until it can stop the pods gracefully
    # (runtime/node.py unblocks these once its handlers are in place).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
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
        raise _fail(f"option -o {output!r}: expected json or yaml", EXIT_BAD_INPUT)
    try:
        bundle = load_files(files)
    except ManifestError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]error:[/] {escape(str(problem))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not bundle.pods:
        raise _fail(f"no Pod in {', '.join(map(str, files))}", EXIT_BAD_INPUT)
    for warning in bundle.warnings + ports.unpublished_warnings(bundle.pods):
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    user_images: dict[str, catalog.Image] = {}
    try:
        if image_catalog is not None:
            user_images = catalog.load_user_catalog(image_catalog)
        remaps = [ports.parse_remap(text) for text in publish or []]
        published = ports.plan(bundle.pods, remaps, publish=not no_publish)
        check_host_paths(bundle.pods)
        NetworkConfig.from_env()  # PODKIT_BRIDGE / PODKIT_SUBNET, checked before anything starts
    except (OSError, ValueError, HostPathError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
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
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    try:
        opts_state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(
            f"--state-dir {opts_state_dir}: cannot use it: {exc.strerror}", EXIT_BAD_INPUT
        ) from None
    security = SecurityOptions(BpfFiles(opts_state_dir / "seccomp"), seccomp_profile_root)
    errors, warnings = check_pods(bundle.pods, security)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if errors:
        for message in errors:
            err.print(f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(EXIT_BAD_INPUT)
    why_not = linux.namespaces_available()
    if why_not:
        raise _fail(why_not, 1)
    listeners = []
    try:
        for p in published:
            listeners.append(forward.bind_listener(p))
    except OSError as exc:
        for sock in listeners:
            sock.close()
        raise _fail(str(exc.strerror or exc), 1) from None
    opts = RunOptions(
        state_dir=opts_state_dir,
        grace=grace,
        user_images=user_images,
        backoff_scale=backoff_scale,
        security=security,
        images=images,
    )
    show_logs = logs if logs is not None else output is None
    terminal = Terminal(colour=colour) if show_logs else None
    watch = status_printer(output) if output else None
    code = node.run(bundle, opts, published, listeners, report, terminal, watch)
    raise typer.Exit(code)


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


@app.command()
def get(
    resource: Annotated[str, typer.Argument(help="pods (or pod, po)")] = "pods",
    name: Annotated[str | None, typer.Argument(help="Only this pod.", show_default=False)] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Pods of every namespace.")
    ] = False,
    finished: Annotated[
        bool, typer.Option("--finished", help="Also pods whose podkit run has ended.")
    ] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="json|yaml|wide")] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="As given to `podkit run`.")
    ] = None,
) -> None:
    """List the pods podkit runs, as `kubectl get pods` does (from their status files)."""
    from podkit.runtime import podlist
    from podkit.runtime.statedir import default_state_dir

    if resource not in ("pods", "pod", "po"):
        raise _fail(f"resource {resource!r}: podkit knows only pods", EXIT_BAD_INPUT)
    if output not in (None, "json", "yaml", "wide"):
        raise _fail(f"option -o {output!r}: expected json, yaml or wide", EXIT_BAD_INPUT)
    docs = podlist.load(state_dir or default_state_dir(), finished)
    docs = [
        d
        for d in docs
        if (all_namespaces or d["metadata"]["namespace"] == namespace)
        and (name is None or d["metadata"]["name"] == name)
    ]
    if name is not None and not docs:
        raise _fail(f'pods "{name}" not found', 1)
    if output in ("json", "yaml"):
        doc = docs[0] if name else {"apiVersion": "v1", "kind": "List", "items": docs}
        status_printer(output)(doc)
        return
    rows = podlist.table(docs, all_namespaces, wide=output == "wide")
    if len(rows) == 1:
        err.print(f"No resources found in {namespace} namespace.")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@app.command("port-forward")
def port_forward(
    pod: Annotated[str, typer.Argument(help="The pod's name (or pod/NAME).", show_default=False)],
    ports: Annotated[
        list[str],
        typer.Argument(
            metavar="[LOCAL:]REMOTE...",
            help="REMOTE is a port inside the pod; LOCAL defaults to it, and :REMOTE picks a "
            "free local port.",
            show_default=False,
        ),
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    address: Annotated[
        str, typer.Option("--address", help="Local address to listen on.")
    ] = "127.0.0.1",
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="As given to `podkit run`.")
    ] = None,
) -> None:
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
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except LookupError as exc:
        raise _fail(str(exc), 1) from None
    seccomp = BpfFiles(state / "seccomp").path(runtime_default_key(()), lambda: runtime_default(()))
    confinement = forward.confined_forwarder(seccomp, rootless=os.geteuid() != 0)
    try:
        code = forward.port_forward(
            f"{namespace}/{name}", sandbox_pid, address, pairs, print, confinement
        )
    except OSError as exc:
        raise _fail(str(exc.strerror or exc), 1) from None
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print podkit's version."""
    print(f"podkit {__version__}")


_images.register(app)


def main() -> None:
    app(prog_name="podkit")


if __name__ == "__main__":
    main()
