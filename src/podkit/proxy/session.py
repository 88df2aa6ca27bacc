"""One client connection on an HTTP(S) listener: frame requests (h1.py), route them, hold an
upstream connection for each, stream both bodies with flow control, retry what is safe to retry,
and answer errors itself.

Requests on a connection are proxied one at a time, in order: bytes that arrive while a response
is still due (pipelining) wait unparsed, and reading pauses when they pile up, so responses can
never be reordered.

Timeouts run off one deadline per connection, checked by the ticker (see clock.py): HEAD (a
request head must arrive within header_read), BODY (at most body_idle between body bytes),
UPSTREAM (the route's timeout for the response) and IDLE (keep-alive between requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from time import monotonic
from typing import TYPE_CHECKING

from podkit.proxy import h1, http1
from podkit.proxy.credentials import Refused
from podkit.proxy.routing import redirect_location
from podkit.proxy.upstream import ClientSide

if TYPE_CHECKING:
    from podkit.proxy.cluster import ClusterRuntime, UpstreamHost
    from podkit.proxy.credentials import Credential, CredentialProvider
    from podkit.proxy.listener import ListenerRuntime, Prepared
    from podkit.proxy.routing import CompiledRoute
    from podkit.proxy.upstream import UpstreamConnection

log = logging.getLogger("podkit.proxy")

D_NONE, D_HEAD, D_BODY, D_UPSTREAM, D_IDLE = range(5)
# What the client side is doing.
S_HEAD, S_BODY, S_WAIT, S_TUNNEL = range(4)
MAX_BUFFERED = 64 * 1024  # pipelined bytes held while a response is due, before reading pauses
MAX_REPLAY = 64 * 1024  # request body bytes kept so a retry can send them again
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_END = b"\r\n"
_END_CLOSE = b"connection: close\r\n\r\n"


class HttpSession(ClientSide, asyncio.Protocol):
    def __init__(self, listener: ListenerRuntime) -> None:
        self.listener = listener
        self.writes = listener.writes
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.client_ip_b = b""
        self.trusted = False
        self.closed = False
        self.paused = False  # reading from the client is paused
        self.state = S_HEAD
        self.buf = b""  # unparsed client bytes
        self.pumping = False
        # the current exchange
        self.head: h1.RequestHead | None = None
        self.host = b""
        self.started = 0.0
        self.remaining = 0  # request body bytes still to read (Content-Length)
        self.scanner: h1.ChunkedScanner | None = None
        self.body: list[bytes] = []  # request body read but not yet sent, or kept for a retry
        self.body_size = 0
        self.replayable = True
        self.complete = False  # the whole request was read from the client
        self.sent_all = False  # ... and went upstream
        self.keep_alive = True
        self.route: CompiledRoute | None = None
        self.cluster: ClusterRuntime | None = None
        self.upstream: UpstreamConnection | None = None
        self.request_head = b""  # what was sent upstream (kept for a retry)
        self.tried: list[UpstreamHost] = []
        self.waiting = False  # in the cluster's pending queue
        self.retrying = False  # counted in the cluster's active retries
        self.picked: UpstreamHost | None = None  # chosen by _fast_start, used by dispatch()
        self.last_prep: Prepared | None = None  # the previous request's head on this connection
        self.last_start = b""  # ... and its upstream head up to x-request-id
        self.out: list[bytes] = []
        self.resp_status = 0
        self.resp_started = False  # the upstream's final response head came
        self.resp_sent = False  # ... and bytes of it went to the client: no error page now
        self.aborted = ""  # why the client's connection was cut mid-exchange, for the log
        self.body_until = 0.0  # the request body's overall deadline (timeouts.body)
        self.resp_chunk = False  # re-chunk a close-delimited body for an HTTP/1.1 client
        self.resp_bytes = 0
        self.resp_close = False  # close the client connection after this response
        self.upstream_key = ""
        self.request_id = b""
        self.deadline = 0.0
        self.dkind = D_NONE
        self.give_up_at = 0.0  # the route timeout's end: no try goes on past it
        self.attempt = 0  # numbers the tries: a connection made for an earlier one is not taken
        self.credential: Credential | None = None  # carried upstream (a cluster's provider's)
        self.auth_retried = False  # sent once more after a 401 already
        self.with_credentials = False  # either of the two above may be set: reset them
        # the pooled connection each upstream host last served this client on (cluster.checkout)
        self.own_connections: dict[UpstreamHost, UpstreamConnection] = {}

    # -- asyncio.Protocol (client side) ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.client_ip_b = self.client_ip.encode()
        self.trusted = self.listener.is_trusted(self.client_ip)
        self.listener.opened(self)
        self._deadline(D_HEAD, self.listener.timeouts.header_read)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.closed(self)
        if self.head is not None:
            # The client went away mid-exchange: the upstream connection is out of step.
            self._drop_upstream()
            if self.resp_sent and not self.aborted:
                self.aborted = "client closed the connection mid-response"
            self._end_exchange(0 if self.aborted else 499)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # closing (proxy/writes.py closes at the pass's end): bytes after are dropped
        state = self.state
        if state == S_HEAD:
            if not self.buf:
                prep = self.listener.prepared.get(data)
                if prep is not None and prep.fast is not None and self._fast_start(prep):
                    return
                self.buf = data
            else:
                self.buf += data
            self._pump()
        elif state == S_BODY:
            self._body(data, 0)
        elif state == S_WAIT:
            self.buf += data
            if len(self.buf) > MAX_BUFFERED:
                self.pause_reading()
        else:
            up = self.upstream
            if up is not None and up.alive:
                up.send(data)

    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    # -- reading requests ------------------------------------------------------------------

    def _pump(self) -> None:
        """Start every complete request waiting in `buf`, one at a time."""
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.state == S_HEAD and self.buf and not self.closed:
                if not self._read_head():
                    break
        finally:
            self.pumping = False

    def _read_head(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        listener = self.listener
        if end < 0:
            if self.dkind != D_HEAD:
                self._deadline(D_HEAD, listener.timeouts.header_read)
            limits = listener.limits
            try:
                h1.check_partial_head(
                    buf,
                    limits.max_header_bytes + limits.max_request_line + 4,
                    max_request_line=limits.max_request_line,
                )
            except h1.ProtocolError as exc:
                self._reject(exc.status, exc.reason)
            return False
        start = end + 4
        key = buf if start == len(buf) else buf[:start]
        prep = listener.prepared.get(key)
        if prep is None:
            limits = listener.limits
            try:
                head = h1.parse_request(
                    buf,
                    end,
                    max_request_line=limits.max_request_line,
                    max_headers=limits.max_headers,
                    max_head=limits.max_header_bytes,
                )
            except h1.ProtocolError as exc:
                self._reject(exc.status, exc.reason)
                return False
            prep = listener.prepare(key, head)
        head = self._begin(prep)
        if head.chunked or head.content_length:
            self.body_until = self.started + listener.timeouts.body
        if head.chunked:
            self.scanner = h1.ChunkedScanner()
            self.complete = False
            self.state = S_BODY
            self.buf = b""
        elif head.content_length:
            self.remaining = head.content_length
            self.complete = False
            self.state = S_BODY
            self.buf = b""
        else:
            self.complete = True
            self.state = S_WAIT
            self.buf = buf[start:] if start < len(buf) else b""
        self._start(prep)
        if self.state == S_BODY and start < len(buf):
            self._body(buf, start)
        return True

    def _body(self, data: bytes, start: int) -> None:
        """Request body bytes: to the upstream when connected, else kept until it is."""
        scanner = self.scanner
        if scanner is not None:
            try:
                end = scanner.feed(data, start)
            except h1.ProtocolError as exc:
                self._reject(exc.status, exc.reason)
                return
            piece = data[start:end] if end >= 0 else (data[start:] if start else data)
            done = end >= 0
        else:
            n = len(data) - start
            take = n if n <= self.remaining else self.remaining
            piece = data[start : start + take] if start or take < n else data
            self.remaining -= take
            done = not self.remaining
            end = start + take
        if piece:
            self._forward_body(piece)
        if self.dkind == D_BODY:
            self._body_deadline()
        if not done:
            return
        self.scanner = None
        self.complete = True
        self.state = S_WAIT
        if self.upstream is not None:
            self.sent_all = True
        if self.head is not None and self.cluster is not None and self.dkind == D_BODY:
            self._upstream_deadline(first=True)
        if end < len(data):
            self.buf += data[end:]
        if self.head is None:
            # The exchange ended (a direct answer) while its body was still coming: read on.
            self.state = S_HEAD
            self._pump()

    def _forward_body(self, piece: bytes) -> None:
        up = self.upstream
        if self.replayable:
            self.body_size += len(piece)
            if self.body_size > MAX_REPLAY:
                self.replayable = False
        if up is not None:
            up.send(piece)
            if self.replayable:
                self.body.append(piece)
            else:
                self.body.clear()
            return
        if self.head is None:
            return  # answered already: the rest of the body is read and dropped
        self.body.append(piece)
        if not self.replayable:
            # Nowhere to send it yet: stop reading until an upstream connection takes it.
            self.pause_reading()

    # -- one exchange ------------------------------------------------------------------------

    def _begin(self, prep: Prepared) -> h1.RequestHead:
        """The state of a new exchange, for the request `prep` describes."""
        head = prep.head
        self.started = monotonic()
        self.head = head
        if self.with_credentials:
            self.with_credentials = False
            self.credential = None
            self.auth_retried = False
        self.host = prep.host
        self.route = prep.route
        self.keep_alive = head.keep_alive
        self.request_id = head.request_id or b""
        if self.body:
            self.body = []
        self.body_size = 0
        self.replayable = True
        self.sent_all = False
        self.resp_started = False
        self.resp_sent = False
        self.resp_status = 0
        self.resp_bytes = 0
        self.resp_close = False
        self.upstream_key = ""
        self.tried = []
        return head

    def _start(self, prep: Prepared) -> None:
        """Route the request `_begin` set up: answer it here, or send it to its cluster."""
        head = prep.head
        route = prep.route
        if route is None or route.cluster is None:
            if prep.error is not None:
                status, reason = prep.error
                self._respond(status, http1.error_body(status, reason))
            elif route is None:
                self._respond(404, http1.error_body(404, "no route matches"))
            else:
                self._answer_directly(route, prep)
            return
        listener = self.listener
        cluster = listener.clusters[route.cluster]
        if cluster.active_requests >= cluster.limits.max_requests:
            cluster.stats.overflows += 1
            self._respond(503, http1.error_body(503, "too many requests to the upstream"))
            return
        self.cluster = cluster
        cluster.active_requests += 1
        self.writes.busy += 1
        if self.complete:
            self._upstream_deadline(first=True)
        else:
            self._body_deadline()
        if head.upgrade is not None:
            self.pause_reading()  # nothing more is HTTP until the upstream answers 101
        provider = cluster.credentials
        if provider is not None:
            self.with_credentials = True
            self.credential = provider.current()
            if self.credential is None:
                self._wait_for_credential(provider, prep)
                return
        self.request_head = self._request_head(prep)
        self.dispatch()

    def _wait_for_credential(self, provider: CredentialProvider, prep: Prepared) -> None:
        """Ask the provider for a credential; the request goes on (or is answered) when it
        comes. Reading the client's body goes on meanwhile, as while waiting for a connection."""
        self.attempt += 1
        attempt = self.attempt
        task = asyncio.get_running_loop().create_task(provider.fetch())
        task.add_done_callback(lambda done: self._credential_came(done, prep, attempt))

    def _credential_came(
        self, task: asyncio.Task[Credential], prep: Prepared, attempt: int
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # always retrieved: asyncio would log it as never retrieved
        if self.attempt != attempt or self.head is None or self.closed:
            return  # the request ended meanwhile (timed out, client gone)
        if isinstance(exc, Refused):
            self._respond(exc.status, exc.body, content_type=exc.content_type, headers=exc.headers)
            return
        if exc is not None:
            log.error("credential provider failed", extra={"error": type(exc).__name__})
            self._respond(503, http1.error_body(503, "no credential for the upstream"))
            return
        self.credential = task.result()
        self.request_head = self._request_head(prep)
        self.dispatch()

    def _fast_start(self, prep: Prepared) -> bool:
        """The common case in one go: one whole body-less request, a head seen before, routed to
        a cluster with an idle pooled connection (and a credential at hand, when the cluster's
        requests carry one). False (nothing done) otherwise."""
        cluster = prep.fast
        assert cluster is not None
        if cluster.active_requests >= cluster.limits.max_requests:
            return False
        provider = cluster.credentials
        credential = provider.current() if provider is not None else None
        if provider is not None and credential is None:
            return False  # the general path waits for one
        host = cluster.balancer.pick(None, ())
        if host is None:
            return False
        conn = cluster.checkout(host, self)
        if conn is None:
            self.picked = host  # the general path connects to it: a pick is never thrown away
            return False
        self._begin(prep)
        if credential is not None:
            self.credential = credential
            self.with_credentials = True
        self.complete = True
        self.state = S_WAIT
        self.cluster = cluster
        cluster.active_requests += 1
        self.writes.busy += 1
        self.request_head = self._request_head(prep)
        route = prep.route
        assert route is not None
        timeout = route.try_timeout  # _upstream_deadline(first=True), inlined
        self.dkind = D_UPSTREAM if timeout < math.inf else D_NONE
        self.deadline = self.started + timeout
        self.give_up_at = self.started + route.timeout
        self.connected(conn)
        return True

    def fast_response(
        self, conn: UpstreamConnection, resp: h1.ResponseHead, forwarded: bytes, body: bytes
    ) -> bool:
        """A whole Content-Length response in one read, its head seen before: forward it, pool
        the connection, finish the exchange. False (nothing done) when anything is unusual."""
        head = self.head
        route = self.route
        status = resp.status
        if head is None or route is None or status in route.retry_statuses:
            return False
        if status == 401 and self.credential is not None:
            return False
        if head.version != b"1.1" or self.listener.draining or not self.sent_all:
            return False
        cluster = self.cluster
        assert cluster is not None
        host = conn.host
        if cluster.outlier is not None:
            cluster.record_result(host, "5xx" if status >= 500 else "success")
        self.resp_status = status
        self.resp_bytes = len(body)
        close = self.resp_close = not self.keep_alive
        end = _END_CLOSE if close else _END
        # After an interim 100 Continue, if there was one: one write for it all.
        out = self.out
        data = b"".join((*out, forwarded, end, body)) if out else forwarded + end + body
        out.clear()
        # _release_upstream and the pool's release, inlined for the common case
        self.upstream = None
        host.active -= 1
        conn.session = None
        if conn.alive and conn.clean and conn.keep_alive and not cluster.pending:
            now = cluster.clock.now  # cluster.pool, inlined
            conn.idle_deadline = now + cluster.idle_timeout
            conn.idle_since = now
            conn.pooled = True
            host.idle[conn] = None
            self.own_connections[host] = conn
        else:
            cluster.release(conn, self)
        if not self.closed:
            self.writes.write(self.transport, data)  # type: ignore[arg-type]
        self._end_exchange(status)
        return True

    def _answer_directly(self, route: CompiledRoute, prep: Prepared) -> None:
        if route.direct is not None:
            status, body, ctype = route.direct
            self._respond(status, body, content_type=ctype)
            return
        assert route.redirect is not None
        location = redirect_location(
            route.redirect, route, self.listener.scheme, prep.host, prep.path, prep.query
        )
        self._respond(route.redirect.status, b"", headers=[(b"location", location)])

    def _request_head(self, prep: Prepared) -> bytes:
        """The head sent upstream: request line and the client's fields minus hop-by-hop and
        X-Forwarded-* (prepared once per distinct head), X-Forwarded-For/-Proto/-Host (the same
        for every request of this head on this connection: kept), then x-request-id."""
        head = prep.head
        if prep is self.last_prep:
            start = self.last_start
        else:
            start = self.last_start = self._forwarded_start(prep)
            self.last_prep = prep
        if head.upgrade is not None:
            end = b"connection: upgrade\r\nupgrade: " + head.upgrade + b"\r\n\r\n"
        elif head.chunked:
            end = b"transfer-encoding: chunked\r\n\r\n"
        else:
            end = b"\r\n"
        if self.credential is not None:
            end = self.credential.header + end
        if head.request_id:
            return start + end
        self.request_id = rid = http1.request_id()
        return b"".join((start, b"x-request-id: ", rid, b"\r\n", end))

    def _forwarded_start(self, prep: Prepared) -> bytes:
        start = prep.trusted_start if self.trusted else prep.upstream_start
        if not self.listener.forwarded:
            return start
        head = prep.head
        if self.trusted:
            xff = head.xff + b", " + self.client_ip_b if head.xff else self.client_ip_b
            proto = head.xfp or self.listener.scheme
            fwd_host = head.xfh or prep.host
        else:
            xff = self.client_ip_b
            proto = self.listener.scheme
            fwd_host = prep.host
        parts = [
            start, b"x-forwarded-for: ", xff, b"\r\nx-forwarded-proto: ", proto, b"\r\n",
        ]  # fmt: skip
        if fwd_host:
            parts += (b"x-forwarded-host: ", fwd_host, b"\r\n")
        return b"".join(parts)

    def _body_deadline(self) -> None:
        """The next body byte is due within body_idle, and the whole body by body_until."""
        self.dkind = D_BODY
        self.deadline = min(monotonic() + self.listener.timeouts.body_idle, self.body_until)

    def _upstream_deadline(self, *, first: bool) -> None:
        """The deadline for this try's response: the per-try timeout, but never past the route
        timeout, which runs from the first try for the whole request, retries included (as in
        Envoy)."""
        route = self.route
        assert route is not None
        now = monotonic()
        if first:
            self.give_up_at = now + route.timeout
        left = max(self.give_up_at - now, 0.001)
        self.deadline = now + min(route.try_timeout, left)
        self.dkind = D_UPSTREAM if self.deadline < math.inf else D_NONE

    def _hash_key(self) -> str | None:
        cluster = self.cluster
        head = self.head
        assert cluster is not None and head is not None
        rule = cluster.hash_on
        if rule is None:
            return None
        if rule.source_ip:
            return self.client_ip
        values = h1.field_values(head.fields, (rule.header or "cookie").lower().encode())
        if rule.header:
            # A repeated header hashes all its values in any order, as Envoy's does.
            return b"\n".join(sorted(values)).decode("latin-1") if values else None
        for value in values:  # a client may split its cookies over several Cookie fields
            for part in value.split(b";"):
                k, _, v = part.strip().partition(b"=")
                if k.decode("latin-1") == rule.cookie:
                    return v.decode("latin-1")
        return None

    def dispatch(self) -> None:
        """Find an upstream connection for the current request (again, on a retry)."""
        cluster = self.cluster
        assert cluster is not None
        self.waiting = False
        self.attempt += 1
        host = self.picked
        if host is not None:
            self.picked = None
        else:
            host = cluster.balancer.pick(self._hash_key() if cluster.hash_on else None, self.tried)
        if host is None:
            cluster.stats.no_healthy += 1
            self._fail(503, "no healthy upstream")
            return
        conn = cluster.checkout(host, self)
        if conn is not None:
            self.connected(conn)
            return
        if cluster.connections >= cluster.limits.max_connections:
            if len(cluster.pending) >= cluster.limits.max_pending_requests:
                cluster.stats.overflows += 1
                self._fail(503, "upstream connection limit reached")
                return
            self.waiting = True
            cluster.pending.append(self)
            return
        cluster.connect(host, self)

    def connected(self, conn: UpstreamConnection) -> None:
        """An upstream connection is ours: send the request head and the body read so far."""
        head = self.head
        if head is None or self.closed or self.cluster is None:
            # Gave up meanwhile (client gone, timed out): the connection goes back unused.
            conn.cluster.release(conn)
            return
        self.waiting = False
        self.upstream = conn
        conn.begin(self, head.method)
        host = conn.host
        host.active += 1
        self.tried.append(host)
        self.upstream_key = host.key
        if self.body:
            conn.send(b"".join((self.request_head, *self.body)))
            if not self.replayable:
                self.body.clear()
        else:
            conn.send(self.request_head)
        if self.complete:
            self.sent_all = True
        if self.paused and head.upgrade is None and len(self.buf) <= MAX_BUFFERED:
            self.resume_reading()

    def connect_failed(self, host: UpstreamHost, reason: str) -> None:
        if self.head is None or self.closed or self.cluster is None:
            return
        self.tried.append(host)
        self.upstream_key = host.key
        self.cluster.record_result(host, "connect_failure")
        route = self.route
        if route is not None and route.retry_connect and self._may_retry(budget=False):
            self._retry()
            return
        self._fail(503, f"upstream connect error: {reason}")

    def _may_retry(self, *, budget: bool = True) -> bool:
        """A retry of the current request is allowed. The retry budget limits only retries on a
        status (5xx...): those add load to upstreams that may be overloaded already. A failed
        connect sent nothing, and a reset is what an endpoint's death does to the requests it
        held (a burst bounded by them): their retries always go ahead."""
        head = self.head
        route = self.route
        cluster = self.cluster
        if head is None or route is None or cluster is None or self.resp_started:
            return False
        if self.with_credentials and self.credential is None:
            return False  # waiting for the credential: nothing was sent, nor will be without it
        if head.method not in IDEMPOTENT or not self.replayable or head.upgrade is not None:
            return False
        if len(self.tried) > route.retry.retries:
            return False
        return not budget or cluster.retry_allowed()

    def _retry(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        cluster.stats.retries += 1
        if not self.retrying:
            self.retrying = True
            cluster.active_retries += 1
        self.sent_all = False
        self._upstream_deadline(first=False)
        self.dispatch()

    # -- upstream events (called by UpstreamConnection) --------------------------------------

    def upstream_interim(self, status: int) -> None:
        head = self.head
        if status == 100 and head is not None and head.expect_continue:
            self.out.append(b"HTTP/1.1 100 Continue\r\n\r\n")

    def upstream_head(
        self, conn: UpstreamConnection, resp: h1.ResponseHead, forwarded: bytes
    ) -> bool:
        """Write the response head for the client (`forwarded`: the upstream's status line and
        fields minus hop-by-hop, without the final CRLF); False when the response is dropped
        instead (a retry on a retriable status)."""
        head = self.head
        route = self.route
        cluster = self.cluster
        assert head is not None and route is not None and cluster is not None
        status = resp.status
        if status == 101 and head.upgrade is None:
            conn.clean = False
            self.upstream_failed(conn, "101 Switching Protocols to a request for no upgrade")
            return False
        if status == 401 and self.credential is not None and self._credential_rejected(resp):
            return False
        if route.retry_statuses and status in route.retry_statuses and self._may_retry():
            cluster.record_result(conn.host, "5xx" if status >= 500 else "success")
            self._drop_upstream()
            self._retry()
            return False
        self.resp_status = status
        self.resp_started = True
        if status == 101:
            self.out += (forwarded, b"connection: upgrade\r\n")
            if resp.upgrade:
                self.out += (b"upgrade: ", resp.upgrade, b"\r\n")
            self.out.append(b"\r\n")
            return True
        framing = resp.framing
        keep_alive = self.keep_alive and not self.listener.draining
        client_11 = head.version == b"1.1"
        extra = b""
        self.resp_chunk = False
        if framing == h1.CHUNKED or framing == h1.CLOSE:
            if client_11:
                extra = b"transfer-encoding: chunked\r\n"
                self.resp_chunk = framing == h1.CLOSE
            else:
                keep_alive = False  # an HTTP/1.0 client learns the end from the close
        if not keep_alive:
            self.resp_close = True
            extra += b"connection: close\r\n\r\n"
        elif not client_11:
            extra += b"connection: keep-alive\r\n\r\n"
        else:
            extra += b"\r\n"
        self.out += (forwarded, extra)
        return True

    def _credential_rejected(self, resp: h1.ResponseHead) -> bool:
        """A 401 to a request with the provider's credential: the provider decides whether it
        was the credential's fault. If so, the request is sent once more with a new one, when
        its whole body is at hand to send again (True: this response is dropped)."""
        cluster = self.cluster
        credential = self.credential
        prep = self.last_prep  # the current request's: its head went upstream with `credential`
        assert cluster is not None and cluster.credentials is not None and credential is not None
        assert prep is not None
        provider = cluster.credentials
        if not provider.rejected(credential, resp.status, resp.fields):
            return False
        if self.auth_retried or not self.complete or not self.replayable:
            return False
        if prep.head.upgrade is not None:
            return False
        self.auth_retried = True
        cluster.stats.auth_retries += 1
        self._drop_upstream()  # the 401's body is not wanted: the connection goes
        self.sent_all = False
        self.credential = None
        self._wait_for_credential(provider, prep)
        return True

    def chunk_payload(self) -> list[bytes] | None:
        """A chunked response for an HTTP/1.0 client is sent as its bare payload."""
        head = self.head
        return [] if head is not None and head.version != b"1.1" else None

    def upstream_chunked(self, raw: bytes, scanner: h1.ChunkedScanner) -> None:
        payload = scanner.payload
        if payload is None:
            self.resp_bytes += len(raw)
            self.out.append(raw)
        else:
            for piece in payload:
                self.resp_bytes += len(piece)
                self.out.append(piece)
            payload.clear()

    def upstream_body(self, data: bytes) -> None:
        """A piece of a body delimited by the connection's close."""
        self.resp_bytes += len(data)
        self.out.append(http1.chunk(data) if self.resp_chunk else data)

    def upstream_done(self, conn: UpstreamConnection) -> None:
        if self.upstream is not conn:
            return
        if self.resp_chunk:
            self.out.append(http1.LAST_CHUNK)
        cluster = self.cluster
        head = self.head
        assert cluster is not None and head is not None
        if cluster.outlier is not None:
            cluster.record_result(conn.host, "5xx" if self.resp_status >= 500 else "success")
        # Reused only when the whole request went up and it asked for no protocol switch (one
        # the upstream declined may still have switched, or be reading for the new protocol).
        self._release_upstream(reuse=self.sent_all and head.upgrade is None)
        self.flush()
        self._end_exchange(self.resp_status)

    def upstream_lost(self, conn: UpstreamConnection, close_delimited: bool) -> None:
        """The upstream closed (or reset) while this request held it."""
        if self.upstream is not conn:
            return
        cluster = self.cluster
        assert cluster is not None
        if self.state == S_TUNNEL:
            self._release_upstream(reuse=False)
            self.flush()
            self._close()
            return
        if close_delimited and self.resp_started:
            # A body delimited by the close: this close is its end.
            self.upstream_done(conn)
            return
        cluster.stats.resets += 1
        cluster.record_result(conn.host, "5xx")
        self._release_upstream(reuse=False)
        if self.resp_started:
            self._abort("upstream connection closed mid-response")
            return
        route = self.route
        if route is not None and route.retry_reset and self._may_retry(budget=False):
            self._retry()
            return
        self._fail(502, "upstream connection closed before the response")

    def upstream_failed(self, conn: UpstreamConnection, reason: str) -> None:
        """The upstream sent something that is not valid HTTP."""
        if self.upstream is not conn:
            conn.close()
            return
        log.warning(
            "invalid response from upstream", extra={"upstream": conn.host.key, "error": reason}
        )
        self._release_upstream(reuse=False)
        if self.resp_sent:
            self._abort(f"invalid response from the upstream: {reason}")
            return
        # Nothing of it reached the client yet: a whole 502 instead of a cut connection.
        self.out.clear()
        self.resp_started = False
        self._fail(502, "invalid response from the upstream")

    def upstream_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        """The upstream answered 101: from now on both connections are a byte tunnel."""
        head = self.head
        if self.upstream is not conn or head is None or head.upgrade is None:
            self.upstream_failed(conn, "unexpected protocol switch")
            return
        self.state = S_TUNNEL
        self._deadline(D_NONE, 0)
        if rest:
            self.out.append(rest)
        self.flush()
        if self.buf:
            conn.send(self.buf)
            self.buf = b""
        self.resume_reading()

    def tunnel_in(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.writes.write(self.transport, data)

    # -- ending --------------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.out
        if out:
            if not self.closed and self.transport is not None:
                self.writes.write(self.transport, b"".join(out) if len(out) > 1 else out[0])
            out.clear()
            if self.resp_started:
                self.resp_sent = True

    def _release_upstream(self, *, reuse: bool) -> None:
        conn = self.upstream
        if conn is None:
            return
        self.upstream = None
        conn.host.active -= 1
        if reuse and self.state != S_TUNNEL:
            conn.cluster.release(conn, self)
        else:
            conn.session = None
            conn.close()

    def _drop_upstream(self) -> None:
        conn = self.upstream
        if conn is not None:
            conn.session = None
            conn.abort()
            self._release_upstream(reuse=False)
        cluster = self.cluster
        if self.waiting and cluster is not None:
            self.waiting = False
            with contextlib.suppress(ValueError):
                cluster.pending.remove(self)

    def _respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """The proxy answers the current request itself."""
        head = self.head
        assert head is not None
        if not self.complete and not self.replayable:
            self.keep_alive = False  # the rest of a large body is not worth reading
        keep_alive = self.keep_alive and not self.listener.draining
        if not self.request_id:
            self.request_id = http1.request_id()
        headers = [*(headers or ()), (b"x-request-id", self.request_id)]
        self.resp_status = status
        self.resp_bytes = len(body)
        self.resp_close = not keep_alive
        self.out.append(
            http1.response(
                status,
                body,
                content_type=content_type,
                headers=headers,
                close=not keep_alive,
                head=head.method == b"HEAD",
            )
        )
        self.flush()
        self._end_exchange(status)

    def _fail(self, status: int, reason: str) -> None:
        if self.resp_started:
            self._abort(f"{reason} mid-response")
            return
        self._respond(status, http1.error_body(status, reason))

    def _end_exchange(self, status: int) -> None:
        head = self.head
        if head is None:
            return
        self.head = None
        self.attempt += 1
        now = self.listener.finished(self, head, status, self.cluster)
        self._leave_cluster()
        self.route = None
        if self.closed:
            return
        if self.resp_close or not self.keep_alive:
            self._close()
            return
        if not self.complete:
            return  # the body is still coming: _body() reads it to its end, then goes on
        self.state = S_HEAD
        if self.buf:
            self._pump()
        else:
            # Even when draining: the response said keep-alive (draining began after its head
            # went out), so the client may be sending its next request right now; that one is
            # answered with Connection: close instead of finding the connection gone.
            timeout = self.listener.timeouts.keepalive
            self.dkind = D_IDLE if timeout > 0 else D_NONE  # _deadline, inlined
            self.deadline = now + timeout
        if self.paused and self.state == S_HEAD:
            self.resume_reading()

    def _leave_cluster(self) -> None:
        self.picked = None
        cluster = self.cluster
        if cluster is None:
            return
        self.cluster = None
        cluster.active_requests -= 1
        self.writes.busy -= 1
        if self.retrying:
            self.retrying = False
            cluster.active_retries -= 1

    def _reject(self, status: int, reason: str) -> None:
        """A malformed or over-limit request: answer it and close (the stream is unusable)."""
        rejected = self.listener.stats.rejected
        rejected[status] = rejected.get(status, 0) + 1
        if self.head is not None and self.resp_started:
            self._abort(f"client sent an invalid request: {reason}")
            return
        if self.head is not None:
            self._drop_upstream()
            self._leave_cluster()
            self.head = None
        self.out.clear()
        if self.transport is not None and not self.closed:
            self.writes.write(
                self.transport, http1.response(status, http1.error_body(status, reason), close=True)
            )
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.writes.close(self.transport)
        self.closed = True

    def _abort(self, reason: str) -> None:
        """The response was cut: the client must see an error, not a short but clean reply.
        The access log says so (status "-" and `reason`), not the status it was to get."""
        self.aborted = reason
        if not self.closed and self.transport is not None:
            self.writes.abort(self.transport)
        self.closed = True
        self._drop_upstream()
        self._end_exchange(0)

    def close_if_idle(self) -> None:
        """Draining: a connection between requests is closed now, a busy one after its response."""
        if self.head is None and self.state == S_HEAD:
            self._close()

    # -- timeouts --------------------------------------------------------------------------

    def _deadline(self, kind: int, timeout: float) -> None:
        # From now, not from the ticker's clock (up to a tick old): a timeout never fires early.
        self.dkind = kind if timeout > 0 else D_NONE
        self.deadline = monotonic() + timeout

    def expire(self, now: float) -> None:
        """Called by the ticker once `deadline` has passed."""
        kind = self.dkind
        self.dkind = D_NONE
        if kind == D_IDLE:
            self._close()
        elif kind == D_HEAD:
            if self.buf:
                self._reject(408, "request head not received in time")
            else:
                self._close()
        elif kind == D_BODY:
            if self.resp_started:
                self._abort("request body not received in time")
            else:
                self._reject(408, "request body not received in time")
        elif kind == D_UPSTREAM:
            cluster = self.cluster
            if cluster is not None:
                cluster.stats.timeouts += 1
                if self.upstream is not None:
                    cluster.record_result(self.upstream.host, "5xx")
            if self.resp_started:
                self._abort("upstream did not finish the response in time")
                return
            self._drop_upstream()
            route = self.route
            if (
                route is not None
                and route.retry.per_try_timeout
                and 504 in route.retry_statuses  # 5xx or gateway-error: a timeout is a 504
                and now < self.give_up_at
                and self._may_retry()
            ):
                self._retry()
                return
            self._respond(504, http1.error_body(504, "upstream did not answer in time"))
