"""The ReplicaSet controller: keeps `spec.replicas` pods of each ReplicaSet's template, adopts
the orphans its selector matches and releases its pods that no longer match, deletes surplus
pods in the controller's order (controllers/replicas.py) and writes the status."""

from __future__ import annotations

import contextlib

from podkit.api.kinds import POD, REPLICASET, Kind, Obj
from podkit.api.status import ApiError
from podkit.controllers import replicas
from podkit.controllers.loop import Controller, Key, utcnow


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    watches = (REPLICASET, POD)

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
            return None  # deleted: its pods are the garbage collector's
        pods, _ = self.rest.list_objects(POD, ns)
        mine, released = replicas.claim(rs, pods)
        for pod in released:
            self.set_controller(POD, pod, None)
        for pod in mine:
            if replicas.controller_of(pod) is None:
                self.set_controller(POD, pod, replicas.owner_ref(rs))
        if "deletionTimestamp" not in rs["metadata"]:
            self._scale(rs, mine)
        now = utcnow()
        new_status = replicas.status(rs, mine, now)
        if new_status != (rs.get("status") or {}):
            self.rest.update_status(REPLICASET, ns, name, new_status)
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds", 0))
        return replicas.next_availability(mine, min_ready, now) if min_ready else None

    def _scale(self, rs: Obj, mine: list[Obj]) -> None:
        ns = rs["metadata"]["namespace"]
        change = replicas.diff(rs, mine)
        for _ in range(change):
            try:
                made = self.rest.create(POD, ns, replicas.new_pod(rs))
            except ApiError as exc:
                self.record(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}")
                return
            self.record(rs, "Normal", "SuccessfulCreate",
                        f"Created pod: {made['metadata']['name']}")  # fmt: skip
        if change < 0:
            active = [p for p in mine if replicas.is_active(p)]
            for pod in replicas.deletion_order(active)[:-change]:
                with contextlib.suppress(ApiError):  # gone meanwhile
                    self.rest.delete(POD, ns, pod["metadata"]["name"])
                    self.record(rs, "Normal", "SuccessfulDelete",
                                f"Deleted pod: {pod['metadata']['name']}")  # fmt: skip
