"""The ReplicaSet controller: keeps `spec.replicas` pods of each ReplicaSet's template, adopts
the orphans its selector matches and releases its pods that no longer match, deletes surplus
pods in the controller's order (controllers/replicas.py) and writes the status."""

from __future__ import annotations

import contextlib

from podkit.api.kinds import POD, REPLICASET, Kind, Obj
from podkit.api.rest import Rest
from podkit.api.status import ApiError
from podkit.controllers import replicas
from podkit.controllers.loop import Controller, Key, utcnow

# After a failed create or delete the ReplicaSet is synced again after 1 s, doubling with
# each failure in a row up to 5 minutes (the workqueue's exponential backoff, which starts
# at 5 ms and stops at 1000 s; events are not aggregated here, so fewer retries).
RETRY_FIRST, RETRY_MAX = 1.0, 300.0


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    watches = (REPLICASET, POD)

    def __init__(self, rest: Rest) -> None:
        super().__init__(rest)
        self._failures: dict[Key, int] = {}  # failed syncs in a row, by ReplicaSet

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if kind is REPLICASET:
            return [(ns, meta["name"])]
        ref = replicas.controller_of(obj)
        if ref is not None:
            return [(ns, ref["name"])] if ref.get("kind") == "ReplicaSet" else []
        # An orphan: every ReplicaSet of its namespace may want it.
        return [(ns, rs["metadata"]["name"]) for rs in self.rest.list_objects(REPLICASET, ns)[0]]

    def sync(self, key: Key) -> float | None:
        ns, name = key
        try:
            rs = self.rest.get(REPLICASET, ns, name)
        except ApiError:
            self._failures.pop(key, None)
            return None  # deleted: its pods are the garbage collector's
        pods, _ = self.rest.list_objects(POD, ns)
        mine, released = replicas.claim(rs, pods)
        for pod in released:
            self.set_controller(POD, pod, None)
        for pod in mine:
            if replicas.controller_of(pod) is None:
                self.set_controller(POD, pod, replicas.owner_ref(rs))
        failure = None
        if "deletionTimestamp" not in rs["metadata"]:
            failure = self._scale(rs, mine)
        now = utcnow()
        new_status = replicas.status(rs, mine, now, failure)
        if new_status != (rs.get("status") or {}):
            self.rest.update_status(REPLICASET, ns, name, new_status)
        if failure is not None:
            failed = self._failures[key] = self._failures.get(key, 0) + 1
            return min(RETRY_FIRST * 2 ** (failed - 1), RETRY_MAX)
        self._failures.pop(key, None)
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds", 0))
        return replicas.next_availability(mine, min_ready, now) if min_ready else None

    def _scale(self, rs: Obj, mine: list[Obj]) -> str | None:
        """Makes or deletes the pods the ReplicaSet lacks or has too many of; why it could not,
        if it could not."""
        ns = rs["metadata"]["namespace"]
        change = replicas.diff(rs, mine)
        for _ in range(change):
            try:
                made = self.rest.create(POD, ns, replicas.new_pod(rs))
            except ApiError as exc:
                self.record(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}")
                return exc.message
            self.record(rs, "Normal", "SuccessfulCreate",
                        f"Created pod: {made['metadata']['name']}")  # fmt: skip
        if change < 0:
            active = [p for p in mine if replicas.is_active(p)]
            for pod in replicas.deletion_order(active)[:-change]:
                with contextlib.suppress(ApiError):  # gone meanwhile
                    self.rest.delete(POD, ns, pod["metadata"]["name"])
                    self.record(rs, "Normal", "SuccessfulDelete",
                                f"Deleted pod: {pod['metadata']['name']}")  # fmt: skip
        return None
