"""Images podkit writes (`podkit image build-builtins`): reproducible layers in an OCI image
layout, which skopeo, podman, containerd (`ctr images import`) and kind read.

Reproducible: the same files give the same digests, whenever and wherever they are packed.
A layer's tar holds its entries sorted by name, every mtime clamped to SOURCE_DATE_EPOCH's
(as reproducible-builds.org asks), owners by number only, no access or change times; its gzip
has no name and a zero mtime. Configs, manifests and the index are JSON with sorted keys.

Layout (OCI image-layout spec): `oci-layout`, `blobs/sha256/<hex>` and `index.json`, whose
manifests carry `org.opencontainers.image.ref.name` (the tag skopeo's `oci:DIR:TAG` names).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podkit.oci.manifest import OCI_INDEX, OCI_MANIFEST, sha256

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Layer:
    blob: bytes  # the gzip
    diff_id: str  # sha256 of the tar: the image config names layers by it

    @property
    def digest(self) -> str:
        return sha256(self.blob)


def layer_from_dir(root: Path, epoch: int) -> Layer:
    """The files under `root` as one layer (paths relative to it; owners and modes as they
    are; mtimes clamped to `epoch`)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(root):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            if info is None:  # a socket: nothing a tar can hold
                continue
            info.mtime = min(int(info.mtime), epoch)
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    data = raw.getvalue()
    return Layer(_gzip(data), sha256(data))


def _walk(root: Path) -> list[Path]:
    """Every entry under root, parents before children, siblings by name."""
    out: list[Path] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        out.append(path)
        if entry.is_dir(follow_symlinks=False):
            out += _walk(path)
    return out


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout being written: blobs as they come, index.json by write_index()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
        self.manifests: list[dict[str, Any]] = []

    def put(self, data: bytes, media_type: str) -> dict[str, Any]:
        """Store a blob (once: the same content is the same file); its descriptor."""
        digest = sha256(data)
        blob = self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(blob)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_image(self, tag: str, layers: list[Layer], config: dict[str, Any]) -> dict[str, Any]:
        """An image of `layers` (bottom first) with `config` (the image config's own `config`
        and its other fields: architecture, os, created...); its manifest's descriptor."""
        full = {
            **config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.put(_json(full), CONFIG),
            "layers": [self.put(layer.blob, LAYER_GZIP) for layer in layers],
        }
        descriptor = self.put(_json(manifest), OCI_MANIFEST)
        self.manifests = [m for m in self.manifests if m["annotations"][REF_NAME] != tag]
        self.manifests.append({**descriptor, "annotations": {REF_NAME: tag}})
        return descriptor

    def write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests}
        (self.path / "index.json").write_bytes(_json(index))
