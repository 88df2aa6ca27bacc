"""What the apiserver does to a Pod besides storing it, pure functions: the defaults it fills
in (so `kubectl get -o yaml` shows what a cluster would), the single node it is bound to,
and the rule that a pod's spec does not change after creation except for images."""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

_CONTAINER_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
# What a pod update may change in spec (the apiserver's ValidatePodUpdate, in short).
_MUTABLE = "spec.containers[*].image, spec.initContainers[*].image, spec.activeDeadlineSeconds"


def pull_policy(image: str) -> str:
    """Always for :latest or no tag, IfNotPresent otherwise (a digest pins the image)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_spec(spec: Obj) -> None:
    """A PodSpec's defaults (SetDefaults_PodSpec and its containers'), in place: the same in a
    Pod and in a workload's pod template."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            for field, value in _CONTAINER_DEFAULTS.items():
                c.setdefault(field, value)
            c.setdefault("imagePullPolicy", pull_policy(str(c.get("image", ""))))
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")


def defaulted(pod: Obj, node_name: str, now: str) -> Obj:
    """The pod with the apiserver's defaults (and its admission's: service account,
    priority), bound to this node, Pending."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    default_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec["nodeName"] = spec.get("nodeName") or node_name
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now,
             "lastProbeTime": None},
        ],
        "qosClass": "BestEffort",
    }  # fmt: skip
    return pod


def spec_change_refused(old: Obj, new: Obj) -> str | None:
    """Why an update's spec change is refused, or None when only mutable fields changed."""
    before, after = copy.deepcopy(old.get("spec") or {}), copy.deepcopy(new.get("spec") or {})
    for spec in (before, after):
        spec.pop("activeDeadlineSeconds", None)
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or []:
                c.pop("image", None)
    if before == after:
        return None
    return "Forbidden: pod updates may not change fields other than " + _MUTABLE
