"""The Deployment controller's decisions, pure functions (pkg/controller/deployment and its
util/deployment_util.go): the pod-template-hash, the rolling-update fenceposts and how far
the new and old ReplicaSets scale in one step, revisions, and the status with its Available
and Progressing conditions. ReplicaSets are API objects (dicts); `now` is passed in.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from typing import Any

from podkit.controllers.replicas import owner_ref, when

Obj = dict[str, Any]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX = "deployment.kubernetes.io/max-replicas"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's alphabet
# Annotations a Deployment does not pass on to its ReplicaSets (skipCopyAnnotation).
_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, DESIRED, MAX,
               "deployment.kubernetes.io/revision-history"}  # fmt: skip


def replicas(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def _status(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field, 0))


def template_hash(template: Obj, collisions: int = 0) -> str:
    """The pod-template-hash of a template: FNV-32a of its canonical form (and the collision
    count), written in the alphabet the controller uses for names."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collisions:
        data += str(collisions).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[b % len(_SAFE)] for b in str(h).encode())


def _scaled(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods: surge rounds up, unavailable down; when both come
    to 0, one pod may be unavailable (ResolveFenceposts)."""
    rolling = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    desired = replicas(deployment)
    surge = _scaled(rolling.get("maxSurge", "25%"), desired, True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def is_recreate(deployment: Obj) -> bool:
    return ((deployment.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate"


def max_unavailable(deployment: Obj) -> int:
    desired = replicas(deployment)
    if is_recreate(deployment) or desired == 0:
        return 0
    return min(fenceposts(deployment)[1], desired)


def _without_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return template


def by_age(sets: list[Obj]) -> list[Obj]:
    return sorted(
        sets, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"])
    )


def find_new(deployment: Obj, sets: list[Obj]) -> Obj | None:
    """The ReplicaSet whose template is the Deployment's, its hash label aside (the oldest,
    if several)."""
    wanted = _without_hash((deployment.get("spec") or {}).get("template") or {})
    for rs in by_age(sets):
        if _without_hash((rs.get("spec") or {}).get("template") or {}) == wanted:
            return rs
    return None


def revision(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def copied_annotations(deployment: Obj) -> dict[str, str]:
    return {
        k: v
        for k, v in (deployment["metadata"].get("annotations") or {}).items()
        if k not in _NOT_COPIED
    }


def new_replica_set(deployment: Obj, old: list[Obj], count: int) -> Obj:
    """The ReplicaSet of the Deployment's current template: `<name>-<hash>`, the hash in its
    selector, template and labels, the next revision, controlled by the Deployment."""
    spec = deployment.get("spec") or {}
    collisions = int((deployment.get("status") or {}).get("collisionCount", 0))
    template = copy.deepcopy(spec.get("template") or {})
    pod_hash = template_hash(_without_hash(template), collisions)
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
    selector = copy.deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    surge = fenceposts(deployment)[0] if not is_recreate(deployment) else 0
    annotations = {
        **copied_annotations(deployment),
        REVISION: str(max((revision(rs) for rs in old), default=0) + 1),
        DESIRED: str(replicas(deployment)),
        MAX: str(replicas(deployment) + surge),
    }
    meta = deployment["metadata"]
    rs_spec: Obj = {"replicas": count, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "namespace": meta["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": annotations,
            "ownerReferences": [owner_ref(deployment)],
        },
        "spec": rs_spec,
    }


def new_count(deployment: Obj, all_sets: list[Obj], new: Obj) -> int:
    """The new ReplicaSet's replicas after one step (NewRSNewReplicas): all at once for
    Recreate; for a rolling update, up to desired + maxSurge pods in all, never past desired."""
    desired = replicas(deployment)
    if is_recreate(deployment):
        return desired
    surge = fenceposts(deployment)[0]
    current = sum(replicas(rs) for rs in all_sets)
    most = desired + surge
    if current >= most:
        return replicas(new)
    return replicas(new) + min(most - current, desired - replicas(new))


def old_scale_down(deployment: Obj, new: Obj, old: list[Obj]) -> dict[str, int]:
    """How the old ReplicaSets scale down in one step of a rolling update
    (reconcileOldReplicaSets): their unavailable pods first, then available ones while the
    Deployment keeps desired - maxUnavailable available, oldest ReplicaSets first. Returns
    name -> new replicas, for those that change."""
    all_sets = [*old, new]
    if sum(replicas(rs) for rs in old) == 0:
        return {}
    min_available = replicas(deployment) - max_unavailable(deployment)
    new_unavailable = replicas(new) - _status(new, "availableReplicas")
    most = sum(replicas(rs) for rs in all_sets) - min_available - new_unavailable
    if most <= 0:
        return {}
    out: dict[str, int] = {}
    done = 0
    for rs in by_age(old):  # unhealthy first: they would block the rollout
        count = replicas(rs)
        unhealthy = count - _status(rs, "availableReplicas")
        if count == 0 or unhealthy <= 0 or done >= most:
            continue
        down = min(most - done, unhealthy)
        out[rs["metadata"]["name"]] = count - down
        done += down
    available = sum(_status(rs, "availableReplicas") for rs in all_sets)
    budget = available - min_available
    taken = 0
    for rs in by_age(old):
        count = out.get(rs["metadata"]["name"], replicas(rs))
        if taken >= budget:
            break
        if count == 0:
            continue
        down = min(count, budget - taken)
        out[rs["metadata"]["name"]] = count - down
        taken += down
    return out


def is_scaling_event(deployment: Obj, sets: list[Obj]) -> bool:
    """isScalingEvent: an active ReplicaSet was sized for another replica count (its
    desired-replicas annotation) than the Deployment's now."""
    for rs in sets:
        desired = (rs["metadata"].get("annotations") or {}).get(DESIRED, "")
        if replicas(rs) > 0 and desired.isdigit() and int(desired) != replicas(deployment):
            return True
    return False


