"""`podkit image build-builtins`: the built-in images as OCI images any runtime can pull.

Each image is three layers, the first two shared by all of them, so five images cost little
more than one:
1. Debian bookworm with python3 and ca-certificates, from Debian's packages (mmdebstrap; no
   Docker engine, no base image from another registry); apt's caches and logs left out.
2. podkit's dependencies, as pip installs them from their wheels (for python3.11, the
   interpreter of that Debian), under /opt/podkit/lib.
3. podkit itself, from the project's own wheel, under /opt/podkit/app (small: its code).
The image config differs: ENTRYPOINT the image's module on python3, a non-root USER
(65532, as distroless images use), STOPSIGNAL SIGTERM, its ports as ExposedPorts, and the OCI
labels (source, version, licenses).

Reproducible: every layer is packed by oci/layout.py (sorted entries, mtimes clamped to
SOURCE_DATE_EPOCH, by default the commit's time; fixed gzip), and mmdebstrap honours
SOURCE_DATE_EPOCH too, so two builds of one commit from the same Debian packages and wheels
give the same digests. The labels say what the project says: its git remote as the source,
its license (NOASSERTION, SPDX's word, where it states none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podkit.images.catalog import BUILTIN
from podkit.oci.layout import Layer, Layout, layer_from_dir
from podkit.oci.manifest import this_platform

SUITE = "bookworm"
PACKAGES = ("python3", "ca-certificates", "tzdata")  # tzdata: the log-agent's `timezone`
UNSAID = "NOASSERTION"  # SPDX's word for a value the project does not state
USER = "65532:65532"
LIB, APP = "/opt/podkit/lib", "/opt/podkit/app"
PUBLISHED = ("simple-webapp", "log-agent", "ambassador", "metrics-adapter", "auth-adapter")
PORTS: dict[str, tuple[str, ...]] = {
    "simple-webapp": ("8080/tcp",),
    "log-agent": ("5170/tcp", "9880/tcp", "2020/tcp"),
    "ambassador": ("9901/tcp",),
    "metrics-adapter": ("9102/tcp", "9103/tcp"),
    "auth-adapter": ("8081/tcp", "9902/tcp"),
}
# apt's caches, lists and logs, and what changes at every run: not part of the image.
_LEFT_OUT = ("var/cache/apt/", "var/lib/apt/lists/", "var/log/", "var/cache/ldconfig/aux-cache")


class BuildError(Exception):
    """A step that failed; the message says which and why."""


@dataclass(frozen=True)
class Built:
    layout: Path
    tags: dict[str, str]  # image name -> tag in the layout


Say = Callable[[str], None]


def epoch(project: Path) -> int:
    """SOURCE_DATE_EPOCH, else the time of the project's last commit, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "") or _git(project, "log", "-1", "--format=%ct")
    return int(value) if value.isdigit() else 0


def _git(project: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def project_labels(project: Path, version: str) -> dict[str, str]:
    import tomllib

    meta = tomllib.loads((project / "pyproject.toml").read_text()).get("project", {})
    license_ = meta.get("license")
    if isinstance(license_, dict):
        license_ = license_.get("text")
    return {
        "org.opencontainers.image.source": _git(project, "remote", "get-url", "origin") or UNSAID,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": license_ or UNSAID,
    }


def image_config(name: str, labels: dict[str, str]) -> dict[str, object]:
    platform = this_platform()
    return {
        "architecture": platform.architecture,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ["/usr/bin/python3", "-m", BUILTIN[name]],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"PYTHONPATH={APP}:{LIB}",
                "PYTHONDONTWRITEBYTECODE=1",
                "LANG=C.UTF-8",
            ],
            "WorkingDir": "/",
            "StopSignal": "SIGTERM",
            "ExposedPorts": {port: {} for port in PORTS.get(name, ())},
            "Labels": {**labels, "org.opencontainers.image.title": name},
        },
    }


