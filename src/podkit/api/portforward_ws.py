"""`kubectl port-forward` through podkit serve: SPDY/3.1 inside a WebSocket, protocol
`SPDY/3.1+portforward.k8s.io` (the only one kubectl 1.37 offers), framed by api/spdy.py.

Each local connection is a pair of streams with the same requestid: on the data stream the
bytes go to and from the pod's port (a TCP connection to 127.0.0.1:port made inside the pod's
network namespace, as the kubelet's port-forward does); the error stream carries the text of a
failure, such as a refused connection. As root only: a socket inside another network namespace
is made from a thread that joins it, which an ordinary user's process with threads cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from podkit.api import spdy, status
from podkit.runtime import linux

PROTOCOL = "SPDY/3.1+portforward.k8s.io"


def pod_socket(sandbox_pid: int) -> socket.socket:
    """A TCP socket inside the pod's network namespace (sockets keep the namespace they were
    made in): made by a short-lived thread that joins the namespace, so serve's own threads
    never change namespace."""
    made: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            fd = os.open(f"/proc/{sandbox_pid}/ns/net", os.O_RDONLY)
            try:
                linux.setns(fd)
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            made.append(exc)

    worker = threading.Thread(target=inside)
    worker.start()
    worker.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


@dataclass
class _Request:
    port: int = 0
    error: int = 0  # stream ids
    data: int = 0
    writer: asyncio.StreamWriter | None = None
    pump: asyncio.Future[None] | None = None
    pending: list[bytes] = field(default_factory=list)  # data before the connection is up


async def serve(request: web.Request, sandbox_pid: int) -> web.StreamResponse:
    if os.geteuid() != 0:
        raise status.bad_request("kubectl port-forward needs podkit serve to run as root; "
                                 "use `podkit port-forward`")  # fmt: skip
    ws = web.WebSocketResponse(protocols=(PROTOCOL,))
    if ws.can_prepare(request).protocol != PROTOCOL:
        raise status.bad_request(f"port-forward needs a WebSocket with protocol {PROTOCOL}")
    await ws.prepare(request)
    session = spdy.Session()
    requests: dict[str, _Request] = {}
    by_stream: dict[int, _Request] = {}
    send_lock = asyncio.Lock()

    async def send(frame: bytes) -> None:
        async with send_lock:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(frame)

    async def connect(r: _Request) -> None:
        try:
            sock = pod_socket(sandbox_pid)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", r.port))
            reader, r.writer = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            text = f"error forwarding port {r.port} to pod: {exc.strerror or exc}"
            await send(session.data(r.error, text.encode(), fin=True))
            await send(session.data(r.data, b"", fin=True))
            return
        for chunk in r.pending:
            r.writer.write(chunk)
        r.pending.clear()
        while chunk := await reader.read(65536):
            await send(session.data(r.data, chunk))
        await send(session.data(r.data, b"", fin=True))
        await send(session.data(r.error, b"", fin=True))

    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            for event in session.receive(msg.data):
                if isinstance(event, spdy.Opened):
                    await send(session.reply(event.stream))
                    key = event.headers.get("requestid", "")
                    r = requests.setdefault(key, _Request())
                    by_stream[event.stream] = r
                    if event.headers.get("streamtype") == "error":
                        r.error = event.stream
                    else:
                        r.data, r.port = event.stream, int(event.headers.get("port", "0"))
                    if r.error and r.data and r.pump is None:
                        r.pump = asyncio.ensure_future(connect(r))
                elif isinstance(event, spdy.Data) and event.stream in by_stream:
                    r = by_stream[event.stream]
                    if event.stream != r.data:
                        continue  # the client's side of the error stream: nothing to do
                    if r.writer is None:
                        r.pending.append(event.payload)
                    elif event.payload:
                        r.writer.write(event.payload)
                    if event.fin and r.writer is not None and r.writer.can_write_eof():
                        r.writer.write_eof()
                elif isinstance(event, spdy.Ping):
                    await send(session.ping(event.body))
                elif isinstance(event, spdy.GoAway):
                    break
    except spdy.SpdyError:
        pass
    finally:
        for r in requests.values():
            if r.pump is not None:
                r.pump.cancel()
            if r.writer is not None:
                r.writer.close()
    return ws
