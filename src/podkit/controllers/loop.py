"""What every controller of `podkit serve` shares (client-go's informer and work queue, in
small): it watches kinds in the object store, turns each change into the keys of the objects
to reconcile, and reconciles each key once per batch of changes, or again after a delay it
asks for (minReadySeconds, a progress deadline). Controllers meet the node agent and each
other only in the store, through the same Rest the HTTP API uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from typing import Any

from podkit.api.kinds import EVENT, Kind, Obj
from podkit.api.rest import MERGE, Rest, now
from podkit.api.status import ApiError
from podkit.store.objects import Event

Key = tuple[str, str]  # (namespace, name)
IDLE = 1.0  # seconds between looks at the delayed keys when nothing happens


class Controller:
    name = "controller"
    watches: tuple[Kind, ...] = ()

    def __init__(self, rest: Rest) -> None:
        self.rest = rest
        self._later: dict[Key, float] = {}  # key -> monotonic time to look again

    # --- what a controller says ------------------------------------------------------

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        """The keys a change to `obj` (of `kind`) asks to reconcile."""
        raise NotImplementedError

    def sync(self, key: Key) -> float | None:
        """Reconcile one key; a delay in seconds to look at it again, or None."""
        raise NotImplementedError

    def all_keys(self) -> list[Key]:
        """Every key to reconcile at start (the informers' initial list)."""
        found: list[Key] = []
        for kind in self.watches:
            for obj in self.rest.list_objects(kind, None)[0]:
                found += self.keys(kind, obj)
        return found

    # --- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        queues = [(k, self.rest.store.subscribe(self.rest.prefix(k, None))) for k in self.watches]
        try:
            pending = dict.fromkeys(self.all_keys())
            while not stop.is_set():
                for key in list(pending):
                    self._sync(key)
                pending = {}
                wait = min([t - time.monotonic() for t in self._later.values()] + [IDLE])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_any_event([q for _, q in queues]), max(0.0, wait))
                for kind, queue in queues:
                    while not queue.empty():
                        event: Event = queue.get_nowait()
                        pending.update(dict.fromkeys(self.keys(kind, event.object)))
                due = [k for k, t in self._later.items() if t <= time.monotonic()]
                for key in due:
                    del self._later[key]
                    pending[key] = None
        finally:
            for _, queue in queues:
                self.rest.store.unsubscribe(queue)

    def _sync(self, key: Key) -> None:
        try:
            again = self.sync(key)
        except ApiError:  # a conflict or a race with a deletion: the next event says more
            again = 0.5
        if again is not None:
            self._later[key] = min(self._later.get(key, float("inf")), time.monotonic() + again)

    # --- helpers -------------------------------------------------------------------------

    def set_refs(self, kind: Kind, obj: Obj, refs: list[Obj]) -> None:
        """The object's ownerReferences, written if it has not changed meanwhile."""
        meta = obj["metadata"]
        patch = {"metadata": {"ownerReferences": refs or None,
                              "resourceVersion": meta["resourceVersion"]}}  # fmt: skip
        self.rest.patch(kind, meta["namespace"], meta["name"], MERGE, patch)

    def set_controller(self, kind: Kind, obj: Obj, ref: Obj | None) -> None:
        """Adopt (a controller reference to `ref`'s owner) or release (None) an object; its
        other owners stay. A race with another write is left to the next sync."""
        others = [
            r for r in obj["metadata"].get("ownerReferences") or [] if not r.get("controller")
        ]
        with contextlib.suppress(ApiError):
            self.set_refs(kind, obj, others + ([ref] if ref is not None else []))

    def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """An Event about `obj`, from this controller, as `kubectl describe` shows them."""
        record_event(self.rest, obj, type_, reason, message, self.name)


class Singleton(Controller):
    """A controller of the whole state at once (the proxy's rules, the DNS records): every
    change asks for its one key."""

    def keys(self, kind: Kind, obj: Obj) -> list[Key]:
        return [("", "")]

    def all_keys(self) -> list[Key]:
        return [("", "")]


def record_event(
    rest: Rest,
    obj: Obj,
    type_: str,
    reason: str,
    message: str,
    component: str,
    name: str | None = None,
) -> None:
    meta = obj["metadata"]
    stamp = now()
    event: Obj = {
        "apiVersion": "v1", "kind": "Event", "type": type_, "reason": reason,
        "message": message, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": component}, "reportingComponent": component,
        "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind"),
                           "namespace": meta.get("namespace", ""), "name": meta["name"],
                           "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
        "metadata": {"name": name or f"{meta['name']}.{time.time_ns():x}",
                     "namespace": meta.get("namespace") or "default"},
    }  # fmt: skip
    with contextlib.suppress(ApiError):
        rest.create(EVENT, event["metadata"]["namespace"], event, "Ignore")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def _any_event(queues: list[asyncio.Queue[Any]]) -> None:
    """Returns once any queue has an item (and leaves it there)."""
    if any(not q.empty() for q in queues):
        return
    waiters = [asyncio.ensure_future(_peek(q)) for q in queues]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _peek(queue: asyncio.Queue[Any]) -> None:
    item = await queue.get()
    queue.put_nowait(item)  # back (at the end: order within one batch does not matter here)
