"""A listener at run time: what every session on it shares (routes, clusters, limits, stats,
access log), and the bookkeeping of its open sessions."""

from __future__ import annotations

import ipaddress
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from podkit.common.clock import rfc3339
from podkit.proxy import h1
from podkit.proxy.http1 import host_without_port
from podkit.proxy.routing import Router
from podkit.proxy.stats import BUCKETS, ListenerStats

if TYPE_CHECKING:
    from podkit.proxy.access_log import AccessLog
    from podkit.proxy.cluster import ClusterRuntime
    from podkit.proxy.config import Listener
    from podkit.proxy.h1 import RequestHead
    from podkit.proxy.routing import CompiledRoute
    from podkit.proxy.session import HttpSession
    from podkit.proxy.tcp import TcpSession
    from podkit.proxy.writes import WriteBatch


PREPARED_CACHE = 1024  # distinct request heads remembered per listener
CACHEABLE_HEAD = 2048  # bytes; longer heads (big cookies) are parsed every time


class Prepared:
    """Everything about a request that follows from its head bytes alone: parsed once, reused
    for every identical head (a client polling the same URL sends the same bytes each time)."""

    __slots__ = (
        "head",
        "host",
        "path",
        "query",
        "route",
        "error",
        "upstream_start",
        "trusted_start",
        "fast",
    )

    def __init__(
        self,
        head: RequestHead,
        router: Router,
        clusters: dict[str, ClusterRuntime],
        config: Listener,
    ) -> None:
        self.head = head
        self.host = head.host
        # An HTTP/1.0 request may come without Host: give it the listener's default (Envoy's
        # default_host_for_http_10), or send it on as HTTP/1.0, never as HTTP/1.1 without one.
        version = b" HTTP/1.1\r\n"
        add_host = b""
        if not head.host and head.version == b"1.0":
            if config.default_host_for_http_10 is not None:
                self.host = config.default_host_for_http_10.encode()
                add_host = b"host: " + self.host + b"\r\n"
            else:
                version = b" HTTP/1.0\r\n"
        self.route: CompiledRoute | None = None
        # The cluster, when the request can take the session's fast path: no body, no upgrade,
        # no hashing on its content.
        self.fast: ClusterRuntime | None = None
        self.error: tuple[int, str] | None = None
        # request line and forwarded fields, before X-Forwarded-*: for any client, and for a
        # trusted one (whose Forwarded and X-Real-IP are kept, as its X-Forwarded-* are)
        self.upstream_start = self.trusted_start = b""
        target = head.target
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
        elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            # absolute-form (this proxy as a client's HTTP proxy): the authority is the host
            authority, slash, after = target.split(b"://", 1)[1].partition(b"/")
            path, _, query = (slash + after or b"/").partition(b"?")
            self.host = authority
        elif target == b"*" and head.method == b"OPTIONS":
            path, query = b"*", b""
        elif head.method == b"CONNECT":
            path, query = b"", b""
            self.error = (405, "CONNECT is not supported")
        else:
            path, query = b"", b""
            self.error = (400, "invalid request target")
        self.path = path
        self.query = query
        if self.error is not None:
            return
        route = router.only or router.match(
            head.method, host_without_port(self.host), path, head.fields
        )
        self.route = route
        if route is None or route.cluster is None:
            return
        if route.rewrite is not None:
            path = route.rewrite_path(path)
        target = path + b"?" + query if query else path
        cluster = clusters[route.cluster]
        drop = list(head.drop)
        if head.proxy_authorization and not route.forward_proxy_authorization:
            drop += head.proxy_authorization  # credentials for this hop, not the upstream
        replaced = []
        if route.host_rewrite is not None:
            replaced.append(b"host")
        if cluster.credentials is not None:
            replaced.append(b"authorization")  # the provider's credential, never the client's
        line = b"".join((head.method, b" ", target, version, add_host))
        self.upstream_start = self.trusted_start = line + _fields(
            head.fields, drop, replaced, route.host_rewrite
        )
        if head.client_forwarded and config.strip_untrusted_forwarded:
            self.upstream_start = line + _fields(
                head.fields, drop + list(head.client_forwarded), replaced, route.host_rewrite
            )
        if not (head.chunked or head.content_length or head.upgrade or cluster.hash_on):
            self.fast = cluster