def scaled(deployment: Obj, new: Obj | None, old: list[Obj]) -> dict[str, int]:
    """The Deployment controller's scale() when its replicas change, mid-rollout too: one
    active ReplicaSet takes the whole count; a saturated new one leaves the old at 0; else,
    rolling, the pods added or removed are shared in proportion to the ReplicaSets' sizes
    (largest first: newer first when adding, older first when removing; the rounding's
    leftover to the first). Returns name -> replicas, for those that change."""
    desired = replicas(deployment)
    everything = [*old, *([new] if new is not None else [])]
    active = [rs for rs in everything if replicas(rs) > 0]
    if not everything:
        return {}
    if len(active) <= 1:
        one = active[0] if active else (new if new is not None else by_age(old)[-1])
        return {} if replicas(one) == desired else {one["metadata"]["name"]: desired}
    if new is not None and _saturated(deployment, new):
        return {rs["metadata"]["name"]: 0 for rs in old if replicas(rs) > 0}
    if is_recreate(deployment):
        return {}
    allowed = desired + fenceposts(deployment)[0] if desired > 0 else 0
    to_add = allowed - sum(replicas(rs) for rs in active)
    if to_add == 0:
        return {}
    aged = by_age(active)
    if to_add > 0:  # largest first; of the same size, the newer
        order = sorted(aged, key=lambda rs: (-replicas(rs), -aged.index(rs)))
    else:  # largest first; of the same size, the older
        order = sorted(aged, key=lambda rs: (-replicas(rs), aged.index(rs)))
    sizes: dict[str, int] = {}
    added = 0
    for rs in order:
        share = _share(rs, deployment, to_add, added)
        sizes[rs["metadata"]["name"]] = replicas(rs) + share
        added += share
    first = order[0]["metadata"]["name"]
    sizes[first] = max(0, sizes[first] + to_add - added)
    return {
        rs["metadata"]["name"]: sizes[rs["metadata"]["name"]]
        for rs in active
        if sizes[rs["metadata"]["name"]] != replicas(rs)
    }


