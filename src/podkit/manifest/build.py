"""Checked Kubernetes dicts -> the typed model the runtime reads."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator
from typing import Any

from podkit.manifest.document import FieldPath, Manifest
from podkit.manifest.errors import Problem
from podkit.manifest.model import (
    Container,
    ContainerPort,
    KeyValueObject,
    Pod,
    Volume,
    VolumeMount,
)
from podkit.manifest.validation import config_key_error

_HOSTNAME_MAX = 63  # a hostname is one DNS label


def build_pod(m: Manifest, node_name: str) -> Pod:
    """The Pod with Kubernetes' defaults filled in, as the API server would store it."""
    meta = m.data.get("metadata") or {}
    spec = m.data.get("spec") or {}
    grace = spec.get("terminationGracePeriodSeconds")
    return Pod(
        name=meta["name"],
        namespace=m.namespace,
        uid=meta.get("uid") or str(uuid.uuid4()),
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        hostname=spec.get("hostname") or pod_hostname(meta["name"]),
        restart_policy=spec.get("restartPolicy") or "Always",
        termination_grace_period_seconds=30 if grace is None else int(grace),
        containers=[_container(c, False) for c in _dicts(spec.get("containers"))],
        init_containers=[_container(c, True) for c in _dicts(spec.get("initContainers"))],
        volumes=[_volume(v) for v in _dicts(spec.get("volumes"))],
        source=m.source,
        raw=m.data,
        node_name=spec.get("nodeName") or node_name,
        service_account_name=spec.get("serviceAccountName")
        or spec.get("serviceAccount")
        or "default",
    )


def pod_hostname(name: str) -> str:
    """The kubelet's rule: the pod name cut to 63 characters, without a trailing '-' or '.'."""
    return name[:_HOSTNAME_MAX].rstrip("-.") if len(name) > _HOSTNAME_MAX else name


def _dicts(items: list[Any] | None) -> list[dict[str, Any]]:
    return [item for item in items or [] if isinstance(item, dict)]


def _strings(mapping: dict[str, Any] | None) -> dict[str, str]:
    return {key: "" if value is None else str(value) for key, value in (mapping or {}).items()}


def _container(c: dict[str, Any], is_init: bool) -> Container:
    return Container(
        name=c["name"],
        image=c.get("image") or "",
        command=[arg or "" for arg in c.get("command") or []],
        args=[arg or "" for arg in c.get("args") or []],
        working_dir=c.get("workingDir") or None,
        env=_dicts(c.get("env")),
        env_from=_dicts(c.get("envFrom")),
        ports=[_port(p) for p in _dicts(c.get("ports"))],
        volume_mounts=[_mount(v) for v in _dicts(c.get("volumeMounts"))],
        resources=dict(c.get("resources") or {}),
        restart_policy=c.get("restartPolicy") if is_init else None,
        is_init=is_init,
        raw=c,
    )


def _port(p: dict[str, Any]) -> ContainerPort:
    host_port = p.get("hostPort")
    return ContainerPort(
        container_port=int(p["containerPort"]),
        protocol=p.get("protocol") or "TCP",
        name=p.get("name") or None,
        host_port=int(host_port) if host_port else None,
        host_ip=p.get("hostIP") or None,
    )


def _mount(v: dict[str, Any]) -> VolumeMount:
    return VolumeMount(
        name=v["name"],
        mount_path=v["mountPath"],
        read_only=bool(v.get("readOnly")),
        sub_path=v.get("subPath") or None,
    )


def _volume(v: dict[str, Any]) -> Volume:
    sources = [key for key, value in v.items() if key != "name" and value is not None]
    # A volume with no source is an emptyDir: the API server's defaulting.
    kind = sources[0] if sources else "emptyDir"
    return Volume(name=v["name"], kind=kind, source=dict(v.get(kind) or {}))


# --- ConfigMaps and Secrets ----------------------------------------------------------------


def build_key_values(m: Manifest) -> tuple[KeyValueObject, list[Problem]]:
    """A ConfigMap or Secret with every value decoded to bytes, and what was wrong on the way."""
    problems: list[Problem] = []
    if m.kind == "ConfigMap":
        text, binary = m.data.get("data") or {}, m.data.get("binaryData") or {}
        data = _decode_text(m, ("data",), text, problems)
        data.update(_decode_base64(m, ("binaryData",), binary, problems))
        for key in text.keys() & binary.keys():
            problems.append(m.problem(("binaryData", key), "duplicate of key present in data"))
        binary_keys = frozenset(binary)
    else:
        data = _decode_base64(m, ("data",), m.data.get("data") or {}, problems)
        # stringData is a write-only convenience merged over data, as the API server does
        data.update(_decode_text(m, ("stringData",), m.data.get("stringData") or {}, problems))
        binary_keys = frozenset()
    kind = str(m.data.get("type") or "Opaque") if m.kind == "Secret" else ""
    kv = KeyValueObject(m.kind, m.name, m.namespace, data, m.source, binary_keys, kind)
    return kv, problems


def _valid_keys(
    m: Manifest, path: FieldPath, values: dict[str, Any], problems: list[Problem]
) -> Iterator[tuple[str, Any]]:
    """The entries whose key is a valid config key; the others become problems."""
    for key, value in values.items():
        error = config_key_error(key)
        if error is None:
            yield key, value
        else:
            problems.append(m.problem(path + (key,), error))


def _decode_text(
    m: Manifest, path: FieldPath, values: dict[str, Any], problems: list[Problem]
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in _valid_keys(m, path, values, problems):
        out[key] = (value or "").encode("utf-8")
    return out


def _decode_base64(
    m: Manifest, path: FieldPath, values: dict[str, Any], problems: list[Problem]
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in _valid_keys(m, path, values, problems):
        try:
            # Go's decoder, which the API server uses, skips line breaks but nothing else.
            out[key] = base64.b64decode(
                (value or "").replace("\n", "").replace("\r", ""), validate=True
            )
        except (binascii.Error, ValueError):
            hint = "; put plain text under stringData instead" if m.kind == "Secret" else ""
            problems.append(m.problem(path + (key,), f"is not valid base64{hint}"))
    return out
