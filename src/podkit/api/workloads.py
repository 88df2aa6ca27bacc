"""What the apiserver does to apps/v1 Deployments and ReplicaSets and to batch/v1 Jobs besides
storing them, pure functions: their defaults (SetDefaults_Deployment, SetDefaults_ReplicaSet,
SetDefaults_Job, the pod template's), their validation (a selector that matches the template's
labels and does not change, the restartPolicy each allows, counts not below 0, a rolling update
that can make progress), and the `scale` subresource as an autoscaling/v1 Scale.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from podkit.api import pods, selectors

Obj = dict[str, Any]
Causes = list[tuple[str, str]]  # (field path, reason), as status.invalid takes them


def defaulted(obj: Obj) -> Obj:
    """A new Deployment or ReplicaSet with the defaults a cluster fills in, and no status."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    if obj.get("kind") == "Deployment":
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    pods.default_spec(template.setdefault("spec", {}))
    obj["status"] = {}
    return obj


def problems(obj: Obj, old: Obj | None) -> Causes:
    """The apiserver's validation of a Deployment or ReplicaSet (ValidateDeployment,
    ValidateReplicaSet): (field, reason) pairs, none when it is valid."""
    spec = obj.get("spec") or {}
    causes: Causes = []
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, int) and replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than or "
                                        "equal to 0"))  # fmt: skip
    selector = spec.get("selector") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    try:
        requirements = selectors.from_label_selector(selector)
    except selectors.SelectorError as exc:
        return [*causes, ("spec.selector", f"Invalid value: {_go(selector)}: {exc}")]
    if not requirements:
        causes.append(("spec.selector", f"Invalid value: {_go(selector)}: empty selector is "
                                        "invalid for deployment"))  # fmt: skip
    elif not selectors.labels_match(requirements, labels):
        causes.append((
            "spec.template.metadata.labels",
            f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
        ))  # fmt: skip
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        causes.append(("spec.selector", f"Invalid value: {_go(selector)}: field is immutable"))
    policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy", "Always")
    if policy != "Always":
        causes.append(("spec.template.spec.restartPolicy",
                       f'Unsupported value: "{policy}": supported values: "Always"'))  # fmt: skip
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and rolling is not None:
        why = "Forbidden: may not be specified when strategy `type` is 'Recreate'"
        causes.append(("spec.strategy.rollingUpdate", why))
    if rolling and _is_zero(rolling.get("maxUnavailable")) and _is_zero(rolling.get("maxSurge")):
        causes.append(("spec.strategy.rollingUpdate.maxUnavailable",
                       f"Invalid value: {_go(rolling.get('maxUnavailable'))}: may not be 0 when "
                       "`maxSurge` is 0"))  # fmt: skip
    return causes


def _is_zero(value: Any) -> bool:
    return value in (0, "0", "0%")


def _go_map(labels: dict[str, str]) -> str:
    """A map as Go's %v prints it in the apiserver's messages."""
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"


def _go(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- the scale subresource ----------------------------------------------------------------


def scale_of(obj: Obj) -> Obj:
    """The object's autoscaling/v1 Scale: its desired replicas, the current ones and the
    selector of its pods, as `kubectl scale` and autoscalers read it."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },  # fmt: skip
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {
            "replicas": int((obj.get("status") or {}).get("replicas", 0)),
            "selector": selectors.selector_text((obj.get("spec") or {}).get("selector")),
        },
    }


def scaled(obj: Obj, scale: Obj) -> tuple[Obj, Causes]:
    """The object with the Scale's desired replicas (its resourceVersion, when the Scale names
    one, is the object's: a stale one is a conflict), or the causes it is invalid."""
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return obj, [("spec.replicas", f"Invalid value: {replicas}: must be greater than or "
                                       "equal to 0")]  # fmt: skip
    new = copy.deepcopy(obj)
    new["spec"]["replicas"] = replicas
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv:
        new["metadata"]["resourceVersion"] = rv
    return new, []


# --- batch/v1 Jobs ------------------------------------------------------------------------

JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def job_defaulted(obj: Obj) -> Obj:
    """A new Job with its defaults (SetDefaults_Job) and, unless manualSelector, the selector
    and pod labels the apiserver generates from its uid."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    if not spec.get("manualSelector"):
        meta = obj["metadata"]
        for key in JOB_UID_LABELS:
            labels[key] = meta["uid"]
        for key in JOB_NAME_LABELS:
            labels[key] = meta["name"]
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: meta["uid"]}}
    pods.default_spec(template.setdefault("spec", {}))
    obj["status"] = {}
    return obj


def job_problems(obj: Obj, old: Obj | None) -> Causes:
    """ValidateJob and ValidateJobUpdate, the parts a user meets: a restartPolicy of Never or
    OnFailure, counts not below 0, a selector matching the template, and a template that does
    not change."""
    spec = obj.get("spec") or {}
    causes: Causes = []
    for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            causes.append((f"spec.{field}", f"Invalid value: {value}: must be greater than or "
                                            "equal to 0"))  # fmt: skip
    policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        causes.append(("spec.template.spec.restartPolicy",
                       'Required value: valid values: "OnFailure", "Never"'))  # fmt: skip
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    try:
        requirements = selectors.from_label_selector(spec.get("selector"))
    except selectors.SelectorError as exc:
        return [*causes, ("spec.selector", str(exc))]
    if not selectors.labels_match(requirements, labels):
        causes.append((
            "spec.template.metadata.labels",
            f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
        ))  # fmt: skip
    if old is not None:
        before = old.get("spec") or {}
        for field in ("template", "selector", "completions", "completionMode"):
            if before.get(field) != spec.get(field):
                causes.append(
                    (f"spec.{field}", f"Invalid value: {_go(spec.get(field))}: field is immutable")
                )
    return causes
