"""Raw TCP listeners: each client connection gets its own upstream connection and bytes pass
through untouched, either way, with flow control (server-speaks-first protocols included: nothing
waits for the client to talk)."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from podkit.proxy.upstream import ClientSide

if TYPE_CHECKING:
    from podkit.proxy.cluster import ClusterRuntime, UpstreamHost
    from podkit.proxy.listener import ListenerRuntime

CONNECT_ATTEMPTS = 3  # different endpoints tried before the client connection is closed


class _Pipe(asyncio.Protocol):
    """The upstream half: what it reads goes to the client."""

    def __init__(self, client: TcpSession) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.to_client(data)

    def eof_received(self) -> bool:
        self.client.upstream_eof()
        return True  # keep our sending side open: the client may still be talking

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_closed()

    def pause_writing(self) -> None:
        self.client.pause_client()

    def resume_writing(self) -> None:
        self.client.resume_client()


class TcpSession(ClientSide, asyncio.Protocol):
    dkind = 0  # no deadline: a tunnel lives as long as both ends keep it
    deadline = float("inf")  # never due

    def __init__(self, listener: ListenerRuntime, cluster: ClusterRuntime) -> None:
        self.listener = listener
        self.writes = listener.writes  # every write, half-close and close goes through it
        self.cluster = cluster
        self.transport: asyncio.Transport | None = None
        self.upstream: _Pipe | None = None
        self.host: UpstreamHost | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.client_eof = False
        self.client_ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.listener.opened(self)
        self.cluster.active_requests += 1
        self.writes.busy += 1
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        cluster = self.cluster
        loop = asyncio.get_running_loop()
        tried: list[UpstreamHost] = []
        for _ in range(CONNECT_ATTEMPTS):
            host = cluster.balancer.pick(self.client_ip, tried)  # ring hash: on the client IP
            if host is None or self.closed:
                break
            tried.append(host)
            cluster.stats.connections_total += 1
            try:
                async with asyncio.timeout(cluster.config.timeouts.connect):
                    _, pipe = await loop.create_connection(
                        lambda: _Pipe(self),
                        host.ip,
                        host.port,
                        ssl=cluster.ssl,
                        server_hostname=cluster.server_name(host) if cluster.ssl else None,
                    )
            except (OSError, TimeoutError, ssl.SSLError):
                cluster.stats.connect_failures += 1
                cluster.record_result(host, "connect_failure")
                continue
            cluster.record_result(host, "success")
            if self.closed:
                assert pipe.transport is not None
                pipe.transport.close()
                return
            self.upstream = pipe
            self.host = host
            host.active += 1
            cluster.connections += 1
            transport = pipe.transport
            assert transport is not None
            for data in self.pending:
                self.writes.write(transport, data)
            self.pending.clear()
            if self.client_eof:
                self.writes.write_eof(transport)
            self.resume_client()  # reading paused while too much waited for this connection
            return
        self._close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # closing at the pass's end (proxy/writes.py): nothing more goes upstream
        up = self.upstream
        if up is not None and up.transport is not None:
            self.writes.write(up.transport, data)
        else:
            self.pending.append(data)
            if sum(map(len, self.pending)) > 256 * 1024 and self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True  # passed on now, or once the upstream connection is up
        up = self.upstream
        if up is not None and up.transport is not None:
            self.writes.write_eof(up.transport)
        return True

    def to_client(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.writes.write(self.transport, data)

    def upstream_eof(self) -> None:
        if not self.closed and self.transport is not None:
            self.writes.write_eof(self.transport)

    def upstream_closed(self) -> None:
        if self.host is not None:
            self.host.active -= 1
            self.cluster.connections -= 1
            self.host = None
        self.upstream = None
        self._close()

    def pause_client(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_client(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
        self.listener.closed(self)
        self.cluster.active_requests -= 1
        self.writes.busy -= 1
        up = self.upstream
        if up is not None and up.transport is not None:
            self.writes.close(up.transport)

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.writes.close(self.transport)
        self.closed = True
