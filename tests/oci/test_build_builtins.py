"""`podkit image build-builtins`: the built-in images as OCI images, built from Debian's
packages and podkit's own wheel, pushed with podkit's registry client to a registry the test
starts, read back by skopeo, and run from there as registry images: shared layers, a non-root
user, the labels, and a second build (base made again by mmdebstrap) with the same digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from podkit import __version__
from podkit_harness import free_port, http_get, wait_for, write_manifest
from registry_harness import Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap and registry images: root")
PODKIT = str(Path(sys.executable).parent / "podkit")
IMAGES = ("simple-webapp", "log-agent", "ambassador", "metrics-adapter", "auth-adapter")


@dataclass
class Build:
    layout: Path
    seconds: float
    stderr: str

    def manifests(self) -> dict[str, dict[str, Any]]:
        index = json.loads((self.layout / "index.json").read_text())
        out = {}
        for m in index["manifests"]:
            name = m["annotations"]["org.opencontainers.image.ref.name"].split(":")[0]
            out[name] = json.loads(self.blob(m["digest"]))
        return out

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def build(tmp: Path, *args: str, state: Path | None = None) -> Build:
    t0 = time.monotonic()
    got = subprocess.run(
        [PODKIT, "image", "build-builtins", "--output", str(tmp / "layout"),
         "--state-dir", str(state or tmp / "state"), *args],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    return Build(tmp / "layout", time.monotonic() - t0, got.stderr)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[Build]:
    yield build(tmp_path_factory.mktemp("build"), "--push", registry.ref("podkit"))


def test_five_images_share_their_layers_and_say_who_they_are(built: Build) -> None:
    manifests = built.manifests()
    assert sorted(manifests) == sorted(IMAGES)
    layers = {name: [layer["digest"] for layer in m["layers"]] for name, m in manifests.items()}
    assert len({tuple(v) for v in layers.values()}) == 1  # the same three layers
    for name, m in manifests.items():
        config = json.loads(built.blob(m["config"]["digest"]))["config"]
        assert config["Labels"]["org.opencontainers.image.title"] == name
        assert config["User"] == "65532:65532"
        assert config["StopSignal"] == "SIGTERM"
        assert config["Labels"]["org.opencontainers.image.version"] == __version__
        assert config["Labels"]["org.opencontainers.image.licenses"]
        assert config["Labels"]["org.opencontainers.image.source"]
        assert config["Entrypoint"][-1].startswith("podkit.images.")
    assert (
        "8080/tcp"
        in json.loads(built.blob(manifests["simple-webapp"]["config"]["digest"]))["config"][
            "ExposedPorts"
        ]
    )


def test_the_pushed_images_run_as_registry_images_not_as_root(
    built: Build, registry: Registry, tmp_path: Path, podkit: Any
) -> None:
    for name in IMAGES:  # skopeo reads back what podkit's client pushed
        served = registry.inspect(f"podkit/{name}:{__version__}")
        assert served.digest in {m["digest"] for m in _index(built)}
    port = free_port()
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: published}}
        spec:
          initContainers:
          - name: uid
            image: {registry.ref(f"podkit/simple-webapp:{__version__}")}
            command: [id, -u]
          containers:
          - name: simple-webapp
            image: {registry.ref(f"podkit/simple-webapp:{__version__}")}
            ports: [{{containerPort: 8080, hostPort: {port}}}]
          - name: log-agent
            image: {registry.ref(f"podkit/log-agent:{__version__}")}
        """,
    )
    run = podkit("run", m)
    try:
        status, body = wait_for(
            "the webapp from its published image",
            lambda: http_get(f"http://127.0.0.1:{port}/api/info"),
            90,
        )
        assert status == 200 and json.loads(body)["app"] == "simple-webapp"
        assert run.stdout_lines("[uid] ") == ["[uid] 65532"]  # the image's USER, not root
    finally:
        run.stop()


def _index(built: Build) -> list[dict[str, Any]]:
    return json.loads((built.layout / "index.json").read_text())["manifests"]


def test_a_second_build_gives_the_same_digests(
    built: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Built again, the same commit: the same layers and images, byte for byte (the Debian
    root filesystem from the first build's cache, packed again; pip installs again)."""
    again = build(tmp_path_factory.mktemp("again"), state=built.layout.parent / "state")
    assert _index(again) == _index(built)
    sizes = [layer["size"] for layer in built.manifests()["log-agent"]["layers"]]
    # The measures, printed for the note: shared total and each layer (compressed).
    print(f"layers {sizes} bytes, total {sum(sizes) / 1e6:.1f} MB; builds {built.seconds:.0f} s "
          f"(with push) and {again.seconds:.0f} s")  # fmt: skip
    assert sum(sizes) < 150e6 and sizes[-1] < 1e6  # the targets: < 150 MB shared, < 1 MB own


@pytest.mark.slow
def test_a_build_from_scratch_gives_the_same_digests(
    built: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """From scratch (a cache of its own: mmdebstrap makes the root filesystem again)."""
    assert _index(build(tmp_path_factory.mktemp("scratch"))) == _index(built)
