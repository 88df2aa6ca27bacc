"""A tiny HTTP/1.1 server on plain asyncio + httptools, for admin endpoints and ingest paths.

Why not aiohttp here: importing aiohttp.web costs ~0.4 s on a small machine, and images such as
the log-agent must be listening well within half a second of starting. This server does only what
those endpoints need: keep-alive, pipelining in order, Content-Length and chunked request bodies,
a body size limit, and a bounded number of queued requests per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger("podkit.httpserver")

MAX_PIPELINED = 16  # requests queued on one connection before we stop reading from it


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    remote: str | None = None


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


def _render(resp: Response, *, keep_alive: bool, head: bool) -> bytes:
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {resp.status} {reason}"]
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


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._pending: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self._closing = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False

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
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body:
            self._too_large = True
            self._body.clear()
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            self._fail(413, f"body larger than {self._server.max_body} bytes\n")
            return
        url = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=(url.path or b"/").decode("utf-8", "replace"),
            query=(url.query or b"").decode("utf-8", "replace"),
            headers=self._headers,
            body=b"".join(self._body),
            remote=self._remote,
        )
        self._pending.append((request, self._parser.should_keep_alive()))
        if len(self._pending) >= MAX_PIPELINED and self._transport and not self._paused:
            self._transport.pause_reading()
            self._paused = True
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve_pending())

    # ours
    def _fail(self, status: int, text: str) -> None:
        if self._transport is not None:
            resp = Response.text(status, text)
            self._transport.write(_render(resp, keep_alive=False, head=False))
            self._transport.close()

    @property
    def idle(self) -> bool:
        return not self._pending and (self._worker is None or self._worker.done())

    def close_when_idle(self) -> None:
        self._closing = True
        if self.idle and self._transport is not None:
            self._transport.close()

    async def _serve_pending(self) -> None:
        while self._pending and self._transport is not None:
            request, keep_alive = self._pending.popleft()
            if self._paused and len(self._pending) < MAX_PIPELINED // 2:
                self._transport.resume_reading()
                self._paused = False
            try:
                response = await self._server.handler(request)
            except Exception:
                log.exception("request handler failed", extra={"path": request.path})
                response = Response.text(500, "internal error\n")
            if self._transport is None:
                return
            keep_alive = keep_alive and not self._closing
            self._transport.write(
                _render(response, keep_alive=keep_alive, head=request.method == "HEAD")
            )
            if not keep_alive:
                self._transport.close()
                return


class HttpServer:
    def __init__(self, handler: Handler, *, max_body: int = 16 * 1024 * 1024) -> None:
        self.handler = handler
        self.max_body = max_body
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

    async def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout`), close connections."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(not c.idle for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)  # shutdown only: poll the few busy connections
        for conn in list(self._connections):
            if conn._transport is not None:
                conn._transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=0.2)
