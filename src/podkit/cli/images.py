"""`podkit pull`, `podkit images`, `podkit rmi` and `podkit image prune`: the image store from
the command line, as podman's commands of the same names show it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podkit.cli import out
from podkit.cli.parsing import add_state_dir, command

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from podkit.oci.pull import Pulled
    from podkit.oci.reference import Reference
    from podkit.oci.store import ImageRecord, Store

EXIT_BAD_INPUT = 2


def add_registry_config(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--registry-config",
        type=Path,
        help="Registries file in k3s's registries.yaml format (mirrors, auth, "
        "TLS); default /etc/podkit/registries.yaml as root, else "
        "$XDG_CONFIG_HOME/podkit/registries.yaml.",
    )


_STORE = ", where the image store lives"


def add_commands(commands: Any) -> None:
    cmd = command(commands, "pull", pull, "Pull images into podkit's image store.")
    cmd.add_argument("names", nargs="+", metavar="IMAGE")
    add_state_dir(cmd, _STORE)
    add_registry_config(cmd)
    cmd.add_argument("--quiet", "-q", action="store_true", help="Print only the image IDs.")
    cmd = command(commands, "images", images, "List the images in podkit's store.")
    add_state_dir(cmd, _STORE)
    cmd.add_argument("--output", "-o", metavar="json")
    cmd = command(commands, "rmi", rmi, "Remove images from podkit's store.")
    cmd.add_argument("names", nargs="+", metavar="IMAGE")
    add_state_dir(cmd, _STORE)
    image = commands.add_parser(
        "image", help="Manage the image store.", description="Manage the image store."
    )
    sub = image.add_subparsers(metavar="COMMAND", required=True)
    add_state_dir(command(sub, "prune", prune, "Delete what no image uses."), _STORE)
    cmd = command(
        sub,
        "build-builtins",
        build_builtins,
        "Build the built-in images as OCI images any runtime can pull (images/build.py).",
    )
    cmd.add_argument("--tag", metavar="VERSION", help="Their tag (default: podkit's version).")
    cmd.add_argument(
        "--output",
        type=Path,
        default=Path("podkit-images"),
        metavar="DIR",
        help="The OCI image layout written (default %(default)s): skopeo's oci:DIR:NAME:TAG, "
        "podman load, ctr images import.",
    )
    cmd.add_argument(
        "--push",
        metavar="REGISTRY/PREFIX",
        help="Also push each image to REGISTRY/PREFIX/NAME:TAG, with podkit's registry client.",
    )
    cmd.add_argument(
        "--archive",
        type=Path,
        metavar="FILE",
        help="Also write them as one docker-archive tarball, named PREFIX/NAME:TAG (PREFIX: "
        "--push's, else podkit): docker load, podman load, kind load image-archive, k3s ctr "
        "images import.",
    )
    cmd.add_argument(
        "--project",
        type=Path,
        help="podkit's source tree, whose wheel goes in (default: the one podkit runs from).",
    )
    add_state_dir(cmd, ", where the Debian base is cached")
    add_registry_config(cmd)


def pull(
    names: list[str],
    state_dir: Path | None = None,
    registry_config: Path | None = None,
    quiet: bool = False,
) -> int:
    """Pull images from their registries into podkit's image store."""
    from podkit.oci.hosts import Hosts, RegistryConfigError, load
    from podkit.oci.reference import InvalidReference, parse

    try:
        refs = [parse(name) for name in names]
        hosts = Hosts(load(registry_config))
    except (InvalidReference, RegistryConfigError) as exc:
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    import asyncio

    store = _open_store(state_dir)
    return asyncio.run(_pull_all(store, hosts, refs, quiet))


async def _pull_all(store: Store, hosts: object, refs: list[Reference], quiet: bool) -> int:
    from podkit.oci.hosts import Hosts
    from podkit.oci.manifest import ManifestError
    from podkit.oci.pull import Puller
    from podkit.oci.registry import PullError, RegistryClient
    from podkit.oci.store import StoreError

    assert isinstance(hosts, Hosts)
    client = RegistryClient(hosts)
    code = 0
    try:
        puller = Puller(store, client)
        for ref in refs:
            started = time.monotonic()
            show = _Progress(quiet)
            try:
                pulled = await puller.pull(ref, show)
            except (PullError, ManifestError, StoreError) as exc:
                show.close()
                out.error(str(exc))
                code = 1
                continue
            show.close()
            _report(ref, pulled, time.monotonic() - started, quiet)
    finally:
        await client.close()
    return code