def build(out: Path, project: Path, version: str, cache: Path, say: Say) -> Built:
    """Build the images into the OCI layout `out`; `project` is podkit's source tree (its
    wheel is built from it), `cache` keeps the Debian root filesystem between builds."""
    stamp = epoch(project)
    with tempfile.TemporaryDirectory(prefix="podkit-build-") as work:
        tmp = Path(work)
        say(f"base: Debian {SUITE} with {', '.join(PACKAGES)} (mmdebstrap)")
        base = _base_layer(cache, tmp, stamp)
        say("dependencies: pip wheels for python3.11")
        wheel = _wheel(project, tmp, stamp)
        deps = _pip_layer(tmp / "deps", LIB, [str(wheel)], stamp, deps_only=True)
        say(f"podkit {version}: {wheel.name}")
        app = _pip_layer(tmp / "app", APP, [str(wheel)], stamp, deps_only=False)
    layout = Layout(out)
    labels = project_labels(project, version)
    tags = {}
    for name in PUBLISHED:
        tag = f"{name}:{version}"
        layout.add_image(tag, [base, deps, app], image_config(name, labels))
        tags[name] = tag
    layout.write_index()
    return Built(out, tags)


def _base_layer(cache: Path, tmp: Path, stamp: int) -> Layer:
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"{SUITE}-{'-'.join(PACKAGES)}-{stamp}.tar"
    if not tar.exists():
        if shutil.which("mmdebstrap") is None:
            raise BuildError("mmdebstrap is missing (apt-get install mmdebstrap)")
        partial = tar.with_name(tar.stem + ".partial.tar")  # mmdebstrap reads the extension
        done = subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(PACKAGES)}",
             SUITE, str(partial)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(stamp)},
        )  # fmt: skip
        if done.returncode != 0:
            raise BuildError(f"mmdebstrap failed: {done.stderr.strip()[-2000:]}")
        partial.replace(tar)
    root = tmp / "base"
    root.mkdir()
    with tarfile.open(tar) as t:
        members = [m for m in t.getmembers() if not _left_out(m.name)]
        t.extractall(root, members=members, numeric_owner=True, filter="fully_trusted")
    return layer_from_dir(root, stamp)


def _left_out(name: str) -> bool:
    path = name.removeprefix("./")
    return any(path.startswith(p) and path != p.rstrip("/") for p in _LEFT_OUT)


def _wheel(project: Path, tmp: Path, stamp: int) -> Path:
    out = tmp / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(project)],
        capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(stamp)},
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"building podkit's wheel failed: {done.stderr.strip()[-2000:]}")
    (wheel,) = out.glob("podkit-*.whl")
    return wheel


def _pip_layer(root: Path, target: str, wheels: list[str], stamp: int, deps_only: bool) -> Layer:
    """pip's install of podkit (or of only its dependencies) under `target` in a layer."""
    where = root / target.lstrip("/")
    where.mkdir(parents=True)
    if deps_only:
        listed = subprocess.run(
            [sys.executable, "-c",
             "import sys; from importlib.metadata import requires; "
             "print('\\n'.join(r for r in requires('podkit') if 'extra ==' not in r))"],
            capture_output=True, text=True,
        )  # fmt: skip
        args = [a for a in listed.stdout.splitlines() if a]
    else:
        args = [*wheels, "--no-deps"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target",
         str(where), "--only-binary=:all:", "--python-version", "3.11",
         "--implementation", "cp", "--platform", f"manylinux_2_36_{_machine()}",
         "--platform", f"manylinux2014_{_machine()}", "--no-warn-script-location", *args],
        capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(stamp)},
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"pip install into {target} failed: {done.stderr.strip()[-2000:]}")
    for cache in where.rglob("__pycache__"):
        shutil.rmtree(cache)
    # What says how and from where pip installed (a temporary wheel's path): not the
    # package's, and not the same twice. RECORD, which lists the files, loses their lines.
    noise = ("REQUESTED", "INSTALLER", "direct_url.json")
    for info in where.glob("*.dist-info"):
        for name in noise:
            (info / name).unlink(missing_ok=True)
        record = info / "RECORD"
        if record.exists():
            kept = [line for line in record.read_text().splitlines()
                    if line.split(",", 1)[0].rsplit("/", 1)[-1] not in noise]  # fmt: skip
            record.write_text("".join(f"{line}\n" for line in kept))
    return layer_from_dir(root, stamp)


def _machine() -> str:
    return os.uname().machine
