"""The Job controller's decisions, pure functions (pkg/controller/job): how many pods run,
when a Job has succeeded (completions) or failed (backoffLimit, activeDeadlineSeconds), the
delay before a failed pod is replaced, and the status with its conditions. Finished pods are
counted once, through the tracking finalizer and status.uncountedTerminatedPods, so a pod
deleted after it finished is never run again.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

from podkit.controllers import replicas
from podkit.controllers.replicas import deletion_order, ready_since, when

Obj = dict[str, Any]
TRACKING = "batch.kubernetes.io/job-tracking"
BACKOFF, MAX_BACKOFF = 10.0, 600.0  # seconds: the pod failure backoff, doubling to its cap


def finished(pod: Obj) -> str | None:
    phase = (pod.get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def new_pod(job: Obj) -> Obj:
    """A pod of the Job's template, held by the tracking finalizer until it is counted."""
    return replicas.new_pod(job, (TRACKING,))


def _condition(kind: str, reason: str, message: str, stamp: str) -> Obj:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": stamp, "lastTransitionTime": stamp}  # fmt: skip


def has(job: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


@dataclass
class Plan:
    create: int = 0
    delete: list[Obj] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    again: float | None = None  # seconds until the next look (a backoff, a deadline)


def plan(job: Obj, pods: list[Obj], now: datetime.datetime) -> Plan:
    """What to do now, given the Job (its status holding the counted pods) and its pods."""
    spec = job.get("spec") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = copy.deepcopy(job.get("status") or {})
    conditions: list[Obj] = status.setdefault("conditions", [])
    active = [p for p in pods if not finished(p) and "deletionTimestamp" not in p["metadata"]]
    terminating = [p for p in pods if not finished(p) and "deletionTimestamp" in p["metadata"]]
    out = Plan(status=status)

    def counts() -> None:
        status["active"] = len(active) - len(out.delete) + out.create
        status["ready"] = len([p for p in active if ready_since(p) is not None])
        status["terminating"] = len(terminating)
        for key in ("active", "ready", "terminating"):
            if not status[key] and key != "ready":
                del status[key]

    def add(kind: str, reason: str, message: str) -> None:
        if not has({"status": status}, kind):
            conditions.append(_condition(kind, reason, message, stamp))

    if has(job, "Complete") or has(job, "Failed"):
        out.delete = active
        counts()
        return out
    if spec.get("suspend"):
        out.delete = active
        add("Suspended", "JobSuspended", "Job suspended")
        counts()
        return out
    status.setdefault("startTime", stamp)
    succeeded, failed = int(status.get("succeeded", 0)), int(status.get("failed", 0))
    failure = _failure(spec, status, active, now)
    if failure is not None:
        add("FailureTarget", *failure)
        out.delete = active
        if not active and not terminating:
            add("Failed", *failure)
        counts()
        return out
    completions = spec.get("completions")
    done = (
        succeeded >= int(completions) if completions is not None else succeeded > 0 and not active
    )
    if done:
        add("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")
        out.delete = active
        if not active and not terminating:
            add("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
            status.setdefault("completionTime", stamp)
        counts()
        return out
    want = int(spec.get("parallelism", 1))
    if completions is not None:
        want = min(want, int(completions) - succeeded)
    elif succeeded > 0:
        want = len(active)  # a work queue: once one has succeeded, no new pods
    if want > len(active):
        wait = _backoff_left(failed, pods, now)
        if wait > 0:
            out.again = wait
        else:
            out.create = want - len(active)
    elif want < len(active):
        out.delete = deletion_order(active)[: len(active) - want]
    deadline = _deadline_left(spec, status, now)
    if deadline is not None:
        out.again = min(out.again or deadline, deadline)
    counts()
    return out


def _failure(
    spec: Obj, status: Obj, active: list[Obj], now: datetime.datetime
) -> tuple[str, str] | None:
    limit = int(spec.get("backoffLimit", 6))
    failed = int(status.get("failed", 0))
    restarts = 0
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure":
        restarts = sum(
            int(s.get("restartCount", 0))
            for p in active
            for s in ((p.get("status") or {}).get("containerStatuses") or [])
            + ((p.get("status") or {}).get("initContainerStatuses") or [])
        )
    if failed > limit or (restarts and restarts >= limit):
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    left = _deadline_left(spec, status, now)
    if left is not None and left <= 0:
        return "DeadlineExceeded", "Job was active longer than specified deadline"
    return None


def _deadline_left(spec: Obj, status: Obj, now: datetime.datetime) -> float | None:
    limit = spec.get("activeDeadlineSeconds")
    start = when(status.get("startTime"))
    if limit is None or start is None:
        return None
    return (start + datetime.timedelta(seconds=int(limit)) - now).total_seconds()


def _backoff_left(failed: int, pods: list[Obj], now: datetime.datetime) -> float:
    """Seconds before a failed pod may be replaced: 10 s after the first failure, doubling."""
    if failed == 0:
        return 0.0
    last = None
    for pod in pods:
        if finished(pod) != "Failed":
            continue
        for s in (pod.get("status") or {}).get("containerStatuses") or []:
            end = when(((s.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            if end is not None and (last is None or end > last):
                last = end
    if last is None:
        return 0.0
    delay = min(MAX_BACKOFF, BACKOFF * 2 ** (failed - 1))
    return max(0.0, (last + datetime.timedelta(seconds=delay) - now).total_seconds())