def _fields(
    fields: bytes, drop: list[tuple[int, int]], replaced: list[bytes], host: bytes | None
) -> bytes:
    """The client's header lines as sent upstream: minus the `drop` spans and the `replaced`
    fields, with the route's Host first when it rewrites it."""
    if drop:
        fields = h1.without(fields, sorted(drop))
    if replaced:
        fields = h1.without_fields(fields, replaced)
    return b"host: " + host + b"\r\n" + fields if host is not None else fields


class ListenerRuntime:
    def __init__(
        self,
        config: Listener,
        clusters: dict[str, ClusterRuntime],
        access_log: AccessLog | None,
        writes: WriteBatch,
    ) -> None:
        self.config = config
        self.writes = writes  # the Proxy's: every write to a client connection goes through it
        self.name = config.name
        self.clusters = clusters
        self.access_log = access_log
        self.router = Router(config.routes)
        self.limits = config.limits
        self.timeouts = config.timeouts
        self.scheme = b"https" if config.tls is not None else b"http"
        self.forwarded = config.forwarded_headers
        self.stats = ListenerStats()
        self.sessions: set[HttpSession | TcpSession] = set()
        self.draining = False
        self.prepared: dict[bytes, Prepared] = {}
        self._trusted = list(config.trusted_cidrs)
        self._trust_cache: dict[str, bool] = {}

    def prepare(self, key: bytes, head: RequestHead) -> Prepared:
        prep = Prepared(head, self.router, self.clusters, self.config)
        if len(key) <= CACHEABLE_HEAD:
            cache = self.prepared
            if len(cache) >= PREPARED_CACHE:
                cache.clear()  # simpler than LRU, and a full cache means heads rarely repeat
            cache[key] = prep
        return prep

    def is_trusted(self, ip: str) -> bool:
        if not self._trusted:
            return False
        known = self._trust_cache.get(ip)
        if known is None:
            addr = ipaddress.ip_address(ip)
            known = any(addr in net for net in self._trusted)
            if len(self._trust_cache) < 10000:
                self._trust_cache[ip] = known
        return known

    def opened(self, session: HttpSession | TcpSession) -> None:
        self.sessions.add(session)
        self.stats.connections_total += 1
        self.stats.active_connections += 1

    def closed(self, session: HttpSession | TcpSession) -> None:
        self.sessions.discard(session)
        self.stats.active_connections -= 1

    def finished(
        self, session: HttpSession, head: RequestHead, status: int, cluster: ClusterRuntime | None
    ) -> float:
        """One request is done (answered, failed or abandoned): count it and log it. Status 0:
        the connection was cut mid-exchange (session.aborted says why). Returns the time now
        (time.monotonic(), the clock of the session's deadlines)."""
        now = time.monotonic()
        elapsed = now - session.started
        stats = self.stats
        requests = stats.requests
        requests[status] = requests.get(status, 0) + 1
        bucket = bisect_left(BUCKETS, elapsed)
        latency = stats.latency
        latency.counts[bucket] += 1
        latency.sum += elapsed
        if cluster is not None:
            cstats = cluster.stats
            requests = cstats.requests
            requests[status] = requests.get(status, 0) + 1
            latency = cstats.latency
            latency.counts[bucket] += 1
            latency.sum += elapsed
        log = self.access_log
        if log is None:
            return now
        route = session.route
        entry = {
            "time": rfc3339(),
            "listener": self.name,
            "client": session.client_ip,
            "method": head.method.decode("latin-1"),
            "target": head.target.decode("latin-1"),
            "host": session.host.decode("latin-1"),
            "protocol": "HTTP/" + head.version.decode(),
            "status": status or "-",
            "bytes_sent": session.resp_bytes,
            "duration_ms": round(elapsed * 1000, 3),
            "route": route.name if route is not None else None,
            "cluster": cluster.name if cluster is not None else None,
            "upstream": session.upstream_key or None,
            "attempts": len(session.tried),
            "request_id": session.request_id.decode("latin-1") or None,
            "user_agent": _text(h1.field_value(head.fields, b"user-agent")),
        }
        if not status:
            entry["abort"] = session.aborted
        log.write(entry)
        return now

    def expire(self, now: float) -> None:
        for session in [s for s in self.sessions if s.dkind and s.deadline <= now]:
            session.expire(now)  # type: ignore[union-attr]


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
