"""Real application images from Debian's packages, for the tests and benchmarks of registry images.

`debian_rootfs(package, cache)` runs `mmdebstrap --variant=apt --include=PACKAGE bookworm` into a
tarball (about 15 s; kept in `cache` for the rest of the run). `layout_from_rootfs()` writes that
tarball as an OCI image layout by hand, split into a few gzip layers, with the config a test
gives; `Registry.push()` then copies it to a registry with skopeo.

The split keeps every directory in the first layer and spreads the other entries over the layers
by size, each hardlink in the layer of its target: a valid image whose layers only add files, and
a pull that has several layers to fetch at once, as real images do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import IO, Any

from registry_harness import OCI_LAYER_GZIP, OCI_MANIFEST, REF_NAME, OciImage, host_arch

SUITE = "bookworm"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

# What Debian's packages need to serve, as the official images set it.
NGINX_CONFIG: dict[str, Any] = {
    "Cmd": ["nginx", "-g", "daemon off;"],
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "ExposedPorts": {"80/tcp": {}},
    "StopSignal": "SIGQUIT",
}


PYTHON_CONFIG: dict[str, Any] = {
    "Cmd": ["python3"],
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
}


def debian_rootfs(package: str, cache: Path) -> Path:
    """A bookworm root filesystem with `package`, as a tarball (built once per `cache`)."""
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"{SUITE}-{package}.tar"
    if not tar.exists():
        if shutil.which("mmdebstrap") is None:
            raise RuntimeError("mmdebstrap is missing: `make debs` installs it")
        partial = cache / f"{SUITE}-{package}.partial.tar"  # mmdebstrap reads the extension
        proc = subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", f"--include={package}", SUITE, str(partial)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap {package} failed:\n{proc.stderr[-3000:]}")
        partial.rename(tar)
    return tar


class _Hashing:
    """A write-only file that hashes (and counts) what goes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def layout_from_rootfs(
    rootfs_tar: Path, layout: Path, tag: str, config: dict[str, Any], layers: int = 3
) -> OciImage:
    """The tarball as an OCI image layout of `layers` gzip layers, tagged `tag`."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(rootfs_tar) as src:
        members = src.getmembers()
        buckets = _split(members, layers)
        descriptors, diff_ids = [], []
        for n in range(layers):
            tmp = layout / f"layer-{n}.tmp"
            with open(tmp, "wb") as raw:
                hashed = _Hashing(raw)  # the blob's digest: the compressed bytes
                with gzip.GzipFile(fileobj=hashed, mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
                    uncompressed = _Hashing(gz)  # the DiffID: the plain tar's
                    with tarfile.open(fileobj=uncompressed, mode="w|") as out:  # type: ignore[call-overload]
                        for member in (m for m, b in zip(members, buckets, strict=True) if b == n):
                            data = src.extractfile(member) if member.isreg() else None
                            out.addfile(member, data)
            diff_ids.append(uncompressed.digest)
            descriptors.append(
                {"mediaType": OCI_LAYER_GZIP, "digest": hashed.digest, "size": hashed.size}
            )
            tmp.rename(blobs / hashed.digest[7:])
    image_config = {
        "architecture": host_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = _blob(blobs, OCI_CONFIG, json.dumps(image_config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": descriptors,
    }
    manifest_desc = _blob(blobs, OCI_MANIFEST, json.dumps(manifest).encode())
    manifest_desc["annotations"] = {REF_NAME: tag}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    (layout / "index.json").write_text(json.dumps(index))
    return OciImage(layout, tag)


def _blob(blobs: Path, media_type: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest[7:]).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _split(members: list[tarfile.TarInfo], layers: int) -> list[int]:
    """The layer of each entry: directories in the first, files spread by size, hardlinks
    with their targets."""
    total = sum(m.size for m in members if m.isreg()) or 1
    where: dict[str, int] = {}
    out: list[int] = []
    done = 0
    for m in members:
        if m.isdir():
            layer = 0
        elif m.islnk():
            layer = where.get(m.linkname, 0)
        else:
            layer = min(layers - 1, done * layers // total)
            done += m.size if m.isreg() else 0
        where[m.name] = layer
        out.append(layer)
    return out