def _saturated(deployment: Obj, rs: Obj) -> bool:
    desired = replicas(deployment)
    annotated = (rs["metadata"].get("annotations") or {}).get(DESIRED, "")
    return (
        replicas(rs) == desired
        and annotated == str(desired)
        and _status(rs, "availableReplicas") == desired
    )


def _share(rs: Obj, deployment: Obj, to_add: int, added: int) -> int:
    """GetReplicaSetProportion: this ReplicaSet's part of `to_add`, within what is left."""
    if replicas(rs) == 0 or to_add == added:
        return 0
    desired = replicas(deployment)
    if desired == 0:
        fraction = -replicas(rs)
    else:
        most = desired + fenceposts(deployment)[0]
        before = (rs["metadata"].get("annotations") or {}).get(MAX, "")
        sized_for = int(before) if before.isdigit() and int(before) > 0 else 0
        sized_for = sized_for or _status(deployment, "replicas") or desired
        fraction = math.floor(replicas(rs) * most / sized_for + 0.5) - replicas(rs)
    left = to_add - added
    return min(fraction, left) if to_add > 0 else max(fraction, left)


def to_clean(deployment: Obj, old: list[Obj]) -> list[Obj]:
    """Old ReplicaSets past revisionHistoryLimit, empty ones only, lowest revision first."""
    limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
    empty = [
        rs for rs in old
        if replicas(rs) == 0 and _status(rs, "replicas") == 0
        and "deletionTimestamp" not in rs["metadata"]
    ]  # fmt: skip
    empty.sort(key=lambda rs: (revision(rs), rs["metadata"].get("creationTimestamp", "")))
    return empty[: max(0, len(empty) - limit)]


def _condition(conditions: list[Obj], kind: str) -> Obj | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def _set(conditions: list[Obj], new: Obj) -> list[Obj]:
    """SetDeploymentCondition: the same status and reason leave it as it is; the same status
    keeps its lastTransitionTime."""
    current = _condition(conditions, new["type"])
    if current is not None and current["status"] == new["status"]:
        if current.get("reason") == new.get("reason"):
            return conditions
        new["lastTransitionTime"] = current.get("lastTransitionTime", new["lastTransitionTime"])
    return [c for c in conditions if c.get("type") != new["type"]] + [new]


def condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}  # fmt: skip


def complete(deployment: Obj, status: Obj) -> bool:
    desired = replicas(deployment)
    return (
        status.get("updatedReplicas", 0) == desired
        and status.get("replicas", 0) == desired
        and status.get("availableReplicas", 0) == desired
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
    )


