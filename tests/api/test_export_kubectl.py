"""`podkit export`'s output through the real kubectl: `apply --dry-run=client -o yaml`
against podkit serve (the API kubectl asks what each kind is) gives back the same objects,
with the published image names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from serve_harness import Served, serving

from podkit_harness import REPO

PODKIT = str(Path(sys.executable).parent / "podkit")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("export")) as s:
        yield s


@pytest.mark.parametrize(
    "example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_kubectl_takes_the_exported_objects_as_they_are(served: Served, example: Path) -> None:
    exported = subprocess.run(
        [PODKIT, "export", str(example), "--registry-prefix", "127.0.0.1:5000/podkit"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    docs = [d for d in yaml.safe_load_all(exported.stdout) if d]
    got = served.kubectl(
        "apply", "--dry-run=client", "-o", "yaml", "-f", "-", stdin=exported.stdout
    )
    assert got.returncode == 0, got.stderr
    back = yaml.safe_load(got.stdout)
    items = back["items"] if back.get("kind") == "List" else [back]
    for item, doc in zip(items, docs, strict=True):  # what kubectl adds, taken off
        meta = item["metadata"]
        meta.get("annotations", {}).pop(LAST_APPLIED, None)
        if not meta.get("annotations"):
            meta.pop("annotations", None)
        if "namespace" not in doc["metadata"]:
            assert meta.pop("namespace") == "default"
    assert items == docs
