"""Typed model of the manifests podkit runs: the contract between manifest/ and runtime/.

Field names follow Kubernetes (snake_case). Sub-objects that the runtime reads only in one place
(env entries, volume sources, resources, probes) stay as the validated Kubernetes dicts (camelCase
keys, exactly as in the YAML) so nothing is lost in translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """Where a document came from, for messages: file path and 1-based document number."""

    file: str
    doc: int

    def __str__(self) -> str:
        return f"{self.file} (document {self.doc})"


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None
    host_port: int | None = None
    host_ip: str | None = None


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str | None = None
    env: list[dict[str, Any]] = field(default_factory=list)  # raw Kubernetes EnvVar dicts
    env_from: list[dict[str, Any]] = field(default_factory=list)  # raw EnvFromSource dicts
    ports: list[ContainerPort] = field(default_factory=list)
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)  # raw ResourceRequirements
    restart_policy: str | None = None  # only on initContainers: "Always" = native sidecar
    is_init: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the validated Container dict


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # emptyDir | hostPath | configMap | secret | downwardAPI | projected | ...
    source: dict[str, Any] = field(default_factory=dict)  # the raw dict under that key


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    hostname: str  # spec.hostname or metadata.name
    restart_policy: str  # Always | OnFailure | Never
    termination_grace_period_seconds: int
    containers: list[Container]
    init_containers: list[Container]
    volumes: list[Volume]
    source: Source
    raw: dict[str, Any]  # the validated Pod document
    node_name: str = ""
    service_account_name: str = "default"


@dataclass(frozen=True)
class KeyValueObject:
    """A ConfigMap or a Secret, its values decoded to bytes."""

    kind: str  # ConfigMap | Secret
    name: str
    namespace: str
    data: dict[str, bytes]
    source: Source
    # keys that came from a ConfigMap's binaryData: files in volumes, but never env values
    binary_keys: frozenset[str] = frozenset()
    type: str = ""  # a Secret's type (kubernetes.io/dockerconfigjson ...)


@dataclass
class Bundle:
    """Everything loaded from the files given on the command line."""

    pods: list[Pod] = field(default_factory=list)
    config_maps: dict[tuple[str, str], KeyValueObject] = field(default_factory=dict)  # (ns, name)
    secrets: dict[tuple[str, str], KeyValueObject] = field(default_factory=dict)
    # Services, as given: the service environment variables of pods in their namespace.
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
