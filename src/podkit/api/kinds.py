"""The kinds `podkit serve` serves: one small table of behaviour each, as the apiserver's
generic registry has one strategy per kind (discovery names, scope, kubectl's table columns).

Only what differs between kinds lives here; everything else is the shared REST path
(api/rest.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podkit.api import event_versions, services, workloads

Obj = dict[str, Any]


@dataclass(frozen=True)
class Column:
    name: str
    cell: Callable[[Obj, datetime.datetime], Any]
    priority: int = 0  # 1: shown with -o wide only
    type: str = "string"


@dataclass(frozen=True)
class Kind:
    kind: str
    resource: str  # plural, as in URLs
    singular: str
    namespaced: bool
    group: str = ""  # "" is the core group
    version: str = "v1"
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[Column, ...] = field(default_factory=tuple)
    schema: str = ""  # kubernetes-validate's schema file, for fieldValidation
    status: bool = False  # it has a status subresource
    scale: bool = False  # it has a scale subresource (autoscaling/v1 Scale)
    generation: bool = False  # metadata.generation counts its spec's changes
    view: View | None = None  # served from another kind's stored objects
    create_problems: Callable[[Obj], list[tuple[str, str]]] | None = None  # (field, reason)
    prepare: Callable[[Obj], Obj] | None = None  # a new object's defaults
    validate: Callable[[Obj, Obj | None], list[tuple[str, str]]] | None = None  # (new, old)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def stored(self) -> Kind:
        """The kind whose objects the store holds for this one."""
        return self.view.storage if self.view else self

    @property
    def store_group(self) -> str:
        return self.stored.group or "core"


@dataclass(frozen=True)
class View:
    """A kind served from another kind's objects, converted both ways (the apiserver keeps
    one stored version per resource and converts for each API version)."""

    storage: Kind
    outward: Callable[[Obj], Obj]  # stored form -> the served kind's
    inward: Callable[[Obj], Obj]  # the served kind's -> stored form


def age(obj: Obj, now: datetime.datetime) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    return human_duration((now - when).total_seconds())


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as kubectl's AGE column shows it."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _name(obj: Obj, _: datetime.datetime) -> str:
    return str(obj["metadata"]["name"])


def _data_count(obj: Obj, _: datetime.datetime) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


NAME = Column("Name", _name)
AGE = Column("Age", age)

NAMESPACE = Kind(
    "Namespace",
    "namespaces",
    "namespace",
    namespaced=False,
    short_names=("ns",),
    columns=(NAME, Column("Status", lambda o, _: o.get("status", {}).get("phase", "")), AGE),
    schema="namespace-v1.json",
    status=True,
)
CONFIGMAP = Kind(
    "ConfigMap",
    "configmaps",
    "configmap",
    namespaced=True,
    short_names=("cm",),
    columns=(NAME, Column("Data", _data_count, type="integer"), AGE),
    schema="configmap-v1.json",
)
SECRET = Kind(
    "Secret",
    "secrets",
    "secret",
    namespaced=True,
    columns=(
        NAME,
        Column("Type", lambda o, _: o.get("type", "Opaque")),
        Column("Data", _data_count, type="integer"),
        AGE,
    ),
    schema="secret-v1.json",
)


def _pod_cells(obj: Obj) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS, as kubectl prints a pod (runtime/status.py's rules)."""
    from podkit.runtime.status import display_status, ready_summary, trackers_from_document

    apps, init = trackers_from_document(obj)
    status = obj.get("status") or {}
    shown = display_status(status.get("phase", "Pending"), apps, init)
    if obj.get("metadata", {}).get("deletionTimestamp") and shown in ("Running", "Pending"):
        shown = "Terminating"
    ready = ready_summary(apps, init)
    if not apps:  # no container has a status yet: 0 of what the spec has
        ready = f"0/{len((obj.get('spec') or {}).get('containers') or [])}"
    return ready, shown, str(sum(t.restart_count for t in apps + init))


POD = Kind(
    "Pod",
    "pods",
    "pod",
    namespaced=True,
    short_names=("po",),
    categories=("all",),
    columns=(
        NAME,
        Column("Ready", lambda o, _: _pod_cells(o)[0]),
        Column("Status", lambda o, _: _pod_cells(o)[1]),
        Column("Restarts", lambda o, _: _pod_cells(o)[2]),
        AGE,
        Column("IP", lambda o, _: (o.get("status") or {}).get("podIP", "<none>"), priority=1),
        Column("Node", lambda o, _: (o.get("spec") or {}).get("nodeName", "<none>"), priority=1),
        Column("Nominated Node", lambda o, _: "<none>", priority=1),
        Column("Readiness Gates", lambda o, _: "<none>", priority=1),
    ),
    schema="pod-v1.json",
    status=True,
    generation=True,
)


def _involved(obj: Obj, _: datetime.datetime) -> str:
    involved = obj.get("involvedObject") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _last_seen(obj: Obj, now: datetime.datetime) -> str:
    when = obj.get("lastTimestamp") or obj.get("eventTime")
    return age({"metadata": {"creationTimestamp": when}}, now) if when else "<unknown>"


EVENT = Kind(
    "Event",
    "events",
    "event",
    namespaced=True,
    short_names=("ev",),
    columns=(
        Column("Last Seen", _last_seen),
        Column("Type", lambda o, _: o.get("type", "")),
        Column("Reason", lambda o, _: o.get("reason", "")),
        Column("Object", _involved),
        Column("Message", lambda o, _: o.get("message", "")),
    ),
    schema="event-v1.json",
)


def _on_core(
    cell: Callable[[Obj, datetime.datetime], Any],
) -> Callable[[Obj, datetime.datetime], Any]:
    return lambda obj, now: cell(event_versions.to_core(obj), now)


EVENT_V1 = Kind(
    "Event",
    "events",
    "event",
    namespaced=True,
    group="events.k8s.io",
    short_names=("ev",),
    # The apiserver prints both versions from the one internal form: the same columns.
    columns=tuple(Column(c.name, _on_core(c.cell)) for c in EVENT.columns),
    schema="event-events-v1.json",
    view=View(EVENT, event_versions.from_core, event_versions.to_core),
    create_problems=event_versions.create_problems,
)


def _node_ready(obj: Obj, _: datetime.datetime) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return "Ready" if ready and ready[0].get("status") == "True" else "NotReady"


def _node_info(field: str) -> Callable[[Obj, datetime.datetime], str]:
    return lambda o, _: str(((o.get("status") or {}).get("nodeInfo") or {}).get(field, ""))


def _internal_ip(obj: Obj, _: datetime.datetime) -> str:
    addresses = (obj.get("status") or {}).get("addresses") or []
    return next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "<none>")


NODE = Kind(
    "Node",
    "nodes",
    "node",
    namespaced=False,
    short_names=("no",),
    columns=(
        NAME,
        Column("Status", _node_ready),
        Column("Roles", lambda o, _: "control-plane"),
        AGE,
        Column("Version", _node_info("kubeletVersion")),
        Column("Internal-IP", _internal_ip, priority=1),
        Column("External-IP", lambda o, _: "<none>", priority=1),
        Column("OS-Image", _node_info("osImage"), priority=1),
        Column("Kernel-Version", _node_info("kernelVersion"), priority=1),
        Column("Container-Runtime", _node_info("containerRuntimeVersion"), priority=1),
    ),
    schema="node-v1.json",
    status=True,
)
SERVICE_ACCOUNT = Kind(
    "ServiceAccount",
    "serviceaccounts",
    "serviceaccount",
    namespaced=True,
    short_names=("sa",),
    columns=(
        NAME,
        Column("Secrets", lambda o, _: len(o.get("secrets") or []), type="integer"),
        AGE,
    ),
    schema="serviceaccount-v1.json",
)


def _int(path: str, default: int = 0) -> Callable[[Obj, datetime.datetime], int]:
    def cell(obj: Obj, _: datetime.datetime) -> int:
        value: Any = obj
        for part in path.split("."):
            value = (value or {}).get(part)
        return int(value if value is not None else default)

    return cell


def _template(field: str) -> Callable[[Obj, datetime.datetime], str]:
    """CONTAINERS or IMAGES of a workload's pod template, comma-separated."""

    def cell(obj: Obj, _: datetime.datetime) -> str:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        return ",".join(str(c.get(field, "")) for c in spec.get("containers") or [])

    return cell


def _selector(obj: Obj, _: datetime.datetime) -> str:
    from podkit.api.selectors import selector_text

    return selector_text((obj.get("spec") or {}).get("selector")) or "<none>"