def status(deployment: Obj, all_sets: list[Obj], new: Obj | None, now: datetime.datetime) -> Obj:
    """The Deployment's status (calculateStatus and syncRolloutStatus): counts from its
    ReplicaSets; Available while desired - maxUnavailable pods are; Progressing while the new
    ReplicaSet grows or the old shrink, NewReplicaSetAvailable when done,
    ProgressDeadlineExceeded after progressDeadlineSeconds without progress."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    old_status = deployment.get("status") or {}
    available = sum(_status(rs, "availableReplicas") for rs in all_sets)
    out: Obj = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": sum(_status(rs, "replicas") for rs in all_sets),
        "updatedReplicas": _status(new, "replicas") if new is not None else 0,
        "readyReplicas": sum(_status(rs, "readyReplicas") for rs in all_sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, sum(replicas(rs) for rs in all_sets) - available),
    }
    if "collisionCount" in old_status:
        out["collisionCount"] = old_status["collisionCount"]
    conditions = list(old_status.get("conditions") or [])
    if available >= replicas(deployment) - max_unavailable(deployment):
        cond = condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            stamp,
        )
    else:
        cond = condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            stamp,
        )
    conditions = _set(conditions, cond)
    spec = deployment.get("spec") or {}
    progressing = _condition(conditions, "Progressing")
    name = (
        f'ReplicaSet "{new["metadata"]["name"]}"'
        if new is not None
        else (f'Deployment "{deployment["metadata"]["name"]}"')
    )
    paused = bool(spec.get("paused"))
    done = (
        out["replicas"] == out["updatedReplicas"]
        and progressing is not None
        and progressing.get("reason") == "NewReplicaSetAvailable"
    )
    if paused:
        if progressing is None or progressing.get("reason") != "DeploymentPaused":
            conditions = _set(
                conditions,
                condition(
                    "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", stamp
                ),
            )
    elif progressing is not None and progressing.get("reason") == "DeploymentPaused":
        conditions = _set(
            conditions,
            condition(
                "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", stamp
            ),
        )
    elif "progressDeadlineSeconds" in spec and not done:
        if complete(deployment, out):
            conditions = _set(
                conditions,
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f"{name} has successfully progressed.",
                    stamp,
                ),
            )
        elif _progressed(old_status, out):
            cond = condition(
                "Progressing", "True", "ReplicaSetUpdated", f"{name} is progressing.", stamp
            )
            if progressing is not None and progressing.get("status") == "True":
                cond["lastTransitionTime"] = progressing.get("lastTransitionTime", stamp)
            conditions = [c for c in conditions if c.get("type") != "Progressing"] + [cond]
        elif progressing is not None and _timed_out(progressing, spec, now):
            conditions = _set(
                conditions,
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f"{name} has timed out progressing.",
                    stamp,
                ),
            )
    failure = replica_failure(new, all_sets)
    if failure is not None:
        conditions = _set(conditions, failure)
    else:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    out["conditions"] = conditions
    return out


def replica_failure(new: Obj | None, all_sets: list[Obj]) -> Obj | None:
    """The Deployment's ReplicaFailure condition: its new ReplicaSet's, else any other's
    (getReplicaFailures, ReplicaSetToDeploymentCondition)."""
    for rs in [new] if new is not None else all_sets:
        cond = _condition((rs.get("status") or {}).get("conditions") or [], "ReplicaFailure")
        if cond is not None:
            stamp = cond.get("lastTransitionTime", "")
            return condition(
                "ReplicaFailure", cond["status"], cond.get("reason", ""),
                cond.get("message", ""), stamp,
            )  # fmt: skip
    return None if new is None else replica_failure(None, all_sets)


def _progressed(before: Obj, after: Obj) -> bool:
    """DeploymentProgressing: more updated, fewer old, more ready or more available pods."""

    def old(s: Obj) -> int:
        return int(s.get("replicas", 0)) - int(s.get("updatedReplicas", 0))

    return (
        after["updatedReplicas"] > int(before.get("updatedReplicas", 0))
        or old(after) < old(before)
        or after["readyReplicas"] > int(before.get("readyReplicas", 0))
        or after["availableReplicas"] > int(before.get("availableReplicas", 0))
    )


def _timed_out(progressing: Obj, spec: Obj, now: datetime.datetime) -> bool:
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = when(progressing.get("lastUpdateTime"))
    deadline = int(spec.get("progressDeadlineSeconds", 600))
    return since is not None and since + datetime.timedelta(seconds=deadline) < now


def deadline_in(deployment: Obj, now: datetime.datetime) -> float | None:
    """Seconds until a Progressing deployment would time out, to look again then."""
    spec = deployment.get("spec") or {}
    cond = _condition((deployment.get("status") or {}).get("conditions") or [], "Progressing")
    if cond is None or cond.get("reason") != "ReplicaSetUpdated" or spec.get("paused"):
        return None
    since = when(cond.get("lastUpdateTime"))
    if since is None:
        return None
    due = since + datetime.timedelta(seconds=int(spec.get("progressDeadlineSeconds", 600)))
    return max(0.0, (due - now).total_seconds()) + 1
