"""Images podkit writes (oci/layout.py): a layer is the same bytes whenever its files are
packed, and the OCI layout is one that skopeo copies to a registry and podkit runs from it."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from podkit.oci.layout import Layout, layer_from_dir
from podkit.oci.manifest import this_platform
from podkit_harness import write_manifest
from registry_harness import OciImage, Registry

EPOCH = 1_700_000_000  # SOURCE_DATE_EPOCH of the tests


def tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")  # busybox-static: the Makefile's
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("built by podkit\n")
    os.link(root / "etc" / "motd", root / "etc" / "motd.hard")
    (root / "etc" / "secret").write_text("x")
    (root / "etc" / "secret").chmod(0o600)
    return root


def test_a_layer_is_the_same_bytes_whenever_it_is_packed(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    first = layer_from_dir(root, EPOCH)
    later = time.time() + 100
    for path in root.rglob("*"):
        os.utime(path, (later, later), follow_symlinks=False)
    again = layer_from_dir(root, EPOCH)
    assert (again.digest, again.diff_id) == (first.digest, first.diff_id)
    with tarfile.open(fileobj=io.BytesIO(first.blob)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["bin", "bin/busybox", "bin/sh", "etc", "etc/motd", "etc/motd.hard",
                     "etc/secret"]  # fmt: skip
    assert all(m.mtime <= EPOCH for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["bin/sh"].issym() and by_name["etc/motd.hard"].islnk()
    assert by_name["etc/secret"].mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="registry images run as root here")
def test_podkit_runs_an_image_it_wrote(tmp_path: Path, registry: Registry, podkit: Any) -> None:
    layout = Layout(tmp_path / "layout")
    host = this_platform()
    layout.add_image(
        "box",
        [layer_from_dir(tree(tmp_path / "root"), EPOCH)],
        {"architecture": host.architecture, "os": "linux",
         "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat /etc/motd"],
                    "Env": ["PATH=/bin"]}},
    )  # fmt: skip
    layout.write_index()
    pushed = registry.push(OciImage(layout.path, "box"), "built/box:1")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: built}}
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: {pushed.reference}}}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(60) == 0, run.text()
    assert "[c] built by podkit" in run.out
