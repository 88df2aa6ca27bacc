"""One connection to an upstream endpoint: sends a request, frames the response (h1.py) and hands
it piece by piece to the downstream session holding the connection. Idle connections wait in
their host's pool; a connection is reused only after a whole, well-framed response, and never
after one whose framing is in doubt (see `clean`)."""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING, Any

from podkit.proxy import h1

if TYPE_CHECKING:
    from podkit.proxy.cluster import ClusterRuntime, UpstreamHost
    from podkit.proxy.session import HttpSession

MAX_RESPONSE_HEAD = 64 * 1024
# Parsed response heads by their bytes (not for HEAD requests, whose framing differs): a backend
# answering the same kind of request sends the same head within a second (Date changes).
_HEADS: dict[bytes, tuple[h1.ResponseHead, bytes]] = {}  # head -> (parsed, as forwarded)
HEAD_CACHE = 512
CACHEABLE_HEAD = 1024

U_HEAD, U_LENGTH, U_CHUNKED, U_CLOSE, U_IDLE, U_TUNNEL = range(6)


class ClientSide:
    """Flow control of a client connection (HTTP or TCP): while the client reads slower than its
    upstream sends, the upstream is not read."""

    upstream: Any

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "cluster",
        "host",
        "transport",
        "session",
        "alive",
        "idle_deadline",
        "state",
        "buf",
        "remaining",
        "scanner",
        "method",
        "clean",
        "keep_alive",
        "last_head",
        "last_parsed",
        "pooled",
        "idle_since",
        "poller",
    )

    def __init__(self, cluster: ClusterRuntime, host: UpstreamHost) -> None:
        self.cluster = cluster
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.session: HttpSession | None = None
        self.alive = False
        self.idle_deadline = 0.0
        self.state = U_IDLE
        self.buf = b""
        self.remaining = 0
        self.scanner: h1.ChunkedScanner | None = None
        self.method = b"GET"
        self.clean = True  # False once anything unexpected happened: never reuse it then
        self.keep_alive = True
        # This connection's last response head (bytes, parsed): the next is most often the same
        # (a Date changes once a second), and a startswith() is cheaper than a cache lookup.
        self.last_head = b""
        self.last_parsed: tuple[h1.ResponseHead, bytes] | None = None
        self.pooled = False  # waiting in its host's idle list
        self.idle_since = 0.0  # when it last went idle (the cluster clock's time)
        self.poller: select.poll | None = None  # tells whether bytes wait unread (quiet())

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)

    def data_received(self, data: bytes) -> None:
        session = self.session
        state = self.state
        if state == U_HEAD and session is not None:
            self._head(session, self.buf + data if self.buf else data)
            return
        if session is None or state == U_IDLE:
            # An idle connection must stay silent: bytes now mean a confused backend.
            self.clean = False
            self.close()
            return
        if state == U_LENGTH:
            # Body bytes counted down, passed through as they are.
            n = len(data)
            if n <= self.remaining:
                self.remaining -= n
                session.resp_bytes += n
                session.out.append(data)
                if not self.remaining:
                    self.state = U_IDLE
                    session.upstream_done(self)
                else:
                    session.flush()
                return
            self.clean = False  # more than the response: out of step, never reuse
            session.resp_bytes += self.remaining
            session.out.append(data[: self.remaining])
            self.remaining = 0
            self.state = U_IDLE
            session.upstream_done(self)
        elif state == U_TUNNEL:
            session.tunnel_in(data)
        elif state == U_CLOSE:
            session.upstream_body(data)
            session.flush()
        else:
            self._chunked(session, data, 0)

    def _head(self, session: HttpSession, buf: bytes) -> None:
        last = self.last_head
        if last and buf.startswith(last) and self.method != b"HEAD":
            # The head ends where `last` does: it holds no CRLFCRLF before its end.
            start = len(last)
            end = start - 4
            cached = self.last_parsed
        else:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                problem = h1.check_partial_response(buf, MAX_RESPONSE_HEAD)
                if problem is not None:
                    self.clean = False
                    session.upstream_failed(self, problem)
                else:
                    self.buf = buf
                return
            start = end + 4
            if start > MAX_RESPONSE_HEAD:  # even when it came whole in one read
                self.clean = False
                session.upstream_failed(self, "response head too large")
                return
            key = buf if start == len(buf) else buf[:start]
            cached = _HEADS.get(key) if self.method != b"HEAD" else None
            if cached is not None:
                self.last_head = key
                self.last_parsed = cached
        self.buf = b""
        if cached is None:
            try:
                head = h1.parse_response(buf, end, request_method=self.method)
            except h1.ProtocolError as exc:
                self.clean = False
                session.upstream_failed(self, exc.reason)
                return
            fields = h1.without(head.fields, head.drop) if head.drop else head.fields
            forwarded = head.status_line + fields  # the head as the client gets it, but its end
            if self.method != b"HEAD" and start <= CACHEABLE_HEAD:
                if len(_HEADS) >= HEAD_CACHE:
                    _HEADS.clear()
                _HEADS[key] = (head, forwarded)
        else:
            head, forwarded = cached
            if head.framing == h1.LENGTH and len(buf) - start == head.content_length:
                # The common case: a whole response in one read, its head seen before.
                self.keep_alive = head.keep_alive
                self.state = U_IDLE
                if session.fast_response(self, head, forwarded, buf[start:]):
                    return
                self.state = U_HEAD
        status = head.status
        if status < 200 and status != 101:
            # Interim response (100 Continue...): the final one follows.
            session.upstream_interim(status)
            session.flush()
            if start < len(buf):
                self._head(session, buf[start:])
            return
        self.keep_alive = head.keep_alive
        if self.method == b"HEAD" or (head.framing == h1.NO_BODY and head.content_length > 0):
            # A server that sends a body where none may follow would leave it on the wire for
            # the next request to take as its response: such an exchange is never trusted.
            self.clean = False
        if not session.upstream_head(self, head, forwarded):
            return  # the session gave up this response (a retry, a failure): the connection goes
        framing = head.framing
        if status == 101:
            self.state = U_TUNNEL
            session.upstream_upgraded(self, buf[start:])
            return
        if framing == h1.LENGTH and head.content_length:
            self.state = U_LENGTH
            self.remaining = head.content_length
            if start < len(buf):
                self.data_received(buf[start:])
            else:
                session.flush()
            return
        if framing == h1.CHUNKED:
            self.state = U_CHUNKED
            self.scanner = h1.ChunkedScanner(status=502, payload=session.chunk_payload())
            self._chunked(session, buf, start)
            return
        if framing == h1.CLOSE:
            self.state = U_CLOSE
            if start < len(buf):
                session.upstream_body(buf[start:])
            session.flush()
            return
        # No body (or Content-Length: 0).
        self.state = U_IDLE
        if start < len(buf):
            self.clean = False
        session.upstream_done(self)

    def _chunked(self, session: HttpSession, data: bytes, start: int) -> None:
        scanner = self.scanner
        assert scanner is not None
        try:
            end = scanner.feed(data, start)
        except h1.ProtocolError as exc:
            self.clean = False
            session.upstream_failed(self, exc.reason)
            return
        if end < 0:
            session.upstream_chunked(data[start:] if start else data, scanner)
            session.flush()
            return
        session.upstream_chunked(data[start:end], scanner)
        if end < len(data):
            self.clean = False
        self.state = U_IDLE
        self.scanner = None
        session.upstream_done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        session = self.session
        if session is not None:
            session.upstream_lost(self, self.state == U_CLOSE)
        self.cluster.connection_closed(self)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_reading()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_reading()

    # -- used by the session and the pool --------------------------------------------------

    def begin(self, session: HttpSession, method: bytes) -> None:
        """Before each request."""
        self.session = session
        self.method = method
        self.state = U_HEAD

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.cluster.writes.write(self.transport, data)

    def reusable(self) -> bool:
        return self.alive and self.clean and self.keep_alive and self.state == U_IDLE

    def quiet(self) -> bool:
        """No byte and no EOF waits unread: an idle connection's late bytes may have arrived in
        this very pass of the event loop, before data_received could see them."""
        return self.poller is None or not self.poller.poll(0)

    def close(self) -> None:
        self.clean = False
        if self.transport is not None:
            self.cluster.writes.close(self.transport)

    def abort(self) -> None:
        self.clean = False
        if self.transport is not None:
            self.cluster.writes.abort(self.transport)
