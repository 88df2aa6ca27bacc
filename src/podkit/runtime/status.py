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
    sidecar: bool = False  # an initContainer with restartPolicy: Always
    has_readiness_probe: bool = False
    image_id: str = ""  # a registry image's repo digest, once pulled

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
        # Without probes a running container is started and ready (kubelet default); with
        # them, the prober sets these.
        self.started = True
        self.ready = not self.has_readiness_probe

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
            "imageID": self.image_id,
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


def init_should_restart(policy: str, exit_code: int) -> bool:
    """A failed init container is retried unless the pod's restartPolicy is Never."""
    return exit_code != 0 and policy != "Never"


def pod_phase(
    containers: list[ContainerTracker],
    policy: str,
    stopping: bool = False,
    init_failed: bool = False,
) -> str:
    """Kubernetes' phase rules; sidecars and init containers count only through init_failed."""
    if init_failed:
        return "Failed"
    if stopping and not any(c.running for c in containers):
        # Stopped on request: what ran decides (a container that never ran is no failure).
        codes = [t["exitCode"] for c in containers if (t := c.terminated) is not None]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    terminated = [c.terminated for c in containers]
    if containers and all(t is not None for t in terminated):
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
    init_containers: list[ContainerTracker],
    start_time: str,
    pod_ip: str,
    host_ip: str,
) -> dict[str, Any]:
    sidecars = [c for c in init_containers if c.sidecar]
    ready = bool(containers) and all(c.ready for c in containers + sidecars)
    conditions.set("ContainersReady", ready)
    conditions.set("Ready", ready)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions.to_list(),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
    }
    if init_containers:
        status["initContainerStatuses"] = [c.to_status() for c in init_containers]
    status["containerStatuses"] = [c.to_status() for c in containers]
    status["qosClass"] = "BestEffort"
    return status


def ready_summary(containers: list[ContainerTracker], init: list[ContainerTracker]) -> str:
    """kubectl's READY column: app containers and native sidecars."""
    counted = containers + [c for c in init if c.sidecar]
    return f"{sum(c.ready for c in counted)}/{len(counted)}"


def _reason(state: dict[str, Any]) -> str | None:
    if "waiting" in state:
        return str(state["waiting"].get("reason") or "") or None
    if "terminated" in state:
        t = state["terminated"]
        return str(t.get("reason") or "") or (
            f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t['exitCode']}"
        )
    return None


def display_status(
    phase: str,
    containers: list[ContainerTracker],
    init: list[ContainerTracker],
    stopping: bool = False,
) -> str:
    """kubectl's STATUS column, computed as kubectl's pod printer does."""
    if stopping and phase not in ("Succeeded", "Failed"):
        return "Terminating"
    reason = phase
    initializing = False
    for i, c in enumerate(init):
        t = c.terminated
        if t is not None and t["exitCode"] == 0:
            continue
        if c.sidecar and c.started:
            continue
        if t is not None:
            reason = f"Init:{_reason(c.state)}"
        elif "waiting" in c.state and c.state["waiting"]["reason"] not in (
            "PodInitializing",
            "ContainerCreating",
        ):
            reason = f"Init:{c.state['waiting']['reason']}"
        else:
            reason = f"Init:{i}/{len(init)}"
        initializing = True
        break
    if initializing:
        return reason
    has_running = False
    for c in reversed(containers):
        r = _reason(c.state)
        if r:
            reason = r
        elif c.running and c.ready:
            has_running = True
    if reason == "Completed" and has_running:
        reason = "Running"  # kubectl: one container done, another still serving
    return reason


def trackers_from_document(
    doc: dict[str, Any],
) -> tuple[list[ContainerTracker], list[ContainerTracker]]:
    """App and init trackers rebuilt from a Pod document (status.json), for `podkit get`."""
    status = doc.get("status", {})
    sidecars = {
        c["name"]
        for c in doc.get("spec", {}).get("initContainers", [])
        if c.get("restartPolicy") == "Always"
    }

    def rebuild(s: dict[str, Any]) -> ContainerTracker:
        return ContainerTracker(
            s["name"],
            s.get("image", ""),
            state=s.get("state", {}),
            last_state=s.get("lastState", {}),
            restart_count=s.get("restartCount", 0),
            ready=s.get("ready", False),
            started=bool(s.get("started")),
            sidecar=s["name"] in sidecars,
        )

    return (
        [rebuild(s) for s in status.get("containerStatuses", [])],
        [rebuild(s) for s in status.get("initContainerStatuses", [])],
    )
