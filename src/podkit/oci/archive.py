"""The images of an OCI image layout as one `docker-archive` tarball, the file that `docker
load`, `podman load`, `kind load image-archive` and `k3s ctr images import` take: Docker's
manifest.json (each image's config, its layers bottom first, and the names it loads as in
RepoTags) beside the blobs, which keep the layout's paths (`blobs/sha256/<hex>`, as `docker
save` writes them since Docker 25). Layers stay gzip-compressed; every loader named reads them.
Entries are sorted, with the build's mtime: the same layout gives the same tarball.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from podkit.oci.layout import REF_NAME


def write_archive(layout: Path, names: dict[str, str], out: Path, epoch: int) -> None:
    """Write the layout's images tagged as `names`' keys (ref.name in index.json) to `out`, each
    loading as its value (`podkit/log-agent:0.1.0`). Blobs shared by images go in once."""
    index = json.loads((layout / "index.json").read_text())
    refs = {m.get("annotations", {}).get(REF_NAME) for m in index["manifests"]}
    missing = set(names) - refs
    if missing:
        raise ValueError(f"{layout}: no image tagged {', '.join(sorted(missing))}")
    entries: list[dict[str, Any]] = []
    blobs: set[str] = set()
    for descriptor in index["manifests"]:
        ref = descriptor.get("annotations", {}).get(REF_NAME)
        if ref not in names:
            continue
        manifest = json.loads(_blob_path(layout, descriptor["digest"]).read_bytes())
        config, layers = manifest["config"]["digest"], [d["digest"] for d in manifest["layers"]]
        blobs |= {config, *layers}
        entries.append(
            {
                "Config": _name(config),
                "RepoTags": [names[ref]],
                "Layers": [_name(digest) for digest in layers],
            }
        )
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs/", "blobs/sha256/"):
            tar.addfile(_info(directory, 0, epoch, tarfile.DIRTYPE))
        for digest in sorted(blobs):
            path = _blob_path(layout, digest)
            with path.open("rb") as f:
                tar.addfile(_info(_name(digest), path.stat().st_size, epoch), f)
        data = json.dumps(entries, sort_keys=True).encode()
        tar.addfile(_info("manifest.json", len(data), epoch), io.BytesIO(data))
    tmp.replace(out)  # never half a tarball under the name asked for


def _name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / _name(digest)


def _info(name: str, size: int, epoch: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.size, info.mtime, info.type = size, epoch, kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
