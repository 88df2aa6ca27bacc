"""The Deployment controller: one ReplicaSet per template (the newest is the rollout's
target), scaled step by step as the strategy says (RollingUpdate within maxSurge and
maxUnavailable, or Recreate), revisions and the history kept to revisionHistoryLimit, and the
status `kubectl rollout status` reads. The arithmetic is controllers/rollout.py's."""

from __future__ import annotations

import contextlib

from podkit.api.kinds import DEPLOYMENT, POD, REPLICASET, Kind, Obj
from podkit.api.rest import MERGE
from podkit.api.status import ApiError
from podkit.controllers import replicas, rollout
from podkit.controllers.loop import Controller, Key, utcnow


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = (DEPLOYMENT, REPLICASET, POD)

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if kind is DEPLOYMENT:
            return [(ns, meta["name"])]
        ref = replicas.controller_of(obj)
        if kind is REPLICASET:
            if ref is not None:
                return [(ns, ref["name"])] if ref.get("kind") == "Deployment" else []
            return [(ns, d["metadata"]["name"]) for d in self.rest.list_objects(DEPLOYMENT, ns)[0]]
        # A pod (of one of its ReplicaSets): Recreate waits for the old ones to be gone.
        if ref is not None and ref.get("kind") == "ReplicaSet":
            with contextlib.suppress(ApiError):
                rs = self.rest.get(REPLICASET, ns, ref["name"])
                owner = replicas.controller_of(rs)
                if owner is not None and owner.get("kind") == "Deployment":
                    return [(ns, owner["name"])]
        return []

    def sync(self, key: Key) -> float | None:
        ns, name = key
        try:
            d = self.rest.get(DEPLOYMENT, ns, name)
        except ApiError:
            return None
        sets, released = replicas.claim(d, self.rest.list_objects(REPLICASET, ns)[0])
        for rs in released:
            self.set_controller(REPLICASET, rs, None)
        for rs in sets:
            if replicas.controller_of(rs) is None:
                self.set_controller(REPLICASET, rs, replicas.owner_ref(d))
        if "deletionTimestamp" in d["metadata"]:
            return self._status(d, sets, rollout.find_new(d, sets))
        new = rollout.find_new(d, sets)
        old = [rs for rs in sets if rs is not new]
        paused = bool((d.get("spec") or {}).get("paused"))
        changes = rollout.scaled(d, new, old) if paused or rollout.is_scaling_event(d, sets) else {}
        if changes or paused:
            # Scaled (mid-rollout, or paused): sizes change, the rollout does not step.
            sets = [self._scale(d, rs, changes[rs["metadata"]["name"]])
                    if rs["metadata"]["name"] in changes else rs for rs in sets]  # fmt: skip
            new = next((rs for rs in sets if new is not None and rs["metadata"]["name"]
                        == new["metadata"]["name"]), None)  # fmt: skip
            return self._status(d, sets, new)
        if new is not None:
            new = self._sync_revision(d, new, old)
        if rollout.is_recreate(d):
            return self._recreate(d, new, old)
        return self._rolling(d, new, old)

    # --- strategies --------------------------------------------------------------------

    def _rolling(self, d: Obj, new: Obj | None, old: list[Obj]) -> float | None:
        if new is None:
            placeholder = {"spec": {"replicas": 0}}
            count = rollout.new_count(d, old, placeholder)
            new = self._create(d, old, count)
            return self._status(d, [*old, new], new)
        desired = rollout.replicas(d)
        if rollout.replicas(new) != desired:
            target = (
                desired
                if rollout.replicas(new) > desired
                else rollout.new_count(d, [*old, new], new)
            )
            if target != rollout.replicas(new):
                new = self._scale(d, new, target)
                return self._status(d, [*old, new], new)
        changes = rollout.old_scale_down(d, new, [rs for rs in old if rollout.replicas(rs) > 0])
        if changes:
            old = [self._scale(d, rs, changes[rs["metadata"]["name"]])
                   if rs["metadata"]["name"] in changes else rs for rs in old]  # fmt: skip
            return self._status(d, [*old, new], new)
        return self._finish(d, new, old)

    def _recreate(self, d: Obj, new: Obj | None, old: list[Obj]) -> float | None:
        active = [rs for rs in old if rollout.replicas(rs) > 0]
        if active:
            old = [self._scale(d, rs, 0) if rs in active else rs for rs in old]
            return self._status(d, [*old, *([new] if new else [])], new)
        if self._old_pods_running(d, old):
            return self._status(d, [*old, *([new] if new else [])], new)
        if new is None:
            new = self._create(d, old, rollout.replicas(d))
        elif rollout.replicas(new) != rollout.replicas(d):
            new = self._scale(d, new, rollout.replicas(d))
        return self._finish(d, new, old)

    def _finish(self, d: Obj, new: Obj, old: list[Obj]) -> float | None:
        again = self._status(d, [*old, new], new)
        current = self.rest.get(DEPLOYMENT, d["metadata"]["namespace"], d["metadata"]["name"])
        if rollout.complete(current, current.get("status") or {}):
            for rs in rollout.to_clean(d, old):
                with contextlib.suppress(ApiError):
                    self.rest.delete(
                        REPLICASET, rs["metadata"]["namespace"], rs["metadata"]["name"]
                    )
        return again

    # --- writes --------------------------------------------------------------------------

    def _create(self, d: Obj, old: list[Obj], count: int) -> Obj:
        rs = rollout.new_replica_set(d, old, count)
        ns = d["metadata"]["namespace"]
        try:
            made = self.rest.create(REPLICASET, ns, rs)
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
            made = self.rest.get(REPLICASET, ns, rs["metadata"]["name"])  # ours, from before
        self.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled up replica set {made['metadata']['name']} to {count} from 0",
        )
        self._set_revision(d, rollout.revision(made))
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        cond = rollout.condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{made["metadata"]["name"]}"',
            stamp,
        )
        current = self.rest.get(DEPLOYMENT, ns, d["metadata"]["name"])
        status = dict(current.get("status") or {})
        status["conditions"] = [c for c in status.get("conditions") or []
                                if c.get("type") != "Progressing"] + [cond]  # fmt: skip
        self.rest.update_status(DEPLOYMENT, ns, d["metadata"]["name"], status)
        return made

    def _scale(self, d: Obj, rs: Obj, count: int) -> Obj:
        before = rollout.replicas(rs)
        surge = 0 if rollout.is_recreate(d) else rollout.fenceposts(d)[0]
        annotations = {rollout.DESIRED: str(rollout.replicas(d)),
                       rollout.MAX: str(rollout.replicas(d) + surge)}  # fmt: skip
        patch = {"metadata": {"annotations": annotations}, "spec": {"replicas": count}}
        meta = rs["metadata"]
        done = self.rest.patch(REPLICASET, meta["namespace"], meta["name"], MERGE, patch)
        way = "up" if count > before else "down"
        self.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {way} replica set {meta['name']} to {count} from {before}",
        )
        return done

    def _sync_revision(self, d: Obj, new: Obj, old: list[Obj]) -> Obj:
        """The rollout's ReplicaSet has the highest revision (a rollback to an old template
        gives its ReplicaSet the next one), and the Deployment says it."""
        top = max((rollout.revision(rs) for rs in old), default=0)
        meta = new["metadata"]
        if rollout.revision(new) <= top:
            patch = {"metadata": {"annotations": {rollout.REVISION: str(top + 1)}}}
            new = self.rest.patch(REPLICASET, meta["namespace"], meta["name"], MERGE, patch)
        self._set_revision(d, rollout.revision(new))
        return new

    def _set_revision(self, d: Obj, revision: int) -> None:
        if rollout.revision(d) == revision:
            return
        meta = d["metadata"]
        patch = {"metadata": {"annotations": {rollout.REVISION: str(revision)}}}
        self.rest.patch(DEPLOYMENT, meta["namespace"], meta["name"], MERGE, patch)

    def _status(self, d: Obj, sets: list[Obj], new: Obj | None) -> float | None:
        meta = d["metadata"]
        current = self.rest.get(DEPLOYMENT, meta["namespace"], meta["name"])
        now = utcnow()
        fresh = [self.rest.get(REPLICASET, meta["namespace"], rs["metadata"]["name"])
                 for rs in sets if _exists(self, rs)]  # fmt: skip
        new_fresh = next(
            (rs for rs in fresh if new and rs["metadata"]["uid"] == new["metadata"]["uid"]), None
        )
        status = rollout.status(current, fresh, new_fresh, now)
        if status != (current.get("status") or {}):
            self.rest.update_status(DEPLOYMENT, meta["namespace"], meta["name"], status)
            current = {**current, "status": status}
        return rollout.deadline_in(current, now)

    def _old_pods_running(self, d: Obj, old: list[Obj]) -> bool:
        uids = {rs["metadata"]["uid"] for rs in old}
        for pod in self.rest.list_objects(POD, d["metadata"]["namespace"])[0]:
            ref = replicas.controller_of(pod)
            phase = (pod.get("status") or {}).get("phase")
            if ref is not None and ref.get("uid") in uids and phase not in ("Succeeded", "Failed"):
                return True
        return False


def _exists(controller: Controller, rs: Obj) -> bool:
    meta = rs["metadata"]
    key = controller.rest.key(REPLICASET, meta["namespace"], meta["name"])
    return controller.rest.store.get(key) is not None
