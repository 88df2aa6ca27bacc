"""The files of configMap, secret, downwardAPI and projected volumes (pure: nothing is written).

As the kubelet's volume plugins build their payload (pkg/volume/configmap, secret, downwardapi,
projected): relative path -> (content, mode). Writing them is the runtime's job.
"""

from __future__ import annotations

import posixpath
from typing import Any

from podkit.manifest.model import Bundle, Pod, Volume
from podkit.manifest.validation import relative_path_error
from podkit.runtime.env import ResolveError, field_value, lookup, resource_value

DEFAULT_MODE = 0o644  # Kubernetes' default for every projected file (420)

Files = dict[str, tuple[bytes, int]]


def projected_files(pod: Pod, volume: Volume, bundle: Bundle) -> Files:
    """Relative path -> (content, mode) for the volume; ResolveError if a reference is missing."""
    source = volume.source
    mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
    if volume.kind == "configMap":
        return _key_files(pod, bundle, "ConfigMap", source.get("name", ""), source, mode)
    if volume.kind == "secret":
        return _key_files(pod, bundle, "Secret", source.get("secretName", ""), source, mode)
    if volume.kind == "downwardAPI":
        return _downward_files(pod, source, mode)
    if volume.kind == "projected":
        return _projected(pod, bundle, source, mode)
    raise ValueError(f"volume {volume.name}: a {volume.kind} volume has no projected files")


def _mode(mode: int | None, default: int) -> int:
    return default if mode is None else mode


def _safe(path: str) -> str:
    """Item paths were validated with the manifest; checked again because we write there."""
    error = relative_path_error(path)
    if error:
        raise ResolveError(f"path {path!r}: {error}")
    return path


def _key_files(
    pod: Pod, bundle: Bundle, kind: str, name: str, source: dict[str, Any], mode: int
) -> Files:
    """configMap and secret: every key as a file, or only the listed items."""
    optional = bool(source.get("optional"))
    found = lookup(bundle, kind, pod.namespace, name, optional)
    if found is None:
        return {}  # an optional object that is missing gives an empty volume
    items = source.get("items") or []
    if not items:
        return {key: (data, mode) for key, data in found.data.items()}
    files: Files = {}
    for item in items:
        key = item["key"]
        if key not in found.data:
            if optional:
                continue
            raise ResolveError(f"{kind.lower()} references non-existent config key: {key}")
        files[_safe(item["path"])] = (found.data[key], _mode(item.get("mode"), mode))
    return files


def _downward_files(pod: Pod, source: dict[str, Any], mode: int) -> Files:
    files: Files = {}
    for item in source.get("items") or []:
        if item.get("fieldRef"):
            content = field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            content = _resource(pod, item["resourceFieldRef"])
        path = posixpath.normpath(_safe(item["path"]))  # filepath.Clean, as the kubelet does
        files[path] = (content.encode("utf-8"), _mode(item.get("mode"), mode))
    return files


def _resource(pod: Pod, selector: dict[str, Any]) -> str:
    # containerName is required in volumes; resource_value looks it up in the pod
    any_container = (pod.containers + pod.init_containers)[0]
    return resource_value(pod, any_container, selector)


def _projected(pod: Pod, bundle: Bundle, source: dict[str, Any], mode: int) -> Files:
    """Several sources in one directory. serviceAccountToken and the like are not supported
    (the manifest loader warns about them) and give no files."""
    files: Files = {}
    for projection in source.get("sources") or []:
        if projection.get("configMap") is not None:
            ref = projection["configMap"]
            files |= _key_files(pod, bundle, "ConfigMap", ref.get("name", ""), ref, mode)
        elif projection.get("secret") is not None:
            ref = projection["secret"]
            files |= _key_files(pod, bundle, "Secret", ref.get("name", ""), ref, mode)
        elif projection.get("downwardAPI") is not None:
            files |= _downward_files(pod, projection["downwardAPI"], mode)
    return files
