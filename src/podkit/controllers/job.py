"""The Job controller: runs a Job's pods until enough have succeeded, or until it has failed,
counting each finished pod once (the tracking finalizer, then status.uncountedTerminatedPods,
then the counts) as the kube-controller-manager does. The decisions are controllers/jobs.py's.
"""

from __future__ import annotations

import contextlib

from podkit.api.kinds import JOB, POD, Kind, Obj
from podkit.api.rest import MERGE
from podkit.api.status import ApiError
from podkit.controllers import jobs, replicas
from podkit.controllers.loop import Controller, Key, utcnow


class JobController(Controller):
    name = "job-controller"
    watches = (JOB, POD)

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        meta = obj["metadata"]
        if kind is JOB:
            return [(meta["namespace"], meta["name"])]
        ref = replicas.controller_of(obj)
        return [(meta["namespace"], ref["name"])] if ref and ref.get("kind") == "Job" else []

    def sync(self, key: Key) -> float | None:
        ns, name = key
        try:
            job = self.rest.get(JOB, ns, name)
        except ApiError:  # gone: its pods must not stay held by the tracking finalizer
            for pod in self.rest.list_objects(POD, ns)[0]:
                ref = replicas.controller_of(pod)
                if ref and ref.get("kind") == "Job" and ref.get("name") == name:
                    self._untrack(pod)
            return None
        pods, _ = replicas.claim(job, self.rest.list_objects(POD, ns)[0])
        job = self._count(job, pods)
        pods, _ = replicas.claim(job, self.rest.list_objects(POD, ns)[0])
        if "deletionTimestamp" in job["metadata"]:
            return None
        todo = jobs.plan(job, pods, utcnow())
        for pod in todo.delete:
            with contextlib.suppress(ApiError):
                self.rest.delete(POD, ns, pod["metadata"]["name"])
                self.record(job, "Normal", "SuccessfulDelete",
                            f"Deleted pod: {pod['metadata']['name']}")  # fmt: skip
        for _ in range(todo.create):
            made = self.rest.create(POD, ns, jobs.new_pod(job))
            self.record(job, "Normal", "SuccessfulCreate",
                        f"Created pod: {made['metadata']['name']}")  # fmt: skip
        before = {c.get("type") for c in (job.get("status") or {}).get("conditions") or []}
        if todo.status != (job.get("status") or {}):
            self.rest.update_status(JOB, ns, name, todo.status)
        for c in todo.status.get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["type"] not in before:
                kind = "Normal" if c["type"] == "Complete" else "Warning"
                reason = "Completed" if c["type"] == "Complete" else c["reason"]
                self.record(
                    job, kind, reason, "Job completed" if kind == "Normal" else c["message"]
                )
        return todo.again

    def _count(self, job: Obj, pods: list[Obj]) -> Obj:
        """Finished pods into the counts, each once: first named in uncountedTerminatedPods,
        then freed of the tracking finalizer, then counted."""
        meta = job["metadata"]
        status = dict(job.get("status") or {})
        uncounted = {k: list(v) for k, v in (status.get("uncountedTerminatedPods") or {}).items()}
        listed = {uid for uids in uncounted.values() for uid in uids}
        fresh = False
        for pod in pods:
            phase = jobs.finished(pod)
            uid = pod["metadata"]["uid"]
            tracked = jobs.TRACKING in (pod["metadata"].get("finalizers") or [])
            if phase and tracked and uid not in listed:
                uncounted.setdefault(phase.lower(), []).append(uid)
                fresh = True
        if fresh:
            status["uncountedTerminatedPods"] = uncounted
            job = self.rest.update_status(JOB, meta["namespace"], meta["name"], status)
        listed = {uid for uids in uncounted.values() for uid in uids}
        for pod in pods:
            if pod["metadata"]["uid"] in listed:
                self._untrack(pod)
        if not listed:
            return job
        for phase in ("succeeded", "failed"):
            status[phase] = int(status.get(phase, 0)) + len(uncounted.get(phase, []))
            if not status[phase]:
                del status[phase]
        status["uncountedTerminatedPods"] = {}
        return self.rest.update_status(JOB, meta["namespace"], meta["name"], status)

    def _untrack(self, pod: Obj) -> None:
        meta = pod["metadata"]
        left = [f for f in meta.get("finalizers") or [] if f != jobs.TRACKING]
        if left == (meta.get("finalizers") or []):
            return
        patch = {"metadata": {"finalizers": left or None}}
        with contextlib.suppress(ApiError):
            self.rest.patch(POD, meta["namespace"], meta["name"], MERGE, patch)
