"""`kubectl exec` and `attach` over WebSocket, protocol `v5.channel.k8s.io` (the only one
kubectl 1.37 offers first): every binary message is one channel byte and its payload, 0 stdin
(from the client), 1 stdout, 2 stderr, 3 the final metav1.Status, 4 terminal resize (from the
client); 255 closes a channel (`[255, 0]`: stdin is done). With -t the command gets a
pseudo-terminal as its controlling terminal, stdout carries what it shows, and channel 4
resizes it. The exit status goes on channel 3: a non-zero one as reason NonZeroExitCode with an
ExitCode cause, so `kubectl exec ... -- false` exits 1 like the command. A request that cannot
be served (a TTY, another protocol) gets a plain Status answer instead of the upgrade, so
kubectl reports it instead of hanging.

attach reaches a container with `stdin: true` or `tty: true` through its supervisor's attach
socket (runtime/attach.py); any other container's output is followed in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from podkit.api import status
from podkit.api.watch import gone
from podkit.runtime import attach as attach_socket
from podkit.runtime import exec as container_exec
from podkit.runtime import log_read
from podkit.runtime.logs import terminal_output

PROTOCOL = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    shown = orjson.dumps(argv).decode()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"{shown}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def serve(request: web.Request, pod_dir: Path, container: str) -> web.StreamResponse:
    q = request.query
    argv = q.getall("command", [])
    if not argv:
        raise status.bad_request("you must specify at least 1 command")
    ws = web.WebSocketResponse(protocols=(PROTOCOL,))
    if not ws.can_prepare(request).ok or ws.can_prepare(request).protocol != PROTOCOL:
        raise status.bad_request(f"exec needs a WebSocket upgrade with protocol {PROTOCOL}")
    tty = q.get("tty") == "true"
    master, slave = os.openpty() if tty else (-1, -1)
    try:
        proc = await container_exec.start(pod_dir, container, argv, slave if tty else None)
    except container_exec.ExecError as exc:
        if tty:
            os.close(master)
        raise status.ApiError(500, "InternalError", str(exc)) from None
    finally:
        if tty:
            os.close(slave)  # the command holds it now
    await ws.prepare(request)
    if tty:
        pumps = [asyncio.ensure_future(_terminal_out(ws, master))]
        feeding = asyncio.ensure_future(_terminal_in(ws, master))
    else:
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.ensure_future(_pump(ws, proc.stdout, STDOUT)),
            asyncio.ensure_future(_pump(ws, proc.stderr, STDERR)),
        ]
        feeding = asyncio.ensure_future(_feed(ws, proc, q.get("stdin") == "true"))
    try:
        code = await proc.wait()
        await asyncio.gather(*pumps, return_exceptions=True)
        with contextlib.suppress(ConnectionResetError):
            await ws.send_bytes(bytes([ERROR]) + orjson.dumps(exit_status(code, argv)))
            await ws.close()
    finally:
        feeding.cancel()
        if proc.returncode is None:
            proc.kill()
        if tty:
            os.close(master)
    return ws


async def _pump(ws: web.WebSocketResponse, reader: asyncio.StreamReader, channel: int) -> None:
    while chunk := await reader.read(65536):
        await ws.send_bytes(bytes([channel]) + chunk)


async def _terminal_out(ws: web.WebSocketResponse, master: int) -> None:
    """The terminal's output, until the command's side closes."""
    async for chunk in terminal_output(master):
        await ws.send_bytes(bytes([STDOUT]) + chunk)


async def _terminal_in(ws: web.WebSocketResponse, master: int) -> None:
    """Keys into the terminal, and its size as the client's changes (channel 4)."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY or not msg.data:
            continue
        channel, payload = msg.data[0], msg.data[1:]
        if channel == STDIN:
            with contextlib.suppress(OSError):
                os.write(master, payload)
        elif channel == RESIZE:
            attach_socket.set_size(master, payload)


async def _feed(ws: web.WebSocketResponse, proc: asyncio.subprocess.Process, stdin: bool) -> None:
    """The client's stdin into the command's; its close signal, or none asked, ends it."""
    assert proc.stdin is not None
    if not stdin:
        proc.stdin.close()
    async for msg in ws:
        if msg.type != WSMsgType.BINARY or not msg.data:
            continue
        channel, payload = msg.data[0], msg.data[1:]
        if channel == STDIN and stdin and not proc.stdin.is_closing():
            proc.stdin.write(payload)
            with contextlib.suppress(ConnectionResetError):
                await proc.stdin.drain()
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            proc.stdin.close()
    if not proc.stdin.is_closing():
        proc.stdin.close()


