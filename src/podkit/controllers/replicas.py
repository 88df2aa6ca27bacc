"""The ReplicaSet controller's decisions, pure functions (pkg/controller/replicaset and
controller_utils.go): which pods count, the pods to make, the pods to delete first, and the
status written back. Times are RFC 3339 strings as the API holds them; `now` is passed in.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from podkit.api import selectors

Obj = dict[str, Any]
BURST = 500  # the most pods one sync makes or deletes (the controller's burstReplicas)
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def when(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_active(pod: Obj) -> bool:
    """Counted as one of the replicas: not being deleted, not finished."""
    phase = (pod.get("status") or {}).get("phase")
    return "deletionTimestamp" not in pod["metadata"] and phase not in ("Succeeded", "Failed")


def ready_since(pod: Obj) -> datetime.datetime | None:
    """When the pod last became Ready, or None if it is not Ready."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            if c.get("status") != "True":
                return None
            return when(c.get("lastTransitionTime")) or datetime.datetime.min.replace(
                tzinfo=datetime.UTC
            )
    return None


def is_available(pod: Obj, min_ready_seconds: int, now: datetime.datetime) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds == 0 or since + datetime.timedelta(seconds=min_ready_seconds) <= now


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference that is the object's controller."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def claim(owner: Obj, objects: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """The controller reference manager's claim (ClaimPods, ClaimReplicaSets): the objects
    the owner controls, those its selector matches that are its own or orphans (to adopt);
    and its own that its selector no longer matches (to release)."""
    requirements = selectors.from_label_selector((owner.get("spec") or {}).get("selector"))
    uid = owner["metadata"]["uid"]
    mine, released = [], []
    for obj in objects:
        ref = controller_of(obj)
        if ref is not None and ref.get("uid") != uid:
            continue
        if selectors.labels_match(requirements, obj["metadata"].get("labels")):
            if ref is not None or "deletionTimestamp" not in obj["metadata"]:
                mine.append(obj)
        elif ref is not None:
            released.append(obj)
    return mine, released


def new_pod(owner: Obj, finalizers: tuple[str, ...] = ()) -> Obj:
    """A pod of the owner's template (a ReplicaSet's, a Job's): named `<owner>-<random>`,
    labelled as the template says, controlled by the owner."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    meta = template.get("metadata") or {}
    meta.pop("name", None)
    meta.update(
        generateName=f"{owner['metadata']['name']}-",
        namespace=owner["metadata"]["namespace"],
        ownerReferences=[owner_ref(owner)],
        **({"finalizers": list(finalizers)} if finalizers else {}),
    )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec")}


def _restarts(pod: Obj) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount", 0)) for s in statuses), default=0)


def deletion_order(pods: list[Obj]) -> list[Obj]:
    """Pods in the order the controller deletes them when scaling down (ActivePodsWithRanks):
    unscheduled before scheduled; Pending before Unknown before Running; not ready before
    ready; ready more recently before ready longer; more container restarts before fewer;
    created more recently before created earlier."""
    far = datetime.datetime.max.replace(tzinfo=datetime.UTC)

    def key(pod: Obj) -> tuple[Any, ...]:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        since = ready_since(pod)
        created = when(pod["metadata"].get("creationTimestamp")) or far
        return (
            bool(spec.get("nodeName")),
            _PHASE_ORDER.get(status.get("phase", "Pending"), 0),
            since is not None,
            -(since or far).timestamp(),  # more recently ready first
            -_restarts(pod),
            -created.timestamp(),  # newer first
        )

    return sorted(pods, key=key)


def diff(rs: Obj, pods: list[Obj]) -> int:
    """Pods to make (positive) or delete (negative) now, at most BURST either way."""
    want = int((rs.get("spec") or {}).get("replicas", 1))
    have = len([p for p in pods if is_active(p)])
    return max(-BURST, min(BURST, want - have))


def status(rs: Obj, pods: list[Obj], now: datetime.datetime, failure: str | None = None) -> Obj:
    """The ReplicaSet's status from its pods (calculateStatus). `failure`: why this sync
    could not make or delete the pods it wanted (the error's message); the ReplicaFailure
    condition says so, FailedCreate or FailedDelete, until a sync succeeds."""
    spec = rs.get("spec") or {}
    active = [p for p in pods if is_active(p)]
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds", 0))
    out: Obj = {
        "replicas": len(active),
        "fullyLabeledReplicas": len(
            [
                p
                for p in active
                if template_labels.items() <= (p["metadata"].get("labels") or {}).items()
            ]
        ),
        "readyReplicas": len([p for p in active if ready_since(p) is not None]),
        "availableReplicas": len([p for p in active if is_available(p, min_ready, now)]),
        "terminatingReplicas": len([p for p in pods if "deletionTimestamp" in p["metadata"]]),
        "observedGeneration": rs["metadata"].get("generation", 1),
    }
    conditions = [c for c in (rs.get("status") or {}).get("conditions") or []]
    held = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
    if failure is not None and held is None:
        short = len(active) < int(spec.get("replicas", 1))
        conditions.append({
            "type": "ReplicaFailure", "status": "True",
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": "FailedCreate" if short else "FailedDelete", "message": failure,
        })  # fmt: skip
    elif failure is None and held is not None:
        conditions.remove(held)
    if conditions:
        out["conditions"] = conditions
    return {k: v for k, v in out.items() if v or k in ("replicas", "observedGeneration")}


def next_availability(
    pods: list[Obj], min_ready_seconds: int, now: datetime.datetime
) -> float | None:
    """Seconds until the next ready pod becomes available (minReadySeconds), if one will."""
    waits = []
    for pod in pods:
        since = ready_since(pod)
        if since is not None and is_active(pod):
            due = since + datetime.timedelta(seconds=min_ready_seconds)
            if due > now:
                waits.append((due - now).total_seconds())
    return min(waits) if waits else None