def _report(ref: Reference, pulled: Pulled, seconds: float, quiet: bool) -> None:
    image_id = pulled.record.config.removeprefix("sha256:")
    if quiet:
        print(image_id)
        return
    got = "already present" if not pulled.downloaded else f"{_human(pulled.downloaded)} fetched"
    print(f"{ref}: {pulled.record.digest} ({got}, {seconds:.1f}s)")
    print(image_id)


def _new_bars() -> Progress:
    from rich import progress as bars
    from rich.console import Console

    return bars.Progress(
        bars.TextColumn("{task.description}"),
        bars.BarColumn(),
        bars.DownloadColumn(),
        bars.TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


class _Progress:
    """A bar per layer on a terminal (bytes, rate); otherwise silence until the one line.
    `shared`: bars that several pulls show at once (rich has one live display at a time)."""

    def __init__(self, quiet: bool, shared: RunProgress | None = None) -> None:
        self._bars: Progress | None = None
        self._shared = shared
        self._tasks: dict[str, TaskID] = {}
        self._sizes: dict[str, int] = {}
        if shared is not None:
            self._bars = shared.bars()
        elif not quiet and sys.stderr.isatty():
            self._bars = _new_bars()
            self._bars.start()

    def layer(self, digest: str, size: int, present: bool) -> None:
        if self._bars is not None:
            label = f"{digest[7:19]} {'already present' if present else ''}".strip()
            done = size if present else 0
            self._tasks[digest] = self._bars.add_task(label, total=size, completed=done)
            self._sizes[digest] = size

    def advance(self, digest: str, nbytes: int) -> None:
        if self._bars is not None and digest in self._tasks:
            self._bars.advance(self._tasks[digest], nbytes)

    def layer_done(self, digest: str) -> None:
        if self._bars is not None and digest in self._tasks:
            self._bars.update(self._tasks[digest], completed=self._sizes[digest])

    def close(self) -> None:
        if self._bars is None:
            return
        if self._shared is None:
            self._bars.stop()
            return
        for task in self._tasks.values():
            self._bars.remove_task(task)
        self._shared.release()


class RunProgress:
    """`podkit run` on a terminal: the bars of every pull going on, in one live display that
    lasts while any pull does."""

    def __init__(self) -> None:
        self._bars: Progress | None = None
        self._users = 0

    def for_image(self, ref: Reference) -> _Progress:
        return _Progress(quiet=False, shared=self)

    def bars(self) -> Progress:
        if self._bars is None:
            self._bars = _new_bars()
            self._bars.start()
        self._users += 1
        return self._bars

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._bars is not None:
            self._bars.stop()
            self._bars = None


def images(state_dir: Path | None = None, output: str | None = None) -> int:
    """List the images in podkit's store (REPOSITORY, TAG, IMAGE ID, CREATED, SIZE)."""
    from podkit.oci.reference import parse

    if output not in (None, "json"):
        raise out.fail(f"option -o {output!r}: expected json", EXIT_BAD_INPUT)
    store = _open_store(state_dir)
    records = store.images()
    if output == "json":
        print(json.dumps([_as_json(r) for r in records], indent=2))
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for r in records:
        ref = parse(r.name)
        rows.append(
            (
                ref.name,
                ref.tag or "<none>",
                r.config.removeprefix("sha256:")[:12],
                _ago(r.created),
                _human(r.size),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def rmi(names: list[str], state_dir: Path | None = None) -> int:
    """Remove images from podkit's store (refused while a running pod uses one)."""
    from podkit.oci.prune import prune as collect
    from podkit.oci.reference import InvalidReference, parse

    store = _open_store(state_dir)
    try:
        refs = [parse(name) for name in names]
    except InvalidReference as exc:
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    in_use = _images_in_use(state_dir)
    code = 0
    for ref in refs:
        record = store.get_image(str(ref))
        if record is None:
            out.error(f"{ref}: no such image in the store")
            code = 1
            continue
        if str(ref) in in_use:
            out.error(f"{ref}: in use by running pod {in_use[str(ref)]}: not removed")
            code = 1
            continue
        store.remove_image(str(ref))
        print(f"Untagged: {ref}")
    freed = collect(store)
    if freed.layers or freed.blobs:
        print(f"Deleted: {freed.layers} layers, {freed.blobs} blobs ({_human(freed.nbytes)})")
    return code


def build_builtins(
    tag: str | None = None,
    output: Path = Path("podkit-images"),
    push: str | None = None,
    archive: Path | None = None,
    project: Path | None = None,
    state_dir: Path | None = None,
    registry_config: Path | None = None,
) -> int:
    """Build simple-webapp, log-agent, ambassador, metrics-adapter and auth-adapter as OCI
    images into an OCI layout; write them as a docker-archive and push them when asked."""
    import asyncio

    from podkit import __version__
    from podkit.images import build
    from podkit.oci.hosts import Hosts, RegistryConfigError, load
    from podkit.oci.reference import InvalidReference, parse
    from podkit.runtime.statedir import default_state_dir

    version = tag or __version__
    source = project or Path(build.__file__).resolve().parents[3]
    if not (source / "pyproject.toml").is_file():
        raise out.fail(f"--project {source}: no pyproject.toml: not podkit's source tree", 2)
    try:
        prefix = (push or "").rstrip("/")
        targets = {n: parse(f"{prefix}/{n}:{version}") for n in build.PUBLISHED} if push else {}
        hosts = Hosts(load(registry_config))
    except (InvalidReference, RegistryConfigError) as exc:
        raise out.fail(str(exc), EXIT_BAD_INPUT) from None
    cache = (state_dir or default_state_dir()) / "oci" / "build-cache"
    try:
        built = build.build(output, source, version, cache, out.note)
    except build.BuildError as exc:
        raise out.fail(str(exc), 1) from None
    for name, image in built.tags.items():
        out.note(f"{name}: oci:{output}:{image}")
    if archive is not None:
        from podkit.oci.archive import write_archive

        named = {tag: f"{prefix or 'podkit'}/{name}:{version}" for name, tag in built.tags.items()}
        try:
            write_archive(output, named, archive, build.epoch(source))
        except OSError as exc:
            raise out.fail(f"--archive {archive}: {exc.strerror or exc}", 1) from None
        out.note(f"docker-archive: {archive} ({', '.join(sorted(named.values()))})")
    if targets:
        return asyncio.run(_push_all(built, targets, hosts))
    return 0


async def _push_all(built: Any, targets: dict[str, Reference], hosts: Any) -> int:
    from podkit.oci.push import Pusher
    from podkit.oci.registry import PullError, RegistryClient

    client = RegistryClient(hosts)
    try:
        pusher = Pusher(client, built.layout)
        for name, target in targets.items():
            try:
                done = await pusher.push(built.tags[name], target)
            except PullError as exc:
                out.error(f"push {target}: {exc}")
                return 1
            sent = sum(1 for how in done.blobs.values() if how == "uploaded")
            out.note(f"pushed {target}@{done.digest} ({sent} blob(s) uploaded)")
    finally:
        await client.close()
    return 0


def prune(state_dir: Path | None = None) -> int:
    """Delete layers and blobs no image uses, and downloads left unfinished."""
    from podkit.oci.prune import prune as collect

    freed = collect(_open_store(state_dir))
    print(f"Freed {_human(freed.nbytes)}: {freed.layers} layers, {freed.blobs} blobs")
    return 0


def _images_in_use(state_dir: Path | None) -> dict[str, str]:
    """Normalised image name -> a running pod using it."""
    from podkit.oci.reference import InvalidReference, parse
    from podkit.runtime import podlist
    from podkit.runtime.statedir import default_state_dir

    used: dict[str, str] = {}
    for doc in podlist.load(state_dir or default_state_dir(), False):
        spec = doc.get("spec") or {}
        pod = f"{doc['metadata'].get('namespace', 'default')}/{doc['metadata']['name']}"
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            try:
                used.setdefault(str(parse(c.get("image", ""))), pod)
            except InvalidReference:
                continue
    return used


def _open_store(state_dir: Path | None) -> Store:
    from podkit.oci.store import Store
    from podkit.runtime.statedir import default_state_dir

    root = (state_dir or default_state_dir()) / "oci"
    try:
        return Store(root)
    except OSError as exc:
        raise out.fail(f"image store {root}: {exc.strerror or exc}", 1) from None


def _as_json(r: ImageRecord) -> dict[str, object]:
    return {
        "names": [r.name],
        "id": r.config.removeprefix("sha256:"),
        "digest": r.digest,
        "created": r.created,
        "size": r.size,
    }


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} GB"


def _ago(created: str) -> str:
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("years", 31536000), ("months", 2592000), ("weeks", 604800),
                       ("days", 86400), ("hours", 3600), ("minutes", 60)):  # fmt: skip
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return "Less than a minute ago" if seconds < 60 else "About a minute ago"
