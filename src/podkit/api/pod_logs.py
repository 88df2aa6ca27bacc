"""`kubectl logs` for podkit serve, from the CRI files the node writes (runtime/log_read.py):
-c, --previous, --tail, --since, --timestamps, --limit-bytes, and -f, which follows across
restarts until the pod is gone or finished."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from pathlib import Path

from aiohttp import web

from podkit.api import status
from podkit.api.kinds import POD, Obj
from podkit.api.rest import Rest
from podkit.api.watch import gone
from podkit.runtime import log_read


async def serve(request: web.Request, rest: Rest, pod: Obj, pod_dir: Path) -> web.StreamResponse:
    """`kubectl logs`, from the CRI files the node writes: -c, --previous, --tail,
    --since, --timestamps, --limit-bytes, and -f, which follows across restarts."""
    q, name = request.query, pod["metadata"]["name"]
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    every = names + [c["name"] for c in pod["spec"].get("initContainers") or []]
    container = q.get("container") or (names[0] if len(names) == 1 else "")
    if container not in every:
        raise status.bad_request(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            if not container
            else f"container {container} is not valid for pod {name}"
        )
    previous = q.get("previous") == "true"
    path = log_read.log_file(pod_dir, container, previous)
    if path is None:
        raise status.bad_request(
            f'previous terminated container "{container}" in pod "{name}" not found'
            if previous
            else f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
        )
    since = None
    if q.get("sinceSeconds"):
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=int(q["sinceSeconds"])
        )
    elif q.get("sinceTime"):
        since = datetime.datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
    opts = log_read.Options(
        timestamps=q.get("timestamps") == "true",
        tail=int(q["tailLines"]) if q.get("tailLines") else None,
        since=since,
        limit_bytes=int(q["limitBytes"]) if q.get("limitBytes") else None,
    )
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if q.get("follow") != "true" or previous:
        return web.Response(body=log_read.render(whole, opts), content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client went
        await response.write(log_read.render(whole, opts))
        await _follow(request, rest, response, pod, pod_dir, container, path, len(whole), opts)
    return response


async def _follow(
    request: web.Request,
    rest: Rest,
    response: web.StreamResponse,
    pod: Obj,
    pod_dir: Path,
    container: str,
    path: Path,
    offset: int,
    opts: log_read.Options,
) -> None:
    """New lines as they are written, through restarts (a newer file), until the pod is
    gone or has finished and its last line is out."""
    meta = pod["metadata"]
    later = log_read.Options(timestamps=opts.timestamps)
    while not gone(request):
        await asyncio.sleep(0.2)
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        if whole:
            offset += len(whole)
            await response.write(log_read.render(whole, later))
            continue
        newest = log_read.log_file(pod_dir, container, previous=False)
        if newest is not None and newest != path:
            path, offset = newest, 0
            continue
        current = rest.store.get(rest.key(POD, meta["namespace"], meta["name"]))
        phase = (current or {}).get("status", {}).get("phase")
        if current is None or current["metadata"]["uid"] != meta["uid"] or phase in (
            "Succeeded", "Failed"
        ):  # fmt: skip
            break
    await response.write_eof()
