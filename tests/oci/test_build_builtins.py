"""`podkit image build-builtins`: the built-in images as OCI images, built from Debian's
packages and podkit's own wheel, pushed with podkit's registry client to a registry the test
starts, read back by skopeo, and run from there as registry images: shared layers, a non-root
user, the labels, and a second build (base made again by mmdebstrap) with the same digests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from debian_images import debian_rootfs
from podkit import __version__
from podkit_harness import REPO, free_port, http_get, wait_for, write_manifest
from podman_peer import Podman
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
    tmp = tmp_path_factory.mktemp("build")
    yield build(tmp, "--push", registry.ref("podkit"), "--archive", str(tmp / "images.tar"))


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


def test_the_docker_archive_loads_into_podman_under_the_published_names(
    built: Build, registry: Registry, tmp_path: Path
) -> None:
    """One tarball for `docker load`, `podman load`, `kind load image-archive` and `k3s ctr
    images import`; podman (a store of its own here) loads all five, as the same images."""
    peer = Podman(tmp_path / "podman")
    try:
        loaded = peer.run("load", "-i", str(built.layout.parent / "images.tar")).stdout
        for name, manifest in built.manifests().items():
            ref = registry.ref(f"podkit/{name}:{__version__}")  # --push's prefix
            assert ref in loaded
            got = json.loads(peer.run("image", "inspect", ref).stdout)[0]
            assert got["Id"] == manifest["config"]["digest"].removeprefix("sha256:")
    finally:
        peer.close()


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


# ---------------------------------------------------------------------------------------------
# The same images under another runtime: podman pulls them from the registry and runs the
# examples as `podkit export` writes them for a cluster. Its pods get slirp4netns (podman's
# bridge would leave iptables rules behind; podman 4.3 publishes containerPorts, which the
# host's network or none refuse); the checks run inside the containers.


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    peer = Podman(tmp_path_factory.mktemp("podman"))
    yield peer
    peer.close()


@dataclass
class Played:
    podman: Podman
    manifest: Path

    def exec(self, container: str, code: str) -> str:
        return python_in(self.podman, container, code)

    def logs(self, container: str) -> list[dict[str, Any]]:
        out = self.podman.run("logs", container, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def python_in(podman: Podman, container: str, code: str) -> str:
    """What Python code prints in that container ("" if it fails): the images have python3,
    no curl."""
    got = podman.run("exec", container, "python3", "-c", code, check=False)
    return got.stdout if got.returncode == 0 else ""


def secrets_through_the_store(podman: Podman, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What podman 4.3 (Debian 12) needs to mount a Secret; 4.4 plays the export as it is.
    4.3's kube play stores a Secret of the YAML re-encoded and writes each `data` value to the
    volume without decoding it (base64 text for a PEM file; `stringData`: nothing), so each
    Secret goes to podman's store instead, as a YAML whose `data` holds the plain values, which
    4.3 writes as they are (fixed by podman db4d018711, containers/podman#16269). And 4.3
    dereferences a secret volume's `optional` unchecked (fixed by podman 9a6b701558): it is
    set."""
    out = []
    for doc in docs:
        if doc["kind"] != "Secret":
            out.append(doc)
            continue
        name = doc["metadata"]["name"]
        values = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
        values |= doc.get("stringData", {})
        plain = podman.workdir / f"secret-{name}.yaml"
        plain.write_text(yaml.safe_dump({"kind": "Secret", "data": values}))
        podman.run("secret", "create", name, str(plain))
    for doc in out:
        for volume in doc.get("spec", {}).get("volumes", []):
            if "secret" in volume:
                volume["secret"].setdefault("optional", False)
    return out


