"""A backend that records every request its llhttp parser (httptools) sees: what a request
smuggled past a proxy, or a response handed to the wrong client, shows up in.

Like many servers (Node's http without an 'upgrade' listener), it declines an upgrade and goes on
parsing the bytes after the head as further requests, so a proxy that lets a body through after
an Upgrade head shows here as a request it never parsed itself. It answers each request by its
path, some of them wrongly on purpose:

    (any other)   200, body "conn=<n> <METHOD> <path>": who got whose response is plain to see
    /head-body    a HEAD answered with a body anyway, LATE_DELAY after the head (none may
                  follow): a whole forged response with body "sneaky"
    /late         a whole response, then LATE_DELAY later a forged one with body "POISON"
    /bare-lf      a head whose lines end in a bare LF
    /bad-chunk    chunked, with "zz" as a chunk size
    /long-chunk   chunked, with a chunk size of 17 hex digits
    /switch       101 Switching Protocols to a request that asked for none
    /big-head     a 100 KB head, in one write
    /bad-later    chunked: one good chunk, LATE_DELAY later a bad chunk size
    /websocket    101 when the request asks for an upgrade, then an echo of what comes

A HEAD gets the head it would get for GET, without the body (but on /head-body).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

import httptools

from proxy_harness import BackgroundServer

LATE_DELAY = 0.05


@dataclass
class Seen:
    conn: int
    method: str
    path: str
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last value wins
    body: bytes = b""


class _Parse:
    """httptools callbacks: builds Seen records; `done` gets each whole request."""

    def __init__(self, conn: int, done: list[Seen]) -> None:
        self.conn, self.done = conn, done
        self.current: Seen | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.current = Seen(self.conn, "", "")

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.path += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method().decode("latin-1")
        self.current.version = self.parser.get_http_version()
        self.done.append(self.current)
        self.current = None


def _response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


class RecordingBackend(BackgroundServer, socketserver.ThreadingTCPServer):
    def __init__(self) -> None:
        backend = self
        self.seen: list[Seen] = []
        self.connections = 0
        self._lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with backend._lock:
                    backend.connections += 1
                    conn = backend.connections
                backend._serve(self.request, conn)

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()

    def _serve(self, sock: socket.socket, conn: int) -> None:
        done: list[Seen] = []
        parse = _Parse(conn, done)
        tunnel = False
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            if tunnel:
                sock.sendall(data)
                continue
            while data:
                try:
                    parse.parser.feed_data(data)
                    data = b""
                except httptools.HttpParserUpgrade as exc:
                    # The head is complete; what follows is either the new protocol's (when it
                    # is granted) or, declined, the next request's.
                    offset = exc.args[0]
                    data = data[offset:]
                    request = done[-1]
                    if request.path == "/websocket" and "upgrade" in request.headers:
                        self._record(done)
                        sock.sendall(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                            b"Upgrade: " + request.headers["upgrade"].encode() + b"\r\n\r\n"
                        )
                        tunnel = True
                        if data:
                            sock.sendall(data)
                        data = b""
                        break
                    parse = _Parse(conn, done)
                except httptools.HttpParserError:
                    self._record(done)
                    return
            try:
                for request in self._record(done):
                    self._answer(sock, request)
            except OSError:
                return

    def _record(self, done: list[Seen]) -> list[Seen]:
        taken = list(done)
        done.clear()
        with self._lock:
            self.seen.extend(taken)
        return taken

    def _answer(self, sock: socket.socket, r: Seen) -> None:
        path = r.path.split("?", 1)[0]
        plain = _response(200, f"conn={r.conn} {r.method} {r.path}".encode())
        if r.method == "HEAD" and path != "/head-body":
            sock.sendall(plain.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
        elif path == "/head-body":
            forged = _response(200, b"sneaky")
            sock.sendall(b"HTTP/1.1 200 X\r\nContent-Length: %d\r\n\r\n" % len(forged))
            time.sleep(LATE_DELAY)
            sock.sendall(forged)  # a body, after the head: late, as a slow server sends it
        elif path == "/late":
            sock.sendall(plain)
            time.sleep(LATE_DELAY)
            sock.sendall(_response(200, b"POISON"))
        elif path == "/bare-lf":
            sock.sendall(b"HTTP/1.1 200 X\nContent-Length: 2\n\nok")
        elif path == "/bad-chunk":
            sock.sendall(
                b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
            )
        elif path == "/long-chunk":
            sock.sendall(
                b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"00000000000000003\r\nabc\r\n0\r\n\r\n"
            )
        elif path == "/switch":
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
        elif path == "/bad-later":
            sock.sendall(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            time.sleep(LATE_DELAY)
            sock.sendall(b"zz\r\nabc\r\n0\r\n\r\n")
        elif path == "/big-head":
            sock.sendall(_response(200, b"big", b"X-Big: " + b"a" * 100_000 + b"\r\n"))
        else:
            sock.sendall(plain)

    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(s.method, s.path) for s in self.seen]
