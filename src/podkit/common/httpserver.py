"""A tiny HTTP/1.1 server on plain asyncio + httptools, for admin endpoints, ingest paths and
simple-webapp.

Why not aiohttp here: importing aiohttp costs ~0.3-0.4 s on a small machine, and images such as
the log-agent and simple-webapp must be listening well within half a second of starting. This
server does only what those endpoints need: keep-alive, pipelining in order, Content-Length and
chunked request bodies, `Expect: 100-continue`, a body size limit, a bounded number of queued
requests per connection, HEAD (the body is left out), and a hook called once each response is
written (for access logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import NamedTuple, cast

import httptools

log = logging.getLogger("podkit.httpserver")

MAX_PIPELINED = 16  # requests queued on one connection before we stop reading from it


@dataclass
class Request:
    method: str
    path: str  # as sent, not percent-decoded
    query: str  # the raw query string, without "?"
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    remote: str | None = None
    target: str = ""  # the request target as sent ("/api/echo?x=1"), for access logs
    version: str = "1.1"
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # names as sent, in order
    started: float = 0.0  # time.perf_counter() when the request's first bytes were parsed

    def query_params(self) -> dict[str, list[str]]:
        """Parsed query: `a=1&a=2&b` -> {"a": ["1", "2"], "b": [""]} (decoded, blanks kept)."""
        from urllib.parse import parse_qs

        return parse_qs(self.query, keep_blank_values=True)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Awaitable[Response]]
# Called after each response is written: (request, response, body bytes sent, seconds taken).
ResponseHook = Callable[[Request, Response, int, float], None]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_second = -1
_date_value = ""


def http_date(t: float | None = None) -> str:
    """RFC 9110 IMF-fixdate (`Wed, 25 Nov 2026 22:15:08 GMT`), cached per second: every
    response carries one and formatting it each time would show up on hot paths."""
    global _date_second, _date_value
    second = int(time.time() if t is None else t)
    if second != _date_second:
        g = time.gmtime(second)
        _date_value = (
            f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year} "
            f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT"
        )
        _date_second = second
    return _date_value


def body_length(resp: Response, *, head: bool) -> int:
    """Body bytes actually sent: none for HEAD, 1xx, 204 and 304."""
    if head or resp.status in (204, 304) or resp.status < 200:
        return 0
    return len(resp.body)


def _render(resp: Response, *, keep_alive: bool, head: bool) -> bytes:
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {resp.status} {reason}", f"Date: {http_date()}"]
    if resp.status not in (204, 304):
        lines.append(f"Content-Type: {resp.content_type}")
        lines.append(f"Content-Length: {len(resp.body)}")
    lines.extend(f"{k}: {v}" for k, v in resp.headers.items())
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if head or resp.status in (204, 304):
        return head_bytes
    return head_bytes + resp.body


class _Pending(NamedTuple):
    request: Request
    keep_alive: bool
    error: Response | None  # answered without calling the handler (e.g. 413)


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._pending: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self._closing = False
        self._done = False  # a request ended the connection: ignore anything after it
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._raw_headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self._started = time.perf_counter()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrades are not supported\n")
        except httptools.HttpParserError as exc:
            self._fail(400, f"bad request: {exc}\n")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        raw_key = name.decode("latin-1")
        key = raw_key.lower()
        text = value.decode("latin-1")
        self._raw_headers.append((raw_key, text))
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        # curl and others wait (curl: 1 s) for "100 Continue" before sending a larger body.
        if self._headers.get("expect", "").lower() != "100-continue" or self._transport is None:
            return
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > self._server.max_body:
            self._fail(413, f"body larger than {self._server.max_body} bytes\n")
        elif self._parser.get_http_version() == "1.1" and self.idle:
            # Only when no earlier response is due, so the interim answer cannot jump the queue;
            # otherwise the client sends the body after its own timeout, as RFC 9110 allows.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body:
            self._too_large = True
            self._body.clear()
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done:
            return
        url = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=(url.path or b"/").decode("utf-8", "replace"),
            query=(url.query or b"").decode("utf-8", "replace"),
            headers=self._headers,
            body=b"".join(self._body),
            remote=self._remote,
            target=self._url.decode("utf-8", "backslashreplace"),
            version=self._parser.get_http_version(),
            raw_headers=self._raw_headers,
            started=self._started,
        )
        if self._too_large:
            # Answered in turn after earlier pipelined requests, then the connection closes.
            error = Response.text(413, f"body larger than {self._server.max_body} bytes\n")
            self._pending.append(_Pending(request, False, error))
            self._done = True
        else:
            self._pending.append(_Pending(request, self._parser.should_keep_alive(), None))
        if len(self._pending) >= MAX_PIPELINED and self._transport and not self._paused:
            self._transport.pause_reading()
            self._paused = True
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve_pending())

    # ours
    def _fail(self, status: int, text: str) -> None:
        self._done = True
        if self._transport is not None:
            resp = Response.text(status, text)
            self._transport.write(_render(resp, keep_alive=False, head=False))
            self._transport.close()

    @property
    def idle(self) -> bool:
        return not self._pending and (self._worker is None or self._worker.done())

    def drain(self) -> None:
        """Answer the next request with `Connection: close` and close after it; an idle
        connection is left open for that request (closing it now would race with a request
        already on its way, which the client would see as a reset)."""
        self._closing = True

    async def _serve_pending(self) -> None:
        while self._pending and self._transport is not None:
            request, keep_alive, response = self._pending.popleft()
            if self._paused and len(self._pending) < MAX_PIPELINED // 2:
                self._transport.resume_reading()
                self._paused = False
            if response is None:
                try:
                    response = await self._server.handler(request)
                except Exception:
                    log.exception("request handler failed", extra={"path": request.path})
                    response = Response.text(500, "internal error\n")
            if self._transport is None:
                return
            keep_alive = keep_alive and not self._closing
            head = request.method == "HEAD"
            self._transport.write(_render(response, keep_alive=keep_alive, head=head))
            self._server._responded(request, response, head)
            if not keep_alive:
                self._transport.close()
                return


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = 16 * 1024 * 1024,
        on_response: ResponseHook | None = None,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.on_response = on_response
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every listening socket (a name like "localhost" can bind two)."""
        assert self._server is not None
        return [
            (str(name[0]), int(name[1])) for name in (s.getsockname() for s in self._server.sockets)
        ]

    def _responded(self, request: Request, response: Response, head: bool) -> None:
        if self.on_response is None:
            return
        elapsed = time.perf_counter() - request.started
        try:
            self.on_response(request, response, body_length(response, head=head), elapsed)
        except Exception:  # a broken hook must not break the connection
            log.exception("response hook failed", extra={"path": request.path})

    async def close(self, timeout: float = 1.0) -> None:
        """Stop accepting; for up to `timeout`, finish in-flight requests and answer each
        connection's next one with `Connection: close` (keep-alive clients leave without an
        error); then close what is left."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.01)  # shutdown only: poll the few open connections
        for conn in list(self._connections):
            if conn._transport is not None:
                conn._transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=0.2)