@contextlib.contextmanager
def played(
    example: str,
    registry: Registry,
    podman: Podman,
    tmp: Path,
    adapt: Callable[[Podman, list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> Iterator[Played]:
    """examples/EXAMPLE after `podkit export --registry-prefix` (this registry), under
    `podman kube play` (after `adapt`, for what this podman cannot take); taken down after."""
    got = subprocess.run(
        [PODKIT, "export", str(REPO / "examples" / example), "--registry-prefix",
         registry.ref("podkit")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    manifest = tmp / example
    manifest.write_text(got.stdout)
    if adapt is not None:
        docs = adapt(podman, list(yaml.safe_load_all(got.stdout)))
        manifest.write_text(yaml.safe_dump_all(docs))
    podman.run("kube", "play", "--network", "slirp4netns", "--tls-verify=false", str(manifest))
    try:
        yield Played(podman, manifest)
    finally:
        podman.run("kube", "down", str(manifest), check=False)


def fetch(url: str, ca: str | None = None) -> str:
    """Python for `exec`: GET url and print the body (HTTPS: trusting only the `ca` PEM)."""
    context = f"ssl.create_default_context(cadata={ca!r})" if ca else "None"
    return (
        "import ssl, urllib.request; print(urllib.request.urlopen("
        f"{url!r}, timeout=2, context={context}).read().decode())"
    )


def test_podman_runs_the_classic_pod_from_the_published_images(
    built: Build, registry: Registry, podman: Podman, tmp_path: Path
) -> None:
    with played("pod-definition.yaml", registry, podman, tmp_path) as pod:
        info = wait_for(
            "the webapp answering under podman",
            lambda: pod.exec("simple-webapp-simple-webapp", fetch("http://127.0.0.1:8080/api/info")),
            60,
        )  # fmt: skip
        # Its identity comes from the downward API the export added, as on a cluster.
        assert json.loads(info)["pod_name"] == "simple-webapp"
        pod.exec("simple-webapp-simple-webapp", fetch("http://127.0.0.1:8080/under-podman"))

        def shipped() -> dict[str, Any] | None:
            events = pod.logs("simple-webapp-log-agent")
            return next((e for e in events if e.get("path") == "/under-podman"), None)

        event = wait_for("the log-agent printing the enriched event", shipped, 30)
        assert event["status"] == 404
        assert event["kubernetes"]["pod_name"] == "simple-webapp"
        assert event["kubernetes"]["container_name"] == "simple-webapp"
        assert pod.exec("simple-webapp-log-agent", "import os; print(os.getuid())").strip() == (
            "65532"
        )


def test_podman_runs_the_metrics_adapter_example(
    built: Build, registry: Registry, podman: Podman, tmp_path: Path
) -> None:
    with played("adapter-metrics.yaml", registry, podman, tmp_path) as pod:
        app = "webapp-with-metrics-adapter-simple-webapp"
        wait_for("the app under podman", lambda: pod.exec(app, fetch("http://127.0.0.1:8080/")), 60)

        def scraped() -> str | None:
            text = pod.exec(app, fetch("http://127.0.0.1:9102/metrics"))
            return text if "webapp_requests_total" in text else None

        metrics = wait_for("the adapter's metrics", scraped, 30)
        assert "metrics_adapter_up 1" in metrics


def test_podman_runs_the_ambassador_example_with_its_tls(
    built: Build, registry: Registry, podman: Podman, tmp_path: Path
) -> None:
    example = yaml.safe_load_all((REPO / "examples" / "ambassador.yaml").read_text())
    cert = next(d for d in example if d["kind"] == "Secret")["stringData"]["tls.crt"]
    with played(
        "ambassador.yaml", registry, podman, tmp_path, adapt=secrets_through_the_store
    ) as pod:
        app = "webapp-with-ambassador-simple-webapp"
        # TLS by the ambassador, checked against the example's certificate, then the webapp.
        info = wait_for(
            "the webapp through the ambassador's TLS",
            lambda: pod.exec(app, fetch("https://localhost:8443/api/info", ca=cert)),
            60,
        )
        assert json.loads(info)["container"] == "simple-webapp"
        # The app's outbound calls, balanced over the two catalogs by the ambassador's egress.
        answered: set[str] = set()

        def both_catalogs() -> bool:
            call = pod.exec(app, fetch("http://127.0.0.1:8080/api/call?path=/api/info"))
            if call:
                answered.add(json.loads(call)["body"]["container"])
            return answered == {"catalog-1", "catalog-2"}

        wait_for("calls answered by both catalogs", both_catalogs, 30)
        assert pod.exec("webapp-with-ambassador-ambassador", "import os; print(os.getuid())") == (
            "65532\n"
        )


@pytest.mark.slow
def test_the_containerfile_builds_the_same_image_under_podman(
    podman: Podman, tmp_path: Path
) -> None:
    """The Containerfile, for those with Docker or podman and the internet. Docker Hub's
    python:3.12-slim cannot be had here: a stand-in of Debian's python3 and pip (from
    mmdebstrap) takes its place, with pip free to install as on python:3.12-slim; pip fetches
    podkit's dependencies from PyPI."""
    rootfs = debian_rootfs("python3-pip", tmp_path / "debian")
    podman.run("import", str(rootfs), "localhost/debian-python")
    (tmp_path / "stand-in").mkdir()
    (tmp_path / "stand-in" / "Containerfile").write_text(
        "FROM localhost/debian-python\nRUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED\n"
    )
    podman.run(
        "build", "--network", "none", "-t", "localhost/python-slim", str(tmp_path / "stand-in")
    )
    podman.run(
        # pip inside trusts what the host trusts (a network may reach PyPI through a proxy
        # with a CA of its own)
        "build", "--network", "host", "--volume", "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--build-arg", "PYTHON=localhost/python-slim",
        "--target", "simple-webapp", "-t", "localhost/podkit/simple-webapp:built", str(REPO),
        timeout=900,
    )  # fmt: skip
    config = json.loads(
        podman.run("image", "inspect", "localhost/podkit/simple-webapp:built").stdout
    )
    assert config[0]["Config"]["User"] == "65532:65532"
    assert config[0]["Config"]["StopSignal"] == "SIGTERM"
    assert "8080/tcp" in config[0]["Config"]["ExposedPorts"]
    podman.run(
        "run", "-d", "--network", "none", "--name", "built", "localhost/podkit/simple-webapp:built"
    )
    try:
        url = fetch("http://127.0.0.1:8080/api/info")
        got = wait_for("the Containerfile's webapp", lambda: python_in(podman, "built", url), 60)
        assert json.loads(got)["app"] == "simple-webapp"
    finally:
        podman.run("rm", "-f", "built", check=False)
