"""The proxy engine as a whole: clusters and listeners built from the config, the servers bound,
the ticker that drives timeouts and housekeeping, and a graceful drain."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from podkit.common.config import parse_hostport
from podkit.proxy.access_log import AccessLog
from podkit.proxy.clock import TICK, Clock
from podkit.proxy.cluster import ClusterRuntime
from podkit.proxy.config import Listener, ProxyConfig
from podkit.proxy.credentials import CredentialProvider
from podkit.proxy.listener import ListenerRuntime
from podkit.proxy.session import HttpSession
from podkit.proxy.stats import stats_json
from podkit.proxy.tcp import TcpSession
from podkit.proxy.tls import ServerTls
from podkit.proxy.writes import WriteBatch

log = logging.getLogger("podkit.proxy")

HOUSEKEEPING_EVERY = 1.0  # seconds between idle-pool sweeps and certificate checks


class Proxy:
    def __init__(
        self, config: ProxyConfig, credentials: dict[str, CredentialProvider] | None = None
    ) -> None:
        """`credentials`: by cluster name, what that cluster's requests carry upstream."""
        self.config = config
        self.clock = Clock()
        self.writes = WriteBatch()
        self.access_log = AccessLog(config.access_log.path) if config.access_log.enabled else None
        creds = credentials or {}
        self.clusters = {
            c.name: ClusterRuntime(c, self.clock, self.writes, creds.get(c.name))
            for c in config.clusters
        }
        self.listeners = [
            ListenerRuntime(lc, self.clusters, self.access_log, self.writes)
            for lc in config.listeners
        ]
        self.tls: dict[str, ServerTls] = {}
        self.slots: dict[str, Slot] = {}  # listen address -> its bound server
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = False

    async def start(self, previous: Proxy | None = None) -> None:
        """Resolve clusters, bind every listener (SO_REUSEPORT, so several workers can share a
        port) and start the ticker. On a reload, `previous` hands over its listening servers
        where the address and kind stay the same: new connections simply start coming to this
        proxy, and no connection waiting to be accepted is lost (closing a listening socket
        would reset them, haproxy#1803).
        Raises OSError (port taken) or ssl.SSLError (bad certificate), changing nothing."""
        loop = asyncio.get_running_loop()
        handed: dict[str, Slot] = previous.slots if previous is not None else {}
        if previous is not None:
            self._carry_counters(previous)
        plans: list[tuple[ListenerRuntime, Slot | None, ServerTls | None]] = []
        for listener in self.listeners:
            lc = listener.config
            slot = handed.get(lc.listen)
            if slot is not None and not slot.fits(lc):
                slot = None
            tls = None
            if lc.tls is not None and (slot is None or slot.tls is None):
                tls = ServerTls(lc.tls)  # may raise: nothing is bound or moved yet
            plans.append((listener, slot, tls))
        certificates = [
            (slot.tls, slot.tls.load(listener.config.tls))  # type: ignore[arg-type]
            for listener, slot, _ in plans
            if slot is not None and slot.tls is not None
        ]
        fresh: list[Slot] = []
        try:
            for listener, slot, tls in plans:
                if slot is None:
                    fresh.append(await self._bind(listener, tls))
        except BaseException:
            for made in fresh:
                made.server.close()
            raise
        for tls_of_slot, loaded in certificates:
            tls_of_slot.install(loaded)
        fresh_iter = iter(fresh)
        for listener, slot, _ in plans:
            lc = listener.config
            if slot is None:
                slot = next(fresh_iter)
            else:
                del handed[lc.listen]
            slot.factory = self._factory(listener)
            self.slots[lc.listen] = slot
            if slot.tls is not None:
                self.tls[lc.name] = slot.tls
        self.tasks.append(loop.create_task(self._tick()))
        await asyncio.gather(*(c.resolve() for c in self.clusters.values() if not c.resolved))
        for cluster in self.clusters.values():
            self.tasks.append(loop.create_task(cluster.keep_resolving()))
            cluster.start_health_checks()
        self.ready = all(c.resolved for c in self.clusters.values())

    def _carry_counters(self, previous: Proxy) -> None:
        """Listeners and clusters that keep their name keep their counters across a reload:
        both proxies count into the same objects while the old one drains, so /stats and
        /metrics go on from where they were instead of restarting at zero."""
        old_listeners = {lst.name: lst.stats for lst in previous.listeners}
        for listener in self.listeners:
            if listener.name in old_listeners:
                listener.stats = old_listeners[listener.name]
        for name, cluster in self.clusters.items():
            if name in previous.clusters:
                cluster.stats = previous.clusters[name].stats

    async def _bind(self, listener: ListenerRuntime, tls: ServerTls | None) -> Slot:
        lc = listener.config
        host, port = parse_hostport(lc.listen, default_host="0.0.0.0")
        slot = Slot(lc, tls)
        slot.server = await asyncio.get_running_loop().create_server(
            lambda: slot.factory(),
            host,
            port,
            ssl=tls.context if tls is not None else None,
            reuse_port=True,
            backlog=1024,
            ssl_handshake_timeout=lc.timeouts.header_read if tls is not None else None,
        )
        return slot

    def _factory(self, listener: ListenerRuntime) -> Callable[[], asyncio.Protocol]:
        lc = listener.config
        if lc.protocol == "tcp":
            cluster = self.clusters[lc.cluster]  # type: ignore[index]
            return lambda: TcpSession(listener, cluster)
        return lambda: HttpSession(listener)

    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for slot in self.slots.values():
            for sock in slot.server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    async def _tick(self) -> None:
        clock = self.clock
        next_housekeeping = clock.now + HOUSEKEEPING_EVERY
        while True:
            await asyncio.sleep(TICK)
            now = clock.update()
            for listener in self.listeners:
                listener.expire(now)
            if self.access_log is not None:
                self.access_log.flush()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_EVERY
                self._housekeeping(now)
                if not self.ready:
                    self.ready = all(c.resolved for c in self.clusters.values())

    def _housekeeping(self, now: float) -> None:
        for cluster in self.clusters.values():
            cluster.tick(now)
        for name, tls in self.tls.items():
            try:
                if tls.reload():
                    log.info("certificates reloaded", extra={"listener": name})
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "cannot reload certificates, keeping the old ones",
                    extra={"listener": name, "error": str(exc)},
                )

    async def drain(self, seconds: float, *, close_idle: bool = True) -> None:
        """Stop accepting, let in-flight requests finish (their responses say Connection: close),
        and after `seconds` cut what is left. `close_idle` closes idle keep-alive connections
        at once (shutting down); a reload leaves them to carry one more request instead, since a
        client that sends just as its idle connection closes sees an error."""
        self.ready = False
        self._close_servers()
        for listener in self.listeners:
            listener.draining = True
            if close_idle:
                for session in list(listener.sessions):
                    if isinstance(session, HttpSession):
                        session.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and any(lst.sessions for lst in self.listeners):
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self._close_servers()
        for listener in self.listeners:
            for session in list(listener.sessions):
                if session.transport is not None:
                    session.transport.abort()
        for cluster in self.clusters.values():
            await cluster.stop()
            cluster.close_idle()
        if self.access_log is not None:
            self.access_log.close()

    def _close_servers(self) -> None:
        """Stop accepting on the listeners this proxy still holds (a reload took the others)."""
        for slot in self.slots.values():
            slot.server.close()
        self.slots.clear()

    def stats(self) -> dict[str, Any]:
        return stats_json(
            ((lst.name, lst.stats) for lst in self.listeners),
            ((c.name, c.snapshot()) for c in self.clusters.values()),
        )


class Slot:
    """A bound listener; a reload points its factory at the new proxy's listener."""

    def __init__(self, config: Listener, tls: ServerTls | None) -> None:
        self.kind = (config.protocol, config.tls is not None)
        self.tls = tls
        self.server: asyncio.Server = None  # type: ignore[assignment]
        self.factory: Callable[[], asyncio.Protocol] = lambda: asyncio.Protocol()

    def fits(self, config: Listener) -> bool:
        if (config.protocol, config.tls is not None) != self.kind:
            return False
        return self.tls is None or config.tls is None or self.tls.same_settings(config.tls)
