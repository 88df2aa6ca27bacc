"""`podkit export`: the manifests a real cluster needs, from the ones podkit runs (pure).

The documents stay as given, in order (Pods, Deployments, Services, ConfigMaps...), except
that every container image naming a built-in image (`log-agent`, `podkit/log-agent[:tag]`)
becomes the published one, `<registry prefix>/<name>:<tag>`, which `podkit image
build-builtins --push` puts there. Each object is checked against its kind's official schema
first. What the output relies on that podkit does its own way is said, once per place, as a
warning: a node's paths and addresses are not this machine's.

A built-in container also gets, unless it sets them, the downward API's POD_NAME, POD_UID
and CONTAINER_NAME, which the images read first: podkit's runtime gives each container its
pod's identity (PODKIT_POD_NAME...), a cluster only when asked, and the log-agent's events
say which pod they come from everywhere. Only fields podman's `kube play` resolves too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from podkit import __version__
from podkit.images.catalog import builtin_name
from podkit.manifest.document import Manifest

Obj = dict[str, Any]
DEFAULT_PREFIX = "podkit"  # docker.io/podkit/<image>: give --registry-prefix where you push
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# Where each workload kind keeps its pod spec.
_POD_SPEC: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


@dataclass
class Exported:
    documents: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # as given -> as published


def published(image: str, prefix: str, tag: str) -> str | None:
    """The published name of a built-in image (its own tag kept, if it names one); None for
    any other image."""
    name = builtin_name(image)
    if name is None:
        return None
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    given = last.rsplit(":", 1)[1] if ":" in last else None
    return f"{prefix.rstrip('/')}/{name}:{given or tag}"


def export(
    manifests: list[Manifest], prefix: str = DEFAULT_PREFIX, tag: str = __version__
) -> Exported:
    out = Exported()
    for m in manifests:
        doc = copy.deepcopy(m.data)
        where = f"{m.source.file}: {m.kind}/{m.name}"
        spec = _dig(doc, _POD_SPEC.get(m.kind, ()))
        if spec is not None:
            for path, container in _containers(spec):
                image = container.get("image")
                new = published(image, prefix, tag) if isinstance(image, str) else None
                if isinstance(image, str) and new is not None:
                    container["image"] = new
                    out.images[image] = new
                    _add_identity(container)
                    if container.get("imagePullPolicy") == "Never":
                        out.warnings.append(
                            f"{where}: {path}: imagePullPolicy Never: load {new} into the "
                            "cluster's nodes (kind load, k3s ctr images import)"
                        )
                out.warnings += [f"{where}: {path}: {w}" for w in _port_warnings(container)]
            out.warnings += [f"{where}: {w}" for w in _volume_warnings(spec)]
        if m.kind == "Service" and (doc.get("spec") or {}).get("type") == "NodePort":
            out.warnings.append(
                f"{where}: a NodePort: podkit publishes it on 127.0.0.1; a cluster, on "
                "every node's addresses"
            )
        out.documents.append(doc)
    return out


def _add_identity(container: Obj) -> None:
    def field(name: str, path: str) -> Obj:
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    env = container.setdefault("env", [])
    have = {e.get("name") for e in env if isinstance(e, dict)}
    identity = [
        field("POD_NAME", "metadata.name"),
        field("POD_UID", "metadata.uid"),
        {"name": "CONTAINER_NAME", "value": str(container.get("name", ""))},
    ]
    env += [e for e in identity if e["name"] not in have]


def _dig(doc: Obj, path: tuple[str, ...]) -> Obj | None:
    if not path:
        return None
    here: Any = doc
    for key in path:
        here = here.get(key) if isinstance(here, dict) else None
    return here if isinstance(here, dict) else None


def _containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for key in _CONTAINER_LISTS:
        for i, c in enumerate(spec.get(key) or []):
            if isinstance(c, dict):
                yield f"{key}[{i}] {c.get('name', '')}", c


def _port_warnings(container: Obj) -> list[str]:
    return [
        f"hostPort {p['hostPort']}: podkit binds it on 127.0.0.1; a node, on all its addresses"
        for p in container.get("ports") or []
        if isinstance(p, dict) and p.get("hostPort")
    ]


def _volume_warnings(spec: Obj) -> list[str]:
    return [
        f"volume {v.get('name', '')}: hostPath {v['hostPath'].get('path', '')} is a path on "
        "the node the pod lands on, not this machine's"
        for v in spec.get("volumes") or []
        if isinstance(v, dict) and isinstance(v.get("hostPath"), dict)
    ]
