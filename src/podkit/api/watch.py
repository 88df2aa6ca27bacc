"""Watches: newline-delimited events, each flushed at once, as the apiserver streams them.

From a resourceVersion (the store's history; older than it is 410 Gone), or from now with the
current objects as ADDED; with `sendInitialEvents` the current objects and then a BOOKMARK
annotated `k8s.io/initial-events-end`, which kubectl's delete and wait need (without it they
re-watch forever); label and field selectors; Table events; timeoutSeconds. A watch ends
when its client goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime

import orjson
from aiohttp import web

from podkit.api import selectors, status, tables
from podkit.api.kinds import Kind, Obj
from podkit.api.rest import Rest
from podkit.api.tables import JSON
from podkit.store.objects import Event, StoreError


async def stream(
    request: web.Request,
    rest: Rest,
    kind: Kind,
    namespace: str | None,
    labels: list[selectors.Requirement],
    fields: list[selectors.Requirement],
) -> web.StreamResponse:
    q = request.query
    as_table = tables.wanted(request.headers.get("Accept", ""))
    timeout = float(q.get("timeoutSeconds", "0") or 0) or None
    store = rest.store
    prefix = rest.prefix(kind, namespace)
    queue = store.subscribe(prefix)  # first: no write falls between history and live
    try:
        initial = q.get("sendInitialEvents") == "true"
        rv_text = q.get("resourceVersion", "")
        replay: list[Event] = []
        if initial or rv_text in ("", "0"):
            items, last = rest.list_objects(kind, namespace)
            replay = [Event("ADDED", "", int(o["metadata"]["resourceVersion"]), o) for o in items]
        else:
            try:
                last = int(rv_text)
            except ValueError:
                raise status.bad_request(f"invalid resourceVersion {rv_text!r}") from None
            try:
                replay = [
                    Event(e.type, e.key, e.rv, rest.outward(kind, e.object))
                    for e in store.events_since(last, prefix)
                ]
            except StoreError as exc:
                raise status.expired(str(exc)) from None
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client went
            writer = _EventWriter(response, kind, as_table)
            for event in replay:
                if selectors.matches(event.object, labels, fields):
                    await writer.send(event.type, event.object)
                last = max(last, event.rv)
            if initial:
                mark = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                    "resourceVersion": str(last),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}  # fmt: skip
                await writer.send("BOOKMARK", mark, raw=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while True:
                wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if wait <= 0 or gone(request):
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    continue  # a look at the deadline and at the client, then on
                obj = rest.outward(kind, event.object)
                if event.rv > last and selectors.matches(obj, labels, fields):
                    await writer.send(event.type, obj)
            await response.write_eof()
        return response
    finally:
        store.unsubscribe(queue)


class _EventWriter:
    """Newline-delimited watch events, flushed one by one; Table events carry the columns in
    the first only, as the apiserver sends them."""

    def __init__(self, response: web.StreamResponse, kind: Kind, as_table: bool) -> None:
        self.response, self.kind, self.as_table = response, kind, as_table
        self.headers_sent = False

    async def send(self, type_: str, obj: Obj, raw: bool = False) -> None:
        if self.as_table and not raw:
            obj = tables.table(self.kind, [obj], datetime.datetime.now(datetime.UTC))
            if self.headers_sent:
                obj["columnDefinitions"] = None
            self.headers_sent = True
        await self.response.write(orjson.dumps({"type": type_, "object": obj}) + b"\n")


def gone(request: web.Request) -> bool:
    """The client hung up (a watch notices no other way while nothing is written)."""
    return request.transport is None or request.transport.is_closing()
