"""A cluster at run time: its endpoints (DNS names resolved and re-resolved), the balancer, a pool
of idle connections per endpoint, circuit-breaker counts and the queue of requests waiting for a
connection."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any

from podkit.common.config import parse_hostport
from podkit.proxy.balancer import make_balancer
from podkit.proxy.config import Cluster
from podkit.proxy.health import OutlierDetector, RetryBudget
from podkit.proxy.stats import ClusterStats, histogram_json, status_counts
from podkit.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from podkit.proxy.clock import Clock
    from podkit.proxy.credentials import CredentialProvider
    from podkit.proxy.health_check import ActiveHealthChecker
    from podkit.proxy.session import HttpSession
    from podkit.proxy.writes import WriteBatch

log = logging.getLogger("podkit.proxy")

# Seconds an idle connection must have stayed quiet before another client's request may take it
# (its own client's may at once): bytes a confused backend sends after a response would be taken
# for that request's response. Any that come meanwhile close the connection (data_received).
SETTLE = 1.0


class UpstreamHost:
    """One endpoint address (an IP and port); what the balancer picks."""

    __slots__ = (
        "key", "ip", "port", "weight", "active", "available", "idle", "connections", "name",
        "healthy", "ejected",
    )  # fmt: skip

    def __init__(self, ip: str, port: int, weight: int, name: str) -> None:
        self.key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.ip = ip
        self.port = port
        self.weight = weight
        self.name = name  # the configured host name (for TLS SNI and Host checks)
        self.active = 0  # requests in flight
        self.available = True  # healthy and not ejected: what the balancer looks at
        self.healthy = True  # by active health checks
        self.ejected = False  # by outlier detection
        # pooled connections, oldest first (a dict: a client takes back its own in O(1))
        self.idle: dict[UpstreamConnection, None] = {}
        self.connections = 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def client_ssl_context(config: Cluster) -> ssl.SSLContext | None:
    tls = config.tls
    if tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ClusterRuntime:
    def __init__(
        self,
        config: Cluster,
        clock: Clock,
        writes: WriteBatch,
        credentials: CredentialProvider | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.writes = writes  # the Proxy's: every write to an upstream connection goes through it
        self.stats = ClusterStats()
        self.ssl = client_ssl_context(config)
        self.credentials = credentials  # added to every request (the auth-adapter's tokens)
        self.limits = config.circuit_breaker
        self.idle_timeout = config.timeouts.idle
        self.hosts: list[UpstreamHost] = []
        self.balancer = make_balancer(config.lb, self.hosts)
        self.hash_on = config.hash_on
        self.connections = 0  # open or opening
        self.active_requests = 0
        self.pending: deque[HttpSession] = deque()
        od = config.outlier_detection
        self.outlier = (
            OutlierDetector(
                od.consecutive_5xx,
                od.consecutive_connect_failures,
                od.base_ejection,
                od.max_ejection,
                od.max_ejection_percent,
            )
            if od is not None
            else None
        )
        self.budget = RetryBudget(config.retry_budget.percent, config.retry_budget.min_concurrency)
        self.active_retries = 0
        self.checker: ActiveHealthChecker[UpstreamHost] | None = None
        self._targets = [(*parse_hostport(e.address), e.weight) for e in config.endpoints]
        self.resolved = all(_is_ip(h) for h, _, _ in self._targets)
        if self.resolved:
            self._set_hosts([(h, p, w, h) for h, p, w in self._targets])

    # -- endpoints ---------------------------------------------------------------------------

    def _set_hosts(self, wanted: list[tuple[str, int, int, str]]) -> None:
        """Keep hosts (and their pools) that stay; add new ones; close the pools of removed ones."""
        old = {h.key: h for h in self.hosts}
        hosts = []
        for ip, port, weight, name in wanted:
            host = UpstreamHost(ip, port, weight, name)
            kept = old.pop(host.key, None)
            if kept is not None:
                kept.weight = weight
                host = kept
            hosts.append(host)
        for gone in old.values():
            for conn in gone.idle:
                conn.pooled = False
                conn.close()
            gone.idle.clear()
        self.hosts = hosts
        self.balancer.set_hosts(hosts)
        if self.outlier is not None:
            self.outlier.set_hosts(h.key for h in hosts)

    async def resolve(self) -> bool:
        """Resolve DNS names now; the known hosts stay when resolution fails (and it is logged)."""
        loop = asyncio.get_running_loop()
        wanted: list[tuple[str, int, int, str]] = []
        for host, port, weight in self._targets:
            if _is_ip(host):
                wanted.append((host, port, weight, host))
                continue
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning(
                    "cannot resolve endpoint",
                    extra={"cluster": self.name, "endpoint": f"{host}:{port}", "error": str(exc)},
                )
                return False
            for ip in sorted({str(info[4][0]) for info in infos}):
                wanted.append((ip, port, weight, host))
        self._set_hosts(wanted)
        self.resolved = True
        return True

    async def keep_resolving(self) -> None:
        """Re-resolve DNS names every dns_refresh seconds, as long as the cluster lives."""
        if all(_is_ip(h) for h, _, _ in self._targets):
            return
        while True:
            await asyncio.sleep(self.config.dns_refresh)
            await self.resolve()

    # -- health -----------------------------------------------------------------------------

    def record_result(self, host: UpstreamHost, result: str) -> None:
        """What one request saw of a host: "success", "5xx" or "connect_failure"."""
        outlier = self.outlier
        if outlier is not None and outlier.record(host.key, result, self.clock.now):
            host.ejected = True
            host.available = False
            self.stats.ejections += 1
            log.warning(
                "endpoint ejected",
                extra={"cluster": self.name, "endpoint": host.key, "after": result},
            )

    def retry_allowed(self) -> bool:
        return self.budget.allows(self.active_requests, self.active_retries)

    def start_health_checks(self) -> None:
        config = self.config.health_check
        if config is None:
            return
        from podkit.proxy.health_check import ActiveHealthChecker

        tls = self.config.tls
        self.checker = ActiveHealthChecker(
            config,
            lambda: self.hosts,
            self._health_changed,
            ssl_context=self.ssl,
            server_name=tls.server_name if tls is not None else None,
        )
        self.checker.start()

    def _health_changed(self, host: UpstreamHost, healthy: bool) -> None:
        host.healthy = healthy
        host.available = healthy and not host.ejected
        log.warning(
            "endpoint healthy" if healthy else "endpoint unhealthy",
            extra={"cluster": self.name, "endpoint": host.key},
        )

    def tick(self, now: float) -> None:
        """Once a second: end ejections that are over, close idle connections past their time."""
        if self.outlier is not None:
            for key in self.outlier.tick(now):
                for host in self.hosts:
                    if host.key == key:
                        host.ejected = False
                        host.available = host.healthy
        for host in self.hosts:
            expired = [c for c in host.idle if c.idle_deadline <= now or not c.alive]
            for conn in expired:
                conn.close()

    async def stop(self) -> None:
        if self.checker is not None:
            await self.checker.stop()

    # -- connections -------------------------------------------------------------------------

    def checkout(self, host: UpstreamHost, session: HttpSession) -> UpstreamConnection | None:
        """An idle connection to `host` for `session`'s request, or None (connect a new one).

        The session's own connection (the one its previous request used) when it waits in the
        pool. Another client's only once it has been quiet for SETTLE seconds and has no byte
        waiting unread: HAProxy's http-reuse safe gives a client's first request a fresh
        connection; this goes further, for every request, and still shares a pool."""
        idle = host.idle
        if not idle:
            return None
        now = self.clock.now
        own = session.own_connections.get(host)
        if own is not None and own.pooled:
            del idle[own]
            own.pooled = False
            if own.alive and own.idle_deadline > now:
                return own
            own.close()
        settled = now - SETTLE
        for conn in reversed(list(idle)):  # the most recently pooled first
            if conn.idle_since <= settled or not conn.alive:
                del idle[conn]
                conn.pooled = False
                if conn.alive and conn.idle_deadline > now and conn.quiet():
                    return conn
                conn.close()
        return None

    def connect(self, host: UpstreamHost, session: HttpSession) -> None:
        self.connections += 1
        host.connections += 1
        self.stats.connections_total += 1
        asyncio.get_running_loop().create_task(self._connect(host, session, session.attempt))

    def server_name(self, host: UpstreamHost) -> str:
        """The name TLS to `host` sends (SNI) and checks: the configured one, else the host's."""
        tls = self.config.tls
        return (tls.server_name if tls is not None else None) or host.name

    async def _connect(self, host: UpstreamHost, session: HttpSession, attempt: int) -> None:
        """Connect for the session's try number `attempt`. A session that moved on meanwhile
        (the try timed out, the request ended) no longer wants this connection: it is pooled,
        or a failure is only counted."""
        loop = asyncio.get_running_loop()
        server_hostname = self.server_name(host) if self.ssl is not None else None
        try:
            async with asyncio.timeout(self.config.timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, host),
                    host.ip,
                    host.port,
                    ssl=self.ssl,
                    server_hostname=server_hostname,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.connections -= 1
            host.connections -= 1
            self.stats.connect_failures += 1
            reason = "connect timeout" if isinstance(exc, TimeoutError) else _short(exc)
            if session.attempt == attempt:
                session.connect_failed(host, reason)
            else:
                self.record_result(host, "connect_failure")
            self._serve_pending()
            return
        if session.attempt == attempt:
            session.connected(conn)
        else:
            self.release(conn, fresh=True)

    def release(
        self, conn: UpstreamConnection, owner: HttpSession | None = None, fresh: bool = False
    ) -> None:
        """A response is done: pool the connection if it can carry another request (`owner`,
        the session it served, may take it back at once; see checkout). A `fresh` one never
        carried a request: anyone may take it."""
        conn.session = None
        if not conn.reusable():
            conn.close()
            return
        if self.pending:
            # At the connection limit a waiting request takes it as it is: but not with bytes
            # already waiting on it (they would be taken for its response).
            if conn.quiet():
                self.pending.popleft().connected(conn)
            else:
                conn.close()  # its slot goes to the waiting request (connection_closed)
            return
        self.pool(conn, owner, fresh)

    def pool(
        self, conn: UpstreamConnection, owner: HttpSession | None, fresh: bool = False
    ) -> None:
        now = self.clock.now
        conn.idle_deadline = now + self.idle_timeout
        conn.idle_since = -SETTLE if fresh else now
        conn.pooled = True
        conn.host.idle[conn] = None
        if owner is not None:
            owner.own_connections[conn.host] = conn

    def connection_closed(self, conn: UpstreamConnection) -> None:
        self.connections -= 1
        conn.host.connections -= 1
        if conn.pooled:
            conn.pooled = False
            del conn.host.idle[conn]
        self._serve_pending()

    def _serve_pending(self) -> None:
        # A freed connection slot goes to the longest-waiting request.
        while self.pending and self.connections < self.limits.max_connections:
            self.pending.popleft().dispatch()

    def close_idle(self) -> None:
        for host in self.hosts:
            for conn in list(host.idle):
                conn.close()

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        return {
            "lb": self.config.lb,
            "active_requests": self.active_requests,
            "connections": self.connections,
            "pending": len(self.pending),
            "requests": status_counts(s.requests),
            "connect_failures": s.connect_failures,
            "resets": s.resets,
            "timeouts": s.timeouts,
            "retries": s.retries,
            "overflows": s.overflows,
            "no_healthy": s.no_healthy,
            "ejections": s.ejections,
            "auth_retries": s.auth_retries,
            "latency": histogram_json(s.latency),
            "endpoints": [
                {
                    "address": h.key,
                    "name": h.name,
                    "weight": h.weight,
                    "available": h.available,
                    "active_requests": h.active,
                    "connections": h.connections,
                    "idle": len(h.idle),
                }
                for h in self.hosts
            ],
        }


def _short(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