def check_attach(request: web.Request, container: dict[str, Any]) -> None:
    """-i needs a container with `stdin: true`, -t one with `tty: true` (the kubelet's
    rules); kubectl itself drops -t for a container without a terminal."""
    name = container.get("name", "")
    if request.query.get("stdin") == "true" and not container.get("stdin"):
        raise status.bad_request(
            f"stdin is not enabled for container {name}: attach without -i, or give it "
            "`stdin: true`"
        )
    if request.query.get("tty") == "true" and not container.get("tty"):
        raise status.bad_request(f"tty is not enabled for container {name}")


def _upgrade(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(PROTOCOL,))
    if ws.can_prepare(request).protocol != PROTOCOL:
        raise status.bad_request(f"attach needs a WebSocket upgrade with protocol {PROTOCOL}")
    return ws


async def attach_stdin(
    request: web.Request, pod_dir: Path, container: dict[str, Any]
) -> web.StreamResponse:
    """`kubectl attach` (and `kubectl run -it`) to a container with stdin or a terminal,
    through its supervisor's attach socket (runtime/attach.py): keys and terminal sizes in,
    its output out as it comes, until the container instance exits or the client goes."""
    ws = _upgrade(request)
    directory = pod_dir / "containers" / container["name"]
    fd, path = attach_socket.socket_path(directory) if directory.is_dir() else (-1, "")
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        raise status.bad_request(f"container {container['name']} is not running") from None
    finally:
        if fd >= 0:
            os.close(fd)
    await ws.prepare(request)
    if request.query.get("stdin") == "true":
        writer.write(attach_socket.frame(STDIN))  # this session has stdin (stdinOnce counts it)
    forwarding = asyncio.ensure_future(_to_container(ws, writer))
    outcome = exit_status(0, [])
    with contextlib.suppress(ConnectionResetError):
        while (got := await attach_socket.read_frame(reader)) is not None:
            kind, payload = got
            if kind == ERROR:
                outcome = {"metadata": {}, "status": "Failure", "message": payload.decode()}
            elif not ws.closed:
                await ws.send_bytes(bytes([kind]) + payload)
        await ws.send_bytes(bytes([ERROR]) + orjson.dumps(outcome))
        await ws.close()
    forwarding.cancel()
    writer.close()
    return ws


async def _to_container(ws: web.WebSocketResponse, writer: asyncio.StreamWriter) -> None:
    """The client's stdin, resizes and stdin close, as frames to the supervisor."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY or not msg.data:
            continue
        channel, payload = msg.data[0], msg.data[1:]
        if channel in (STDIN, RESIZE) or (channel == CLOSE and payload[:1] == bytes([STDIN])):
            writer.write(attach_socket.frame(channel, payload if channel != CLOSE else b""))
            await writer.drain()
    writer.close()  # the client went: its session ends


async def attach(
    request: web.Request, pod_dir: Path, container: dict[str, Any], running: Callable[[], bool]
) -> web.StreamResponse:
    """`kubectl attach` to a container without stdin or terminal: its output from now on,
    each line on its stream's channel, through restarts, until the container's pod stops
    running or the client goes. The caller has refused what check_attach refuses."""
    if container.get("stdin") or container.get("tty"):
        return await attach_stdin(request, pod_dir, container)
    ws = _upgrade(request)
    name = container["name"]
    path = log_read.log_file(pod_dir, name, previous=False)
    offset = path.stat().st_size if path is not None else 0
    await ws.prepare(request)
    # Read what the client sends (nothing but its pings, answered on reading: kubectl gives
    # up on a connection whose pings go unanswered).
    reading = asyncio.ensure_future(_drain(ws))
    with contextlib.suppress(ConnectionResetError):
        while not ws.closed and not gone(request) and running():
            newest = log_read.log_file(pod_dir, name, previous=False)
            if newest is not None and newest != path:  # restarted: its new run's output
                path, offset = newest, 0
            data = b""
            if path is not None:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            whole = data[: data.rfind(b"\n") + 1]
            offset += len(whole)
            for _, stream, line in log_read.lines(whole):
                await ws.send_bytes(bytes([STDERR if stream == b"stderr" else STDOUT]) + line)
            if not whole:
                await asyncio.sleep(0.2)
        await ws.send_bytes(bytes([ERROR]) + orjson.dumps(exit_status(0, [])))
        await ws.close()
    reading.cancel()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass
