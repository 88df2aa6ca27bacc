"""The garbage collector: objects whose owners (ownerReferences) are all gone go too, and
an owner deleted with `propagationPolicy: Foreground` or `Orphan` (kubectl delete
--cascade=foreground|orphan) waits, under the finalizer of that name, until its dependents
are gone or freed of it. Background deletion, the default, deletes the owner at once and
its dependents here after it.

It reconciles one namespace at a time: on any change there it looks at every owned object
of the kinds served (a sweep, where the kube-controller-manager keeps a graph; the same
outcome at one machine's scale).
"""

from __future__ import annotations

import contextlib

from podkit.api.kinds import KINDS, Kind, Obj
from podkit.api.rest import MERGE
from podkit.api.status import ApiError
from podkit.controllers.loop import Controller, Key

FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS if not k.view}


class GarbageCollector(Controller):
    name = "garbage-collector"
    watches = tuple(k for k in KINDS if k.namespaced and not k.view and k.kind != "Event")

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        return [(obj["metadata"].get("namespace", ""), "")]

    def sync(self, key: Key) -> float | None:
        ns = key[0]
        found = [(k, o) for k in self.watches for o in self.rest.list_objects(k, ns)[0]]
        alive = {o["metadata"]["uid"] for _, o in found}
        for kind, obj in found:
            self._orphaned(kind, obj, alive)
        for kind, obj in found:
            finalizers = obj["metadata"].get("finalizers") or []
            if "deletionTimestamp" in obj["metadata"] and (
                FOREGROUND in finalizers or ORPHAN in finalizers
            ):
                self._owner_going(kind, obj, found)
        return None

    def _orphaned(self, kind: Kind, obj: Obj, alive: set[str]) -> None:
        """A dependent whose owners are gone goes; one that lost some keeps the others."""
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if not refs:
            return
        kept = [r for r in refs if r.get("uid") in alive or not _checked(r)]
        if kept == refs:
            return
        with contextlib.suppress(ApiError):  # gone meanwhile
            if not kept:
                if "deletionTimestamp" not in meta:
                    self.rest.delete(kind, meta["namespace"], meta["name"])
            else:
                self.set_refs(kind, obj, kept)

    def _owner_going(self, kind: Kind, owner: Obj, found: list[tuple[Kind, Obj]]) -> None:
        uid = owner["metadata"]["uid"]
        finalizers = owner["metadata"].get("finalizers") or []
        dependents = [
            (k, o) for k, o in found
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]  # fmt: skip
        if ORPHAN in finalizers:
            for k, o in dependents:
                refs = [r for r in o["metadata"]["ownerReferences"] if r.get("uid") != uid]
                with contextlib.suppress(ApiError):
                    self.set_refs(k, o, refs)
            self._drop_finalizer(kind, owner, ORPHAN)
            return
        blocking = 0
        for k, o in dependents:
            meta = o["metadata"]
            ref = next(r for r in meta["ownerReferences"] if r.get("uid") == uid)
            blocking += bool(ref.get("blockOwnerDeletion"))
            if "deletionTimestamp" not in meta:
                with contextlib.suppress(ApiError):  # its own dependents go first, too
                    self.rest.delete(k, meta["namespace"], meta["name"], propagation="Foreground")
        if not blocking:
            self._drop_finalizer(kind, owner, FOREGROUND)

    def _drop_finalizer(self, kind: Kind, obj: Obj, finalizer: str) -> None:
        meta = obj["metadata"]
        left = [f for f in meta.get("finalizers") or [] if f != finalizer]
        patch = {"metadata": {"finalizers": left or None,
                              "resourceVersion": meta["resourceVersion"]}}  # fmt: skip
        with contextlib.suppress(ApiError):
            self.rest.patch(kind, meta["namespace"], meta["name"], MERGE, patch)


def _checked(ref: Obj) -> bool:
    """Whether an ownerReference names a namespaced kind podkit serves (others are left be)."""
    kind = _BY_KIND.get((ref.get("apiVersion", ""), ref.get("kind", "")))
    return kind is not None and kind.namespaced
