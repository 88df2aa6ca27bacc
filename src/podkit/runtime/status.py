"""Pod and container status in Kubernetes' own shape (pure; no I/O).

ContainerTracker follows one container through Waiting -> Running -> Terminated and restarts;
pod_status() folds the trackers into a PodStatus dict exactly as the API server would show it,
so anything that reads Kubernetes status reads podkit's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerTracker:
    name: str
    image: str
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    pid: int | None = None

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict[str, Any] | None:
        return self.state.get("terminated")

    def waiting(self, reason: str, message: str | None = None) -> None:
        if "terminated" in self.state:
            self.last_state = self.state
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = self.started = False

    def run(self, pid: int) -> None:
        if "terminated" in self.state:
            self.last_state = self.state
        self.pid = pid
        self.state = {"running": {"startedAt": now_rfc3339()}}
        # Without a readiness probe a running container is ready (kubelet default).
        self.ready = self.started = True

    def terminate(
        self, exit_code: int, message: str | None = None, reason: str | None = None
    ) -> None:
        started_at = self.state.get("running", {}).get("startedAt")
        term: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "finishedAt": now_rfc3339(),
        }
        if started_at:
            term["startedAt"] = started_at
        if exit_code > 128:
            term["signal"] = exit_code - 128
        if message:
            term["message"] = message
        self.state = {"terminated": term}
        self.ready = self.started = False
        self.pid = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
        }
        if self.pid is not None:
            out["containerID"] = f"podkit://{self.pid}"
        return out


def should_restart(policy: str, exit_code: int) -> bool:
    """The pod's restartPolicy applied to one exited app container."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def pod_phase(containers: list[ContainerTracker], policy: str, stopping: bool = False) -> str:
    """Kubernetes' phase rules for app containers."""
    terminated = [c.terminated for c in containers]
    if all(t is not None for t in terminated):
        codes = [t["exitCode"] for t in terminated if t is not None]
        if stopping:
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
        if policy == "Always":
            return "Running"  # they are about to be restarted
        if all(code == 0 for code in codes):
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    if any(c.running or c.terminated is not None for c in containers):
        return "Running"
    return "Pending"


@dataclass
class Conditions:
    """Pod conditions with their transition times."""

    times: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def set(self, kind: str, value: bool) -> None:
        old = self.times.get(kind)
        if old is None or old[0] != value:
            self.times[kind] = (value, now_rfc3339())

    def to_list(self) -> list[dict[str, Any]]:
        order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        return [
            {
                "type": k,
                "status": "True" if self.times[k][0] else "False",
                "lastProbeTime": None,
                "lastTransitionTime": self.times[k][1],
            }
            for k in order
            if k in self.times
        ]


def pod_status(
    phase: str,
    conditions: Conditions,
    containers: list[ContainerTracker],
    start_time: str,
    pod_ip: str,
    host_ip: str,
) -> dict[str, Any]:
    ready = bool(containers) and all(c.ready for c in containers)
    conditions.set("ContainersReady", ready)
    conditions.set("Ready", ready)
    return {
        "phase": phase,
        "conditions": conditions.to_list(),
        "hostIP": host_ip,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": [c.to_status() for c in containers],
        "qosClass": "BestEffort",
    }


def ready_summary(containers: list[ContainerTracker]) -> str:
    """kubectl's READY column."""
    return f"{sum(c.ready for c in containers)}/{len(containers)}"


def display_status(phase: str, containers: list[ContainerTracker]) -> str:
    """kubectl's STATUS column: a waiting or terminated reason beats the phase."""
    for c in containers:
        if "waiting" in c.state and c.state["waiting"]["reason"] != "ContainerCreating":
            return str(c.state["waiting"]["reason"])
    if phase == "Pending" and any("waiting" in c.state for c in containers):
        return "ContainerCreating"
    return phase
