"""Manifests, indexes and image configs (pure): what a registry's JSON says, checked.

Media types: OCI and Docker schema 2 manifests and their lists (an OCI index, a Docker manifest
list) are read; schema 1 is refused (deprecated since 2017; distribution 2.8 still serves it).
An index is resolved to this machine's platform as containerd does: os and architecture must
match, and the variant (arm's v7, v8) when the machine has one; the first match wins.

Layers are known by their DiffID (the digest of the uncompressed tar, from the config) and kept
by ChainID, so the same content compressed differently, or pulled under another name, is
unpacked once (containerd's snapshotter keys, the OCI image spec's ChainID).
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass, field
from typing import Any

import orjson

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
# Every type named: distribution 2.8 answers 404 for an OCI manifest not asked for by type.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)


class ManifestError(ValueError):
    """A manifest, index or config that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def this_platform() -> Platform:
    """This machine, in OCI's words (Go's GOARCH)."""
    machine = platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i686": ("386", ""),
        "i386": ("386", ""),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


def media_type(data: bytes, header: str | None) -> str:
    """The document's media type: its own `mediaType`, else the Content-Type it came with."""
    doc = _load(data, "manifest")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return SCHEMA1[0]
    kind = (header or "").split(";")[0].strip()
    if kind in INDEXES or kind in MANIFESTS:
        return kind
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def check_supported(kind: str) -> None:
    if kind in SCHEMA1:
        raise ManifestError(
            "image manifest is Docker schema 1, deprecated since 2017 and not supported: "
            "push the image again with a current docker, buildah or skopeo"
        )
    if kind not in INDEXES and kind not in MANIFESTS:
        raise ManifestError(f"unsupported manifest media type {kind!r}")


def choose(data: bytes, want: Platform) -> Descriptor:
    """The manifest of an index for the platform `want`."""
    doc = _load(data, "index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ManifestError("index has no manifests list")
    offered: list[str] = []
    for entry in entries:
        desc = _descriptor(entry, "index manifests[]")
        p = desc.platform
        parts = (p.get("os", "?"), p.get("architecture", "?"), p.get("variant"))
        offered.append("/".join(x for x in parts if x))
        if p.get("os") != want.os or p.get("architecture") != want.architecture:
            continue
        if want.variant and p.get("variant") and p["variant"] != want.variant:
            continue
        return desc
    raise ManifestError(
        f"no image for {want} in the index (it has: {', '.join(offered) or 'nothing'})"
    )


def parse_manifest(data: bytes) -> Manifest:
    doc = _load(data, "manifest")
    kind = doc.get("mediaType") or OCI_MANIFEST
    config = _descriptor(doc.get("config"), "manifest config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no layers list")
    descs = tuple(_descriptor(item, f"manifest layers[{i}]") for i, item in enumerate(layers))
    for i, desc in enumerate(descs):
        if desc.media_type not in LAYER_TYPES:
            raise ManifestError(f"manifest layers[{i}]: unsupported media type {desc.media_type!r}")
    return Manifest(kind, config, descs)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What an image config says about running it (OCI image spec `config`)."""

    platform: Platform
    diff_ids: tuple[str, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    created: str = ""


def parse_config(data: bytes) -> ImageConfig:
    doc = _load(data, "image config")
    rootfs = doc.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ManifestError("image config has no rootfs.diff_ids")
    run = doc.get("config") or {}
    if not isinstance(run, dict):
        raise ManifestError("image config: `config` is not an object")
    return ImageConfig(
        platform=Platform(
            str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", ""))
        ),
        diff_ids=tuple(diff_ids),
        entrypoint=_strings(run.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(run.get("Cmd"), "Cmd"),
        env=_strings(run.get("Env"), "Env"),
        working_dir=str(run.get("WorkingDir") or ""),
        user=str(run.get("User") or ""),
        stop_signal=str(run.get("StopSignal") or ""),
        exposed_ports=tuple(sorted((run.get("ExposedPorts") or {}).keys())),
        created=str(doc.get("created") or ""),
    )


def chain_ids(diff_ids: tuple[str, ...]) -> list[str]:
    """ChainID of each layer: the first is its DiffID, then sha256("<parent chain> <diff>")."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else sha256(f"{out[-1]} {diff}".encode()))
    return out


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: not a descriptor")
    digest, size = value.get("digest"), value.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ManifestError(f"{where}: digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: bad size {size!r}")
    plat = value.get("platform") or {}
    platform_fields = {k: str(v) for k, v in plat.items() if isinstance(v, str)}
    return Descriptor(str(value.get("mediaType", "")), digest, size, platform_fields)


def _strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"image config: {name} is not a list of strings")
    return tuple(value)
