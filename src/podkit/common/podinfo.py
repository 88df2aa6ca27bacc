"""Who am I: the pod and container this process runs in, read from the environment.

On a real cluster users expose these through the downward API as POD_NAME, POD_NAMESPACE,
POD_UID, NODE_NAME and CONTAINER_NAME; podkit's runtime injects PODKIT_* equivalents into every
container. The downward-API names win so a manifest behaves the same on both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class PodInfo:
    pod_name: str | None = None
    namespace: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None
    container_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PodInfo:
        env = os.environ if environ is None else environ

        def pick(*names: str) -> str | None:
            for name in names:
                value = env.get(name)
                if value:
                    return value
            return None

        return cls(
            pod_name=pick("POD_NAME", "PODKIT_POD_NAME"),
            namespace=pick("POD_NAMESPACE", "PODKIT_POD_NAMESPACE"),
            pod_uid=pick("POD_UID", "PODKIT_POD_UID"),
            node_name=pick("NODE_NAME", "PODKIT_NODE_NAME"),
            container_name=pick("CONTAINER_NAME", "PODKIT_CONTAINER_NAME"),
            labels=_parse_labels(pick("POD_LABELS", "PODKIT_POD_LABELS")),
            hostname=pick("HOSTNAME") or socket.gethostname(),
        )


def _parse_labels(raw: str | None) -> dict[str, str]:
    """Labels arrive as a JSON object; anything else is ignored rather than fatal."""
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}