_WIDE = (
    Column("Containers", _template("name"), priority=1),
    Column("Images", _template("image"), priority=1),
    Column("Selector", _selector, priority=1),
)
DEPLOYMENT = Kind(
    "Deployment",
    "deployments",
    "deployment",
    namespaced=True,
    group="apps",
    short_names=("deploy",),
    categories=("all",),
    columns=(
        NAME,
        Column(
            "Ready",
            lambda o, n: f"{_int('status.readyReplicas')(o, n)}/{_int('spec.replicas', 1)(o, n)}",
        ),
        Column("Up-to-date", _int("status.updatedReplicas"), type="integer"),
        Column("Available", _int("status.availableReplicas"), type="integer"),
        AGE,
        *_WIDE,
    ),
    schema="deployment-apps-v1.json",
    status=True,
    scale=True,
    generation=True,
    prepare=workloads.defaulted,
    validate=workloads.problems,
)
REPLICASET = Kind(
    "ReplicaSet",
    "replicasets",
    "replicaset",
    namespaced=True,
    group="apps",
    short_names=("rs",),
    categories=("all",),
    columns=(
        NAME,
        Column("Desired", _int("spec.replicas", 1), type="integer"),
        Column("Current", _int("status.replicas"), type="integer"),
        Column("Ready", _int("status.readyReplicas"), type="integer"),
        AGE,
        *_WIDE,
    ),
    schema="replicaset-apps-v1.json",
    status=True,
    scale=True,
    generation=True,
    prepare=workloads.defaulted,
    validate=workloads.problems,
)


def _job_status(obj: Obj, _: datetime.datetime) -> str:
    """kubectl's STATUS of a Job (the apiserver's printer)."""
    conditions = {
        c.get("type")
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    for kind in ("Complete", "Failed"):
        if kind in conditions:
            return kind
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for kind in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if kind in conditions:
            return kind
    return "Running"


def _job_completions(obj: Obj, _: datetime.datetime) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    done = int(status.get("succeeded", 0))
    if spec.get("completions") is not None:
        return f"{done}/{spec['completions']}"
    parallelism = int(spec.get("parallelism", 0))
    return f"{done}/1 of {parallelism}" if parallelism > 1 else f"{done}/1"


def _job_duration(obj: Obj, now: datetime.datetime) -> str:
    status = obj.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if not start:
        return ""
    began = datetime.datetime.fromisoformat(start.replace("Z", "+00:00"))
    until = datetime.datetime.fromisoformat(end.replace("Z", "+00:00")) if end else now
    return human_duration((until - began).total_seconds())


JOB = Kind(
    "Job",
    "jobs",
    "job",
    namespaced=True,
    group="batch",
    categories=("all",),
    columns=(
        NAME,
        Column("Status", _job_status),
        Column("Completions", _job_completions),
        Column("Duration", _job_duration),
        AGE,
        *_WIDE,
    ),
    schema="job-batch-v1.json",
    status=True,
    generation=True,
    prepare=workloads.job_defaulted,
    validate=workloads.job_problems,
)

SERVICE = Kind(
    "Service",
    "services",
    "service",
    namespaced=True,
    short_names=("svc",),
    categories=("all",),
    columns=(
        NAME,
        Column("Type", lambda o, _: (o.get("spec") or {}).get("type", "ClusterIP")),
        Column("Cluster-IP", lambda o, _: (o.get("spec") or {}).get("clusterIP") or "<none>"),
        Column("External-IP", lambda o, _: "<none>"),
        Column("Port(s)", lambda o, _: services.ports_text(o)),
        AGE,
        Column(
            "Selector",
            lambda o, _: (
                ",".join(
                    f"{k}={v}"
                    for k, v in sorted(((o.get("spec") or {}).get("selector") or {}).items())
                )
                or "<none>"
            ),
            priority=1,
        ),
    ),
    schema="service-v1.json",
    status=True,
    prepare=services.defaulted,
    validate=services.problems,
)


def _slice_endpoints(obj: Obj, _: datetime.datetime) -> str:
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


ENDPOINT_SLICE = Kind(
    "EndpointSlice",
    "endpointslices",
    "endpointslice",
    namespaced=True,
    group="discovery.k8s.io",
    columns=(
        NAME,
        Column("AddressType", lambda o, _: o.get("addressType", "")),
        Column(
            "Ports",
            lambda o, _: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
        ),
        Column("Endpoints", _slice_endpoints),
        AGE,
    ),
    schema="endpointslice-discovery-v1.json",
)

KINDS = (
    NAMESPACE, CONFIGMAP, SECRET, POD, EVENT, NODE, SERVICE_ACCOUNT, EVENT_V1, DEPLOYMENT,
    REPLICASET, JOB, SERVICE, ENDPOINT_SLICE,
)  # fmt: skip
BY_RESOURCE = {(k.group, k.resource): k for k in KINDS}
