"""Kubernetes Events for a pod, with the kubelet's reasons and messages (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podkit.runtime.status import now_rfc3339


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # Scheduled, Pulled, Created, Started, Killing, Unhealthy, BackOff, ...
    field_path: str  # the container, as the API server writes it: spec.containers{web}
    message: str
    time: str

    def to_k8s(self, namespace: str, pod: str, uid: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "firstTimestamp": self.time,
            "lastTimestamp": self.time,
            "count": 1,
            "source": {"component": "kubelet"},
            "involvedObject": {
                "kind": "Pod",
                "namespace": namespace,
                "name": pod,
                "uid": uid,
                **({"fieldPath": self.field_path} if self.field_path else {}),
            },
        }


@dataclass
class EventLog:
    """Records events and hands each to `sink` as it happens."""

    sink: Callable[[Event], None] | None = None
    events: list[Event] = field(default_factory=list)

    def add(self, type_: str, reason: str, message: str, field_path: str = "") -> Event:
        event = Event(type_, reason, field_path, message, now_rfc3339())
        self.events.append(event)
        if self.sink is not None:
            self.sink(event)
        return event

    def normal(self, reason: str, message: str, field_path: str = "") -> Event:
        return self.add("Normal", reason, message, field_path)

    def warning(self, reason: str, message: str, field_path: str = "") -> Event:
        return self.add("Warning", reason, message, field_path)


def container_path(name: str, init: bool) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"
