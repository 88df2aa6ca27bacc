"""The ConfigMaps and Secrets a pod reads, and where (pure: from the pod's raw spec).

The kubelet waits for the ones a pod needs: a volume's source that is missing keeps the pod
in ContainerCreating (FailedMount), an env reference keeps its container in
CreateContainerConfigError; optional ones, and imagePullSecrets, never hold a pod back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CONFIGMAP, SECRET = "ConfigMap", "Secret"


@dataclass(frozen=True)
class Reference:
    kind: str  # ConfigMap | Secret
    name: str
    optional: bool
    volume: str = ""  # the volume that projects it, or "" for env and imagePullSecrets


def references(spec: dict[str, Any]) -> list[Reference]:
    found = list(_volumes(spec)) + list(_env(spec))
    found += [
        Reference(SECRET, str(s.get("name") or ""), True)
        for s in spec.get("imagePullSecrets") or []
        if isinstance(s, dict)
    ]
    return list(dict.fromkeys(found))


def _volumes(spec: dict[str, Any]) -> Iterator[Reference]:
    for volume in spec.get("volumes") or []:
        name = str(volume.get("name") or "")
        if volume.get("configMap") is not None:
            yield _ref(CONFIGMAP, volume["configMap"], "name", name)
        if volume.get("secret") is not None:
            yield _ref(SECRET, volume["secret"], "secretName", name)
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("configMap") is not None:
                yield _ref(CONFIGMAP, source["configMap"], "name", name)
            if source.get("secret") is not None:
                yield _ref(SECRET, source["secret"], "name", name)


def _env(spec: dict[str, Any]) -> Iterator[Reference]:
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for var in c.get("env") or []:
            source = var.get("valueFrom") or {}
            if source.get("configMapKeyRef") is not None:
                yield _ref(CONFIGMAP, source["configMapKeyRef"], "name")
            if source.get("secretKeyRef") is not None:
                yield _ref(SECRET, source["secretKeyRef"], "name")
        for source in c.get("envFrom") or []:
            if source.get("configMapRef") is not None:
                yield _ref(CONFIGMAP, source["configMapRef"], "name")
            if source.get("secretRef") is not None:
                yield _ref(SECRET, source["secretRef"], "name")


def _ref(kind: str, ref: dict[str, Any], key: str, volume: str = "") -> Reference:
    return Reference(kind, str(ref.get(key) or ""), bool(ref.get("optional")), volume)
