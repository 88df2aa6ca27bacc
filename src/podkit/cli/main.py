"""The `podkit` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from podkit import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Run Kubernetes multi-container pods on this Linux machine.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_BAD_INPUT = 2
_STYLE = {"info": "cyan", "warn": "yellow", "error": "bold red"}


def report(who: str, level: str, message: str) -> None:
    err.print(f"[dim]podkit[/dim] [{_STYLE[level]}]{escape(who)}[/] {escape(message)}")


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
            help="Where pods keep logs, status and volumes "
            "(default /var/lib/podkit as root, or $PODKIT_STATE_DIR).",
        ),
    ] = None,
    image_catalog: Annotated[
        Path | None,
        typer.Option(
            "--image-catalog",
            help="YAML file mapping image names to host commands "
            "(images: {NAME: {command: [...], args: [...]}}).",
        ),
    ] = None,
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
        bool,
        typer.Option(
            "--logs/--no-logs", help="Stream the containers' output with a [container] prefix."
        ),
    ] = True,
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
    # Imports here keep `podkit --help` fast.
    from podkit.images import catalog
    from podkit.manifest.errors import ManifestError
    from podkit.manifest.load import load_files
    from podkit.runtime import forward, linux, node, ports
    from podkit.runtime.hostpath import HostPathError, check_host_paths
    from podkit.runtime.logs import Terminal
    from podkit.runtime.pod import RunOptions
    from podkit.runtime.statedir import default_state_dir

    try:
        bundle = load_files(files)
    except ManifestError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]error:[/] {escape(str(problem))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not bundle.pods:
        raise _fail(f"no Pod in {', '.join(map(str, files))}", EXIT_BAD_INPUT)
    for warning in bundle.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    user_images: dict[str, catalog.Image] = {}
    try:
        if image_catalog is not None:
            user_images = catalog.load_user_catalog(image_catalog)
        remaps = [ports.parse_remap(text) for text in publish or []]
        published = ports.plan(bundle.pods, remaps, publish=not no_publish)
        check_host_paths(bundle.pods)
    except (OSError, ValueError, HostPathError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
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
        state_dir=state_dir or default_state_dir(),
        grace=grace,
        user_images=user_images,
        backoff_scale=backoff_scale,
    )
    terminal = Terminal(colour=colour) if logs else None
    code = node.run(bundle, opts, published, listeners, report, terminal)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print podkit's version."""
    print(f"podkit {__version__}")


def main() -> None:
    app(prog_name="podkit")


if __name__ == "__main__":
    sys.exit(main())
