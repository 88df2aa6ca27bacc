"""Host -> pod TCP forwarding for published ports.

The pod's network namespace has only loopback, so podkit listens on the host and, for each
connection, opens a socket *inside* the pod's namespace (setns on this thread for the duration
of one socket() call: sockets keep the namespace they were created in) and relays bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
from collections.abc import Callable

from podkit.runtime import linux
from podkit.runtime.confine import Confinement
from podkit.runtime.ports import Published, port_holder

NOBODY = 65534


class PortTakenError(OSError):
    pass


SocketFactory = Callable[[int], socket.socket]  # address family -> a socket inside the pod


def bind_listener(p: Published) -> socket.socket:
    """Bind the host side now, before anything starts, so a taken port fails early."""
    family = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((p.host_ip, p.host_port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(p.host_port)
            who = f" by {holder}" if holder else ""
            raise PortTakenError(
                exc.errno,
                f"host port {p.host_ip}:{p.host_port} for {p.pod} container {p.container} "
                f"port {p.container_port} is already in use{who}; remap it with "
                f"-p OTHER_PORT:{p.container_port} or use --no-publish",
            ) from None
        raise OSError(
            exc.errno,
            f"cannot listen on {p.url} for {p.pod} port {p.container_port}: {exc.strerror}",
        ) from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def serve(listener: socket.socket, p: Published, sockets: SocketFactory) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        upstream = sockets(socket.AF_INET)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, ("127.0.0.1", p.container_port))
        except OSError:
            upstream.close()
            c_writer.close()  # nothing listens in the pod yet: refuse, as a closed port would
            return
        u_reader, u_writer = await asyncio.open_connection(sock=upstream)
        try:
            await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))
        finally:
            for w in (u_writer, c_writer):
                with contextlib.suppress(Exception):
                    w.close()

    return await asyncio.start_server(handle, sock=listener)


def port_forward(
    pod: str,
    sandbox_pid: int,
    address: str,
    pairs: list[tuple[int, int]],
    say: Callable[[str], None],
    confinement: Confinement | None = None,
) -> int:
    """`podkit port-forward`: serve until SIGINT/SIGTERM or until the pod goes away.

    The listeners are bound on the host first; then this whole process moves into the pod's
    network namespace (and, rootless, its user namespace first, which only a single-threaded
    process may do), so every upstream socket is simply made inside the pod. There it gives up
    what it no longer needs before it relays a byte: `confinement` (see confined_forwarder).
    """
    listeners = []
    pidfd = os.pidfd_open(sandbox_pid)  # readable when the pod's sandbox exits
    try:
        for local, remote in pairs:
            p = Published(pod, "", remote, address, local)
            listeners.append((bind_listener(p), p))
        _join_pod_network(sandbox_pid)
        if confinement is not None:
            confinement.read_program()
            confinement.apply()
    except OSError:
        for sock, _ in listeners:
            sock.close()
        os.close(pidfd)
        raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for sock, p in listeners:
            bound = Published(p.pod, "", p.container_port, address, sock.getsockname()[1])
            await serve(sock, bound, lambda family: socket.socket(family, socket.SOCK_STREAM))
            say(f"Forwarding from {address}:{bound.host_port} -> {p.container_port}")
        loop.add_reader(pidfd, stop.set)
        try:
            await stop.wait()
        finally:
            loop.remove_reader(pidfd)

    try:
        asyncio.run(main())
    finally:
        os.close(pidfd)
    return 0


def confined_forwarder(seccomp: str, rootless: bool) -> Confinement:
    """A port-forward process inside a pod's network is at most a container there: no
    capability, no_new_privs, the RuntimeDefault seccomp filter (`seccomp`: its program file)
    and, as root, the nobody user (rootless, the pod's user namespace maps only its root)."""
    uid = None if rootless else NOBODY
    return Confinement(no_new_privs=True, seccomp=seccomp, uid=uid, gid=uid)


def _join_pod_network(sandbox_pid: int) -> None:
    names = ["net"]
    if os.readlink(f"/proc/{sandbox_pid}/ns/user") != os.readlink("/proc/self/ns/user"):
        names.insert(0, "user")  # rootless: the rights over the pod's netns are in its userns
    for name in names:
        fd = os.open(f"/proc/{sandbox_pid}/ns/{name}", os.O_RDONLY)
        try:
            linux.setns(fd)
        finally:
            os.close(fd)
