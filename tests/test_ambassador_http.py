"""The ambassador as an HTTP proxy, end to end: a real `python -m podkit.images.ambassador` process
between real clients (curl, urllib, http.client, aiohttp, raw sockets for exact bytes) and
backends started here. What is asserted is what a client or a backend would notice: which
backend answered, the bytes each side received, when connections close.

One ambassador serves most of the module (its routes are the table below); counters are checked
on a second one that nothing else touches, and config errors on short-lived processes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy_harness import Ambassador, BackgroundServer, EchoServer, free_port

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRUSTED_IP = "127.0.0.7"  # the one client address main's trusted_cidrs lists
UNTRUSTED_IP = "127.0.0.5"

# -- raw HTTP on sockets ----------------------------------------------------------------------


class Incomplete(Exception):
    """More bytes are needed to finish parsing a response."""


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in the order received
    body: bytes
    raw_head: bytes

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None

    def names(self) -> set[str]:
        return {k for k, _ in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """A chunked body starting at data[pos], strictly framed: (payload, index after it)."""
    out = b""
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailer lines, then the empty line
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    raise Incomplete
                line, pos = data[pos:eol], eol + 2
                if not line:
                    return out, pos
        if len(data) < pos + size + 2:
            raise Incomplete
        out += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n", "chunk data not ended by CRLF"
        pos += size + 2


def parse_reply(data: bytes, pos: int, method: str, *, eof: bool) -> tuple[Reply, int]:
    """One response at data[pos:], framed as a client must (RFC 9112 6.3)."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete
    lines = data[pos:end].split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1."), f"not a status line: {lines[0]!r}"
    status = int(lines[0].split(b" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode().lower(), value.strip().decode("latin-1")))
    reply = Reply(status, headers, b"", data[pos : end + 4])
    start = end + 4
    if method == "HEAD" or status < 200 or status in (204, 304):
        return reply, start
    te = reply.get("transfer-encoding")
    if te is not None and te.lower().endswith("chunked"):
        reply.body, after = _dechunk(data, start)
        return reply, after
    length = reply.get("content-length")
    if length is not None:
        n = int(length)
        if len(data) < start + n:
            raise Incomplete
        reply.body = data[start : start + n]
        return reply, start + n
    if not eof:
        raise Incomplete  # delimited by the close
    reply.body = data[start:]
    return reply, len(data)


def parse_replies(data: bytes, methods: list[str], *, eof: bool) -> tuple[list[Reply], bytes]:
    """Responses to `methods`, in order (interim 1xx other than 101 skipped); and what is left."""
    replies: list[Reply] = []
    pos = 0
    while len(replies) < len(methods):
        reply, pos = parse_reply(data, pos, methods[len(replies)], eof=eof)
        if 100 <= reply.status < 200 and reply.status != 101:
            continue
        replies.append(reply)
    return replies, data[pos:]


def connect(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    src = (source, 0) if source else None
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=src)


def read_replies(
    sock: socket.socket, methods: list[str], *, until_close: bool, timeout: float = 5.0
) -> list[Reply]:
    """Read the responses to `methods`. With until_close, the server must then close the
    connection (within the timeout) and send nothing more; without, nothing more may have
    arrived after the last response."""
    deadline = time.monotonic() + timeout
    data = b""
    eof = False
    replies: list[Reply] | None = None
    while True:
        if not eof:
            try:
                replies, rest = parse_replies(data, methods, eof=False)
                if not until_close:
                    assert rest == b"", f"bytes after the last response: {rest[:200]!r}"
                    return replies
            except Incomplete:
                pass
        else:
            replies, rest = parse_replies(data, methods, eof=True)
            assert rest == b"", f"bytes after the last response: {rest[:200]!r}"
            return replies
        left = deadline - time.monotonic()
        if left <= 0:
            state = "got all responses but the connection stayed open" if replies else "timed out"
            raise AssertionError(f"{state}; received {data[:2000]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if chunk:
            data += chunk
        else:
            eof = True


def read_until(sock: socket.socket, want: bytes, timeout: float = 5.0) -> bytes:
    """Everything read until `want` has arrived (AssertionError after the timeout)."""
    deadline = time.monotonic() + timeout
    data = b""
    while want not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{want!r} did not arrive; got {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"closed before {want!r} arrived; got {data!r}")
        data += chunk
    return data


def request(
    method: str,
    target: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    host: str = "proxy.test",
    version: str = "1.1",
) -> bytes:
    """Exact request bytes (a Content-Length is added for a body unless headers give framing)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"{method} {target} HTTP/{version}"]
    if host:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in items]
    names = {k.lower() for k, _ in items}
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(
    port: int, data: bytes, methods: list[str], *, source: str | None = None
) -> list[Reply]:
    """Send `data` in one write; the responses, after which the proxy must close."""
    with connect(port, source) as sock:
        sock.sendall(data)
        return read_replies(sock, methods, until_close=True)


# -- clients -------------------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> Resp:
    """One request with http.client (a Host given in headers replaces the default one)."""
    src = (source, 0) if source else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=src)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Resp(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def servers_hit(port: int, path: str, n: int, headers: dict[str, str] | None = None) -> list[str]:
    """`n` GETs on one keep-alive connection: the name of the backend that answered each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    names = []
    try:
        for _ in range(n):
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            names.append(json.loads(body)["server"])
    finally:
        conn.close()
    return names


def seen(server: EchoServer, marker: str) -> dict[str, Any]:
    """The one request `server` received whose path carries `marker`."""
    found = [r for r in list(server.seen) if marker in r["path"]]
    assert len(found) == 1, f"{server.name} saw {len(found)} requests with {marker!r}"
    return found[0]


def header_values(request: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in request["headers"] if k.lower() == name]


def marker() -> str:
    return uuid.uuid4().hex[:12]


# -- backends written here -----------------------------------------------------------------------


def _read_head(rfile: Any) -> bytes | None:
    head = b""
    while True:
        line = rfile.readline(65537)
        if not line:
            return None
        head += line
        if line in (b"\r\n", b"\n"):
            return head


class _Server(BackgroundServer, socketserver.ThreadingTCPServer):
    def __init__(self, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.heads: list[bytes] = []
        self.serve_in_background()


class HopByHopBackend(_Server):
    """Answers every GET with hop-by-hop fields a proxy must not pass on, keeping the
    connection open."""

    REPLY = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Connection: X-Internal\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"X-Internal: backend-secret\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Trailer: X-Checksum\r\n"
        b"TE: trailers\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Visible: yes\r\n"
        b"Content-Length: 2\r\n"
        b"\r\n"
        b"ok"
    )

    def __init__(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while (head := _read_head(self.rfile)) is not None:
                    server.heads.append(head)
                    self.wfile.write(HopByHopBackend.REPLY)
                    self.wfile.flush()

        server = self
        super().__init__(Handler)


class UpgradeBackend(_Server):
    """A WebSocket-like server in a few lines: answers the upgrade with 101 and a greeting in the
    same write (the server speaks first), then echoes every byte it gets, prefixed."""

    def __init__(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = _read_head(self.rfile)
                if head is None:
                    return
                server.heads.append(head)
                self.connection.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n"
                    b"\r\n"
                    b"hello from the backend\n"
                )
                while data := self.connection.recv(65536):
                    self.connection.sendall(b"echo:" + data)

        server = self
        super().__init__(Handler)


class AiohttpWebSocket:
    """aiohttp's own WebSocket server (its handshake and framing), on a loop in a thread."""

    def __init__(self) -> None:
        from aiohttp import WSMsgType, web

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data[::-1])
            return ws

        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/ws", handler)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- the ambassador under test ---------------------------------------------------------------------


def direct(name: str, body: str | None = None, **match: Any) -> dict[str, Any]:
    return {"name": name, "match": match, "direct_response": {"status": 200, "body": body or name}}


def main_config(
    port: int,
    a: EchoServer,
    b: EchoServer,
    c: EchoServer,
    hop: HopByHopBackend,
    up: UpgradeBackend,
    ws: AiohttpWebSocket,
) -> dict[str, Any]:
    abc = [{"address": s.address} for s in (a, b, c)]
    routes = [
        direct("host-exact", hosts=["exact.example.com"]),
        direct("host-wild", hosts=["*.example.com"]),
        direct("exact-path", path="/exact"),
        direct("regex", regex="/items/[0-9]+"),
        direct("hdr-exact", prefix="/hdr", headers=[{"name": "X-Env", "exact": "canary"}]),
        direct("hdr-regex", prefix="/hdr", headers=[{"name": "X-Env", "regex": "v[0-9]+"}]),
        direct("hdr-present", prefix="/hdr", headers=[{"name": "X-Debug", "present": True}]),
        direct(
            "hdr-invert",
            prefix="/hdr",
            headers=[{"name": "X-Env", "exact": "prod", "invert": True}],
        ),
        direct("hdr-rest", prefix="/hdr"),
        direct("method-write", prefix="/method", methods=["POST", "PUT"]),
        direct("method-other", prefix="/method"),
        direct("first-a", prefix="/first"),
        direct("first-b", prefix="/first/deeper"),
        {"match": {"prefix": "/api/v1/"}, "rewrite_prefix": "/v2/", "cluster": "a"},
        {"match": {"prefix": "/a/"}, "rewrite_prefix": "/", "cluster": "a"},
        {"match": {"prefix": "/b/"}, "rewrite_prefix": "/", "cluster": "b"},
        {
            "match": {"path": "/teapot"},
            "direct_response": {
                "status": 418,
                "body": "I'm a little teapot\n",
                "content_type": "text/x-teapot",
            },
        },
        {"match": {"path": "/old"}, "redirect": {"status": 301, "path": "/new"}},
        {
            "match": {"prefix": "/docs/"},
            "redirect": {"status": 308, "prefix_rewrite": "/manual/", "strip_query": True},
        },
        {"match": {"prefix": "/secure"}, "redirect": {"scheme": "https"}},
        {
            "match": {"prefix": "/moved"},
            "redirect": {
                "status": 308,
                "scheme": "https",
                "host": "new.example.com",
                "port": 8443,
            },
        },
        {"match": {"prefix": "/tunnel"}, "cluster": "upgrade"},
        {"match": {"prefix": "/ws"}, "cluster": "ws"},
        {"match": {"prefix": "/hop"}, "cluster": "hop"},
        {"match": {"prefix": "/dead"}, "cluster": "dead"},
    ]
    lb_clusters = [
        {
            "name": "rr",
            "lb": "round_robin",
            "endpoints": [{**e, "weight": w} for e, w in zip(abc, (3, 1, 1), strict=True)],
        },
        {"name": "lr", "lb": "least_request", "endpoints": abc},
        {"name": "random", "lb": "random", "endpoints": abc},
        {"name": "ring-header", "lb": "ring_hash", "hash_on": {"header": "X-User"}},
        {"name": "ring-cookie", "lb": "ring_hash", "hash_on": {"cookie": "session"}},
    ]
    for cl in lb_clusters:
        cl.setdefault("endpoints", abc)
        routes.append(
            {
                "match": {"prefix": f"/lb/{cl['name']}/"},
                "rewrite_prefix": "/",
                "cluster": cl["name"],
            }
        )
    return {
        "access_log": {"enabled": True},
        "listeners": [
            {
                "name": "main",
                "listen": f"127.0.0.1:{port}",
                "trusted_cidrs": [f"{TRUSTED_IP}/32"],
                "routes": routes,
            }
        ],
        "clusters": [
            {"name": "a", "endpoints": [{"address": a.address}]},
            {"name": "b", "endpoints": [{"address": b.address}]},
            {"name": "hop", "endpoints": [{"address": f"127.0.0.1:{hop.port}"}]},
            {"name": "upgrade", "endpoints": [{"address": f"127.0.0.1:{up.port}"}]},
            {"name": "ws", "endpoints": [{"address": f"127.0.0.1:{ws.port}"}]},
            {"name": "dead", "endpoints": [{"address": f"127.0.0.1:{free_port()}"}]},
            *lb_clusters,
        ],
    }


@dataclass
class Setup:
    amb: Ambassador
    port: int
    a: EchoServer
    b: EchoServer
    c: EchoServer
    hop: HopByHopBackend
    up: UpgradeBackend
    ws: AiohttpWebSocket

    def by_address(self) -> dict[str, str]:
        return {s.address: s.name for s in (self.a, self.b, self.c)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    a, b, c = EchoServer("a"), EchoServer("b"), EchoServer("c")
    hop, up, ws = HopByHopBackend(), UpgradeBackend(), AiohttpWebSocket()
    port = free_port()
    tmp = tmp_path_factory.mktemp("ambassador-http")
    amb = Ambassador(tmp, main_config(port, a, b, c, hop, up, ws))
    try:
        yield Setup(amb, port, a, b, c, hop, up, ws)
    finally:
        amb.process.kill()
        for s in (a, b, c, hop, up, ws):
            s.stop()


# -- 1. routing ------------------------------------------------------------------------------------

ROUTING = [
    # (method, host, target, extra headers, expected body or status)
    ("GET", "exact.example.com", "/anything", {}, "host-exact"),
    ("GET", "EXACT.Example.COM:8080", "/anything", {}, "host-exact"),
    ("GET", "shop.example.com", "/", {}, "host-wild"),
    ("GET", "a.b.example.com:81", "/x", {}, "host-wild"),
    ("GET", "example.com", "/exact", {}, "exact-path"),  # the wildcard needs a subdomain
    ("GET", "notexample.com", "/exact", {}, "exact-path"),
    ("GET", "proxy.test", "/exact?x=1", {}, "exact-path"),  # the query is not the path
    ("GET", "proxy.test", "/exact/", {}, 404),
    ("GET", "proxy.test", "/exactly", {}, 404),
    ("GET", "proxy.test", "/items/42", {}, "regex"),
    ("GET", "proxy.test", "/items/4a", {}, 404),
    ("GET", "proxy.test", "/items/42/more", {}, 404),  # the regex matches the whole path
    ("GET", "proxy.test", "/hdr", {"X-Env": "canary"}, "hdr-exact"),
    ("GET", "proxy.test", "/hdr", {"x-env": "v12"}, "hdr-regex"),
    ("GET", "proxy.test", "/hdr", {"X-Env": "v12x"}, "hdr-invert"),
    ("GET", "proxy.test", "/hdr", {"X-Env": "Canary"}, "hdr-invert"),  # values are exact
    ("GET", "proxy.test", "/hdr", {"X-Env": "prod"}, "hdr-rest"),
    ("GET", "proxy.test", "/hdr", {"X-Env": "prod", "X-Debug": ""}, "hdr-present"),
    ("GET", "proxy.test", "/hdr", {}, "hdr-invert"),  # absent is "not prod"
    ("GET", "proxy.test", "/method", {}, "method-other"),
    ("POST", "proxy.test", "/method", {}, "method-write"),
    ("PUT", "proxy.test", "/method", {}, "method-write"),
    ("DELETE", "proxy.test", "/method", {}, "method-other"),
    ("GET", "proxy.test", "/first/deeper", {}, "first-a"),  # first match, not longest prefix
    ("GET", "proxy.test", "/nowhere", {}, 404),
]


@pytest.mark.parametrize(("method", "host", "target", "headers", "want"), ROUTING)
def test_routing_table(
    env: Setup, method: str, host: str, target: str, headers: dict[str, str], want: str | int
) -> None:
    resp = fetch(env.port, target, method=method, headers={"Host": host, **headers})
    if isinstance(want, int):
        assert resp.status == want, resp.body
    else:
        assert (resp.status, resp.body.decode()) == (200, want)


def test_prefix_rewrite_keeps_the_query(env: Setup) -> None:
    m = marker()
    resp = fetch(env.port, f"/api/v1/users?id=7&sort=name&m={m}")
    assert resp.status == 200
    assert resp.json()["server"] == "a"
    assert seen(env.a, m)["path"] == f"/v2/users?id=7&sort=name&m={m}"


def test_each_route_goes_to_its_own_cluster(env: Setup) -> None:
    m = marker()
    assert fetch(env.port, f"/a/x?m={m}").json()["server"] == "a"
    assert fetch(env.port, f"/b/x?m={m}").json()["server"] == "b"
    assert seen(env.a, m)["path"] == f"/x?m={m}"
    assert seen(env.b, m)["path"] == f"/x?m={m}"


def test_direct_response(env: Setup) -> None:
    resp = fetch(env.port, "/teapot")
    assert resp.status == 418
    assert resp.headers["Content-Type"] == "text/x-teapot"
    assert resp.body == b"I'm a little teapot\n"
    assert resp.headers["Content-Length"] == str(len(resp.body))


@pytest.mark.parametrize(
    ("target", "status", "location"),
    [
        ("/old?q=1&r=2", 301, "http://shop.test:8080/new?q=1&r=2"),
        ("/docs/guide/intro?lang=en", 308, "http://shop.test:8080/manual/guide/intro"),
        ("/secure/area?x=1", 301, "https://shop.test/secure/area?x=1"),
        ("/moved/thing?y=2", 308, "https://new.example.com:8443/moved/thing?y=2"),
    ],
)
def test_redirect(env: Setup, target: str, status: int, location: str) -> None:
    (reply,) = exchange(
        env.port,
        request("GET", target, {"Connection": "close"}, host="shop.test:8080"),
        ["GET"],
    )
    assert reply.status == status
    assert reply.get("location") == location


def test_no_route_is_404_and_echoes_the_request_id(env: Setup) -> None:
    resp = fetch(env.port, "/nowhere", headers={"X-Request-Id": "req-404-abc"})
    assert resp.status == 404
    assert b"no route" in resp.body
    assert resp.headers["X-Request-Id"] == "req-404-abc"


# -- 2. load balancing -------------------------------------------------------------------------


def test_round_robin_follows_the_weights(env: Setup) -> None:
    counts = Counter(servers_hit(env.port, "/lb/rr/echo", 100))
    assert counts == {"a": 60, "b": 20, "c": 20}


def test_random_spreads_evenly(env: Setup) -> None:
    counts = Counter(servers_hit(env.port, "/lb/random/echo", 300))
    assert set(counts) == {"a", "b", "c"}
    assert all(60 <= n <= 140 for n in counts.values()), counts  # mean 100, sd about 8


def test_least_request_avoids_the_busy_endpoint(env: Setup) -> None:
    with connect(env.port) as slow:
        slow.sendall(request("GET", "/lb/lr/slow/1000"))
        deadline = time.monotonic() + 5
        while True:
            endpoints = env.amb.stats()["clusters"]["lr"]["endpoints"]
            busy = [e["address"] for e in endpoints if e["active_requests"] > 0]
            if busy:
                break
            assert time.monotonic() < deadline, f"the slow request never arrived: {endpoints}"
            time.sleep(0.01)
        assert len(busy) == 1
        busy_name = env.by_address()[busy[0]]
        counts = Counter(servers_hit(env.port, "/lb/lr/echo", 30))
        (reply,) = read_replies(slow, ["GET"], until_close=False)  # the slow one, still fine
    assert reply.json()["server"] == busy_name
    assert busy_name not in counts, counts
    assert len(counts) == 2, counts  # both free endpoints share the load


def test_ring_hash_on_a_header_is_sticky_and_spread(env: Setup) -> None:
    owner: dict[str, set[str]] = {}
    for _ in range(3):
        for i in range(20):
            user = f"user-{i}"
            (name,) = servers_hit(env.port, "/lb/ring-header/echo", 1, {"X-User": user})
            owner.setdefault(user, set()).add(name)
    assert all(len(names) == 1 for names in owner.values()), owner
    assert len({next(iter(n)) for n in owner.values()}) >= 2, owner


def test_ring_hash_on_a_cookie_is_sticky_and_spread(env: Setup) -> None:
    owner: dict[str, set[str]] = {}
    for round_ in range(3):
        for i in range(20):
            # The other cookies change every time: only `session` may decide.
            cookie = f"theme=t{round_}; session=s{i}; seen={round_ * 100 + i}"
            (name,) = servers_hit(env.port, "/lb/ring-cookie/echo", 1, {"Cookie": cookie})
            owner.setdefault(f"s{i}", set()).add(name)
    assert all(len(names) == 1 for names in owner.values()), owner
    assert len({next(iter(n)) for n in owner.values()}) >= 2, owner


def server_for(port: int, path: str, headers: list[tuple[str, str]]) -> str:
    """The backend that answered one GET with these header lines (repeats kept, in order)."""
    (reply,) = exchange(port, request("GET", path, headers + [("Connection", "close")]), ["GET"])
    assert reply.status == 200, reply.body
    return str(reply.json()["server"])


def test_ring_hash_on_a_repeated_header_uses_all_its_values_in_any_order(env: Setup) -> None:
    path = "/lb/ring-header/echo"
    owners = set()
    for i in range(12):
        user = f"user-{i}"
        one_way = server_for(env.port, path, [("X-User", user), ("X-User", "team-1")])
        other_way = server_for(env.port, path, [("X-User", "team-1"), ("X-User", user)])
        assert one_way == other_way, user  # Envoy's rule: the values' order does not matter
        owners.add(one_way)
    assert len(owners) >= 2, owners  # every value counts, not only the one all requests share


def test_ring_hash_on_a_cookie_finds_it_in_any_cookie_field(env: Setup) -> None:
    path = "/lb/ring-cookie/echo"
    for i in range(12):
        alone = server_for(env.port, path, [("Cookie", f"session=s{i}")])
        split = server_for(env.port, path, [("Cookie", "theme=t1"), ("Cookie", f"session=s{i}")])
        assert alone == split, i


# -- 3. headers ------------------------------------------------------------------------------------


def test_forwarded_headers_from_an_untrusted_client_are_replaced(env: Setup) -> None:
    m = marker()
    resp = fetch(
        env.port,
        f"/a/echo?m={m}",
        source=UNTRUSTED_IP,
        headers={
            "Host": "shop.test:8080",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.test",
        },
    )
    assert resp.status == 200
    got = seen(env.a, m)
    assert header_values(got, "x-forwarded-for") == [UNTRUSTED_IP]
    assert header_values(got, "x-forwarded-proto") == ["http"]
    assert header_values(got, "x-forwarded-host") == ["shop.test:8080"]
    assert header_values(got, "host") == ["shop.test:8080"]


def test_forwarded_headers_without_any_from_the_client(env: Setup) -> None:
    m = marker()
    fetch(env.port, f"/a/echo?m={m}", headers={"Host": "shop.test"})
    got = seen(env.a, m)
    assert header_values(got, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(got, "x-forwarded-proto") == ["http"]
    assert header_values(got, "x-forwarded-host") == ["shop.test"]


def test_forwarded_headers_from_a_trusted_client_are_kept_and_appended(env: Setup) -> None:
    m = marker()
    fetch(
        env.port,
        f"/a/echo?m={m}",
        source=TRUSTED_IP,
        headers={
            "Host": "internal.test",
            "X-Forwarded-For": "203.0.113.9, 198.51.100.2",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "www.shop.example",
        },
    )
    got = seen(env.a, m)
    assert header_values(got, "x-forwarded-for") == [f"203.0.113.9, 198.51.100.2, {TRUSTED_IP}"]
    assert header_values(got, "x-forwarded-proto") == ["https"]
    assert header_values(got, "x-forwarded-host") == ["www.shop.example"]


def test_request_id_is_generated_when_absent(env: Setup) -> None:
    m1, m2 = marker(), marker()
    fetch(env.port, f"/a/echo?m={m1}")
    fetch(env.port, f"/a/echo?m={m2}")
    ids = [header_values(seen(env.a, m), "x-request-id") for m in (m1, m2)]
    assert all(len(i) == 1 and UUID.fullmatch(i[0]) for i in ids), ids
    assert ids[0] != ids[1]


def test_request_id_from_the_client_is_passed_on_unchanged(env: Setup) -> None:
    m = marker()
    fetch(env.port, f"/a/echo?m={m}", headers={"X-Request-Id": "Client-Chosen_id.42"})
    assert header_values(seen(env.a, m), "x-request-id") == ["Client-Chosen_id.42"]


def test_proxy_error_carries_the_generated_request_id(env: Setup) -> None:
    resp = fetch(env.port, "/dead")
    assert resp.status == 503, resp.body
    rid = resp.headers["X-Request-Id"]
    assert rid is not None and UUID.fullmatch(rid), rid
    line = env.amb.process.wait_for(
        lambda recs: next((r for r in recs if r.get("request_id") == rid), None)
    )
    assert (line["status"], line["target"]) == (503, "/dead")


def test_hop_by_hop_request_headers_never_reach_the_backend(env: Setup) -> None:
    m = marker()
    headers = [
        ("Connection", "keep-alive, X-Secret, Host, Content-Length"),
        ("Connection", "X-Other-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),  # without Connection: upgrade it asks for nothing
        ("X-Secret", "hop-only"),
        ("X-Other-Secret", "hop-only-too"),
        ("X-Kept", "yes"),
        ("Content-Length", "5"),
    ]
    with connect(env.port) as sock:
        sock.sendall(request("POST", f"/a/echo?m={m}", headers, b"hello"))
        (reply,) = read_replies(sock, ["POST"], until_close=False)
    assert reply.status == 200
    got = seen(env.a, m)
    names = {k.lower() for k, _ in got["headers"]}
    dropped = {"connection", "keep-alive", "te", "trailer", "proxy-connection", "upgrade"}
    assert not names & (dropped | {"x-secret", "x-other-secret"}), got["headers"]
    assert header_values(got, "host") == ["proxy.test"]
    assert header_values(got, "content-length") == ["5"]
    assert header_values(got, "x-kept") == ["yes"]
    assert got["body"] == "hello"


def test_hop_by_hop_response_headers_never_reach_the_client(env: Setup) -> None:
    with connect(env.port) as sock:
        sock.sendall(request("GET", "/hop") * 2)
        replies = read_replies(sock, ["GET", "GET"], until_close=False)
    for reply in replies:
        assert (reply.status, reply.body) == (200, b"ok")
        assert reply.get("x-visible") == "yes"
        leaked = reply.names() & {"keep-alive", "x-internal", "proxy-connection", "trailer", "te"}
        assert not leaked, reply.raw_head
        assert reply.get("upgrade") is None, reply.raw_head
        assert "x-internal" not in (reply.get("connection") or "").lower(), reply.raw_head


# -- 4. bodies -------------------------------------------------------------------------------------


def test_content_length_request_body_arrives_intact(env: Setup) -> None:
    m = marker()
    body = b"name=podkit&bytes=\x00\x01\xff\r\n\r\nnot a head"
    resp = fetch(env.port, f"/a/echo?m={m}", method="POST", body=body)
    assert resp.status == 200
    assert seen(env.a, m)["body"].encode("latin-1") == body


def test_chunked_request_body_arrives_intact(env: Setup) -> None:
    m = marker()
    chunked = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    with connect(env.port) as sock:
        sock.sendall(request("POST", f"/a/echo?m={m}", {"Transfer-Encoding": "chunked"}, chunked))
        (reply,) = read_replies(sock, ["POST"], until_close=False)
    assert reply.status == 200
    assert reply.json()["body"] == "hello world"
    assert seen(env.a, m)["body"] == "hello world"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_body_through_curl(env: Setup, tmp_path: Path, framing: str) -> None:
    payload = base64.b64encode(os.urandom(5 * 1024 * 1024 * 3 // 4))  # 5 MiB of ASCII
    src = tmp_path / "upload.bin"
    src.write_bytes(payload)
    out = tmp_path / "response.json"
    m = marker()
    args = ["curl", "-sS", "-o", str(out), "-w", "%{http_code}", "-H", "Expect:"]
    if framing == "chunked":
        args += ["-H", "Transfer-Encoding: chunked"]
    args += ["--data-binary", f"@{src}", f"http://127.0.0.1:{env.port}/a/echo?m={m}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200"
    want = hashlib.sha256(payload).hexdigest()
    got = seen(env.a, m)
    assert hashlib.sha256(got["body"].encode("latin-1")).hexdigest() == want
    expected_te = ["chunked"] if framing == "chunked" else []
    assert header_values(got, "transfer-encoding") == expected_te
    # ... and the 5 MiB echoed back arrive whole as well.
    echoed = json.loads(out.read_bytes())["body"].encode("latin-1")
    assert hashlib.sha256(echoed).hexdigest() == want


def test_chunked_response_to_an_http11_client(env: Setup) -> None:
    with connect(env.port) as sock:
        sock.sendall(request("GET", "/a/chunked?q=11"))
        (reply,) = read_replies(sock, ["GET"], until_close=False)
    assert reply.status == 200
    assert reply.get("transfer-encoding") == "chunked"
    assert reply.get("content-length") is None
    assert reply.json()["path"] == "/chunked?q=11"


def test_chunked_response_to_an_http10_client_is_unchunked_then_closed(env: Setup) -> None:
    (reply,) = exchange(env.port, request("GET", "/a/chunked?q=10", version="1.0"), ["GET"])
    assert reply.status == 200
    assert reply.get("transfer-encoding") is None
    assert reply.json()["path"] == "/chunked?q=10"  # the bare payload, whole, then the close


def test_head_gets_no_body(env: Setup) -> None:
    with connect(env.port) as sock:
        sock.sendall(
            request("HEAD", "/a/echo?h=1")
            + request("HEAD", "/a/chunked?h=2")
            + request("HEAD", "/teapot")
            + request("GET", "/a/echo?h=4")
        )
        replies = read_replies(sock, ["HEAD", "HEAD", "HEAD", "GET"], until_close=False)
    length = replies[0].get("content-length")
    assert length is not None and int(length) > 0  # the backend said how long a GET would be
    assert replies[2].status == 418
    assert replies[2].get("content-length") == str(len("I'm a little teapot\n"))
    # Had a body followed any HEAD answer, the next response would not parse.
    assert [r.status for r in replies] == [200, 200, 418, 200]
    assert replies[3].json()["path"] == "/echo?h=4"


def test_204_and_304_carry_no_body(env: Setup) -> None:
    with connect(env.port) as sock:
        sock.sendall(
            request("GET", "/a/status/204")
            + request("GET", "/a/status/304")
            + request("GET", "/a/echo?after=304")
        )
        replies = read_replies(sock, ["GET", "GET", "GET"], until_close=False)
    assert [r.status for r in replies] == [204, 304, 200]
    for r in replies[:2]:
        assert r.get("transfer-encoding") is None, r.raw_head
    assert replies[2].json()["path"] == "/echo?after=304"


def test_expect_100_continue_with_curl(env: Setup) -> None:
    done = subprocess.run(
        [
            "curl", "-sS", "-v", "--expect100-timeout", "3", "-H", "Expect: 100-continue",
            "--data-binary", "name=podkit", f"http://127.0.0.1:{env.port}/a/echo?expect=curl",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["body"] == "name=podkit"
    # curl sent the body because the 100 came, not because it gave up waiting for it.
    assert "HTTP/1.1 100 Continue" in done.stderr, done.stderr
    assert "Done waiting for 100-continue" not in done.stderr, done.stderr


def test_expect_100_continue_raw(env: Setup) -> None:
    with connect(env.port) as sock:
        sock.sendall(
            request("POST", "/a/echo?expect=raw", {"Expect": "100-continue", "Content-Length": "5"})
        )
        interim = read_until(sock, b"\r\n\r\n", timeout=3)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        (reply,) = read_replies(sock, ["POST"], until_close=False)
    assert reply.status == 200
    assert reply.json()["body"] == "hello"


# -- 5. keep-alive and pipelining ----------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(env: Setup) -> None:
    data = (
        request("GET", "/b/slow/150")  # slow first: later answers must wait their turn
        + request("POST", "/a/echo?n=2", body=b"two")
        + request("HEAD", "/a/echo?n=3")
        + request("GET", "/a/chunked?n=4")
        + request("GET", "/teapot")
        + request("GET", "/nowhere")
        + request("GET", "/a/echo?n=7", {"Connection": "close"})
    )
    replies = exchange(env.port, data, ["GET", "POST", "HEAD", "GET", "GET", "GET", "GET"])
    assert [r.status for r in replies] == [200, 200, 200, 200, 418, 404, 200]
    assert replies[0].json()["server"] == "b"
    assert replies[1].json()["path"] == "/echo?n=2"
    assert replies[1].json()["body"] == "two"
    assert replies[2].body == b""
    assert replies[3].json()["path"] == "/chunked?n=4"
    assert replies[4].body == b"I'm a little teapot\n"
    assert replies[6].json()["path"] == "/echo?n=7"
    assert replies[6].get("connection") == "close"


def test_connection_close_from_the_client_closes_after_the_response(env: Setup) -> None:
    (reply,) = exchange(env.port, request("GET", "/a/echo", {"Connection": "close"}), ["GET"])
    assert reply.status == 200
    assert reply.get("connection") == "close"


def test_http10_without_keep_alive_closes(env: Setup) -> None:
    (reply,) = exchange(env.port, request("GET", "/a/echo?v=10", version="1.0"), ["GET"])
    assert reply.status == 200
    assert reply.json()["path"] == "/echo?v=10"


def test_http10_with_keep_alive_stays_open(env: Setup) -> None:
    with connect(env.port) as sock:
        for i in range(2):
            sock.sendall(
                request("GET", f"/a/echo?ka={i}", {"Connection": "keep-alive"}, version="1.0")
            )
            (reply,) = read_replies(sock, ["GET"], until_close=False)
            assert reply.status == 200
            assert reply.json()["path"] == f"/echo?ka={i}"
            assert (reply.get("connection") or "").lower() == "keep-alive"


def test_many_requests_on_one_keep_alive_connection(env: Setup) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=5)
    try:
        for i in range(20):
            conn.request("GET", f"/a/echo?seq={i}")
            resp = conn.getresponse()
            assert json.loads(resp.read())["path"] == f"/echo?seq={i}"
        local = conn.sock.getsockname()
        conn.request("GET", "/a/echo")
        conn.getresponse().read()
        assert conn.sock.getsockname() == local  # still the same connection
    finally:
        conn.close()


# -- 6. upgrade ------------------------------------------------------------------------------------


def test_upgrade_is_tunnelled_both_ways(env: Setup) -> None:
    before = len(env.up.heads)
    with connect(env.port) as sock:
        sock.sendall(
            request(
                "GET",
                "/tunnel/chat",
                {"Connection": "Upgrade", "Upgrade": "websocket", "X-Kept": "1"},
            )
        )
        first = read_until(sock, b"hello from the backend\n")
        head, _, rest = first.partition(b"\r\n\r\n")
        reply, _ = parse_reply(head + b"\r\n\r\n", 0, "GET", eof=False)
        assert reply.status == 101
        assert (reply.get("upgrade") or "").lower() == "websocket"
        assert (reply.get("connection") or "").lower() == "upgrade"
        assert rest == b"hello from the backend\n"  # server-first bytes after the 101
        for msg in (b"ping-1", b"\x00\x01binary\xff", b"ping-3" * 5000):
            sock.sendall(msg)
            assert read_until(sock, b"echo:" + msg) == b"echo:" + msg
    (sent,) = env.up.heads[before:]
    lines = sent.lower().split(b"\r\n")
    assert b"upgrade: websocket" in lines
    assert b"connection: upgrade" in lines
    assert b"x-kept: 1" in lines


def test_real_websocket_through_the_proxy(env: Setup) -> None:
    import aiohttp

    async def talk() -> list[Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{env.port}/ws") as ws,
        ):
            await ws.send_str("hello")
            text = await ws.receive(timeout=5)
            await ws.send_bytes(b"\x01\x02\x03")
            binary = await ws.receive(timeout=5)
            await ws.close()
            return [text.data, binary.data]

    assert asyncio.run(asyncio.wait_for(talk(), 10)) == ["echo:hello", b"\x03\x02\x01"]


# -- 7. operating it -------------------------------------------------------------------------------


def test_access_log_lines(env: Setup) -> None:
    rid_ok, rid_404 = f"log-{marker()}", f"log-{marker()}"
    fetch(env.port, "/a/echo?log=1", headers={"X-Request-Id": rid_ok})
    fetch(env.port, "/nowhere?log=2", method="POST", body=b"x", headers={"X-Request-Id": rid_404})

    def lines(_: Any) -> list[str] | None:
        found = [line for line in env.amb.process.lines if rid_ok in line or rid_404 in line]
        return found if len(found) == 2 else None

    ok, missing = (json.loads(line) for line in env.amb.process.wait_for(lines))
    if ok["request_id"] != rid_ok:
        ok, missing = missing, ok
    assert ok["method"] == "GET"
    assert ok["target"] == "/a/echo?log=1"
    assert ok["status"] == 200
    assert ok["upstream"] == env.a.address
    assert ok["request_id"] == rid_ok
    assert isinstance(ok["duration_ms"], int | float) and ok["duration_ms"] >= 0
    assert missing["method"] == "POST"
    assert missing["target"] == "/nowhere?log=2"
    assert missing["status"] == 404
    assert missing["upstream"] is None
    assert missing["request_id"] == rid_404


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ambassador, int]]:
    """An ambassador whose counters only test_stats_and_metrics_count_what_was_sent moves."""
    backend = EchoServer("ops")
    port = free_port()
    config = {
        "listeners": [
            {
                "name": "ops",
                "listen": f"127.0.0.1:{port}",
                "routes": [
                    {"match": {"prefix": "/app/"}, "rewrite_prefix": "/", "cluster": "opsapp"}
                ],
            }
        ],
        "clusters": [{"name": "opsapp", "endpoints": [{"address": backend.address}]}],
    }
    amb = Ambassador(tmp_path_factory.mktemp("ambassador-ops"), config)
    try:
        yield amb, port
    finally:
        amb.process.kill()
        backend.stop()


def test_ready_once_started(ops: tuple[Ambassador, int]) -> None:
    amb, _ = ops
    with urllib.request.urlopen(amb.admin + "/ready", timeout=5) as resp:
        assert resp.status == 200


def test_admin_listens_only_on_localhost(ops: tuple[Ambassador, int]) -> None:
    amb, _ = ops
    with socket.create_connection(("127.0.0.1", amb.admin_port), timeout=5):
        pass
    # Another address of this very machine: a server bound to 0.0.0.0 would answer here.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", amb.admin_port), timeout=5).close()


def test_stats_and_metrics_count_what_was_sent(ops: tuple[Ambassador, int]) -> None:
    amb, port = ops
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    statuses = []
    try:
        for path in ["/app/ok"] * 7 + ["/app/status/500"] * 2 + ["/missing"]:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    assert Counter(statuses) == {200: 7, 500: 2, 404: 1}

    stats = amb.stats()
    assert stats["clusters"]["opsapp"]["requests"] == {"200": 7, "500": 2}
    assert stats["listeners"]["ops"]["requests"] == {"200": 7, "404": 1, "500": 2}

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(amb.metrics())
        for s in family.samples
    }
    down = "podkit_proxy_downstream_requests_total"
    assert samples[(down, (("code", "200"), ("listener", "ops")))] == 7
    assert samples[(down, (("code", "500"), ("listener", "ops")))] == 2
    assert samples[(down, (("code", "404"), ("listener", "ops")))] == 1
    up = "podkit_proxy_upstream_requests_total"
    assert samples[(up, (("cluster", "opsapp"), ("code", "200")))] == 7
    count = "podkit_proxy_downstream_request_duration_seconds_count"
    assert samples[(count, (("listener", "ops"),))] == 10


# -- 8. config errors ----------------------------------------------------------------------------


def _base(port: int) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "main", "listen": f"127.0.0.1:{port}", "routes": [{"cluster": "app"}]}
        ],
        "clusters": [{"name": "app", "endpoints": [{"address": "127.0.0.1:9"}]}],
    }


def _unknown_field(c: dict[str, Any]) -> None:
    c["listeners"][0]["routes"][0]["timout"] = "5s"


def _unknown_cluster(c: dict[str, Any]) -> None:
    c["listeners"][0]["routes"].append({"match": {"prefix": "/x"}, "cluster": "nope"})


def _https_without_tls(c: dict[str, Any]) -> None:
    c["listeners"][0]["protocol"] = "https"


def _bad_duration(c: dict[str, Any]) -> None:
    c["clusters"][0]["timeouts"] = {"connect": "5 parsecs"}


def _ring_hash_without_hash_on(c: dict[str, Any]) -> None:
    c["clusters"][0]["lb"] = "ring_hash"


BAD_CONFIGS = {
    "unknown-field": (_unknown_field, "listeners[0].routes[0].timout", "unknown field"),
    "unknown-cluster": (_unknown_cluster, "listeners[0].routes[1].cluster", "unknown cluster"),
    "https-without-tls": (_https_without_tls, "listeners[0]", "https needs tls"),
    "bad-duration": (_bad_duration, "clusters[0].timeouts.connect", "invalid duration"),
    "ring-hash-without-hash-on": (_ring_hash_without_hash_on, "clusters[0]", "needs hash_on"),
}


@dataclass
class Run:
    path: Path
    port: int
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every bad config and the dry run, as processes started together (each costs half a
    second of interpreter start-up)."""
    tmp = tmp_path_factory.mktemp("ambassador-configs")
    started = {}
    for name, (spoil, _, _) in BAD_CONFIGS.items():
        port = free_port()
        config = _base(port)
        spoil(config)
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        started[name] = (path, port, ["--config", str(path)])
    port = free_port()
    dry = _base(port)
    dry["clusters"][0]["timeouts"] = {"connect": "250ms"}
    path = tmp / "dry-run.yaml"
    path.write_text(yaml.safe_dump(dry))
    started["dry-run"] = (path, port, ["--config", str(path), "--dry-run"])
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "podkit.images.ambassador", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (_, _, args) in started.items()
    }
    runs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=30)
        path, port, _ = started[name]
        runs[name] = Run(path, port, proc.returncode, out, err)
    return runs


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_naming_file_field_and_reason(
    config_runs: dict[str, Run], case: str
) -> None:
    run = config_runs[case]
    _, field, reason = BAD_CONFIGS[case]
    assert run.code == 2, run.stderr
    line = next((x for x in run.stderr.splitlines() if x.startswith(f"{run.path}: ")), None)
    assert line is not None, run.stderr
    assert line.startswith(f"{run.path}: {field}: "), run.stderr
    assert reason in line, run.stderr
    assert "Traceback" not in run.stderr


def test_dry_run_prints_the_config(config_runs: dict[str, Run]) -> None:
    run = config_runs["dry-run"]
    assert run.code == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["listeners"][0]["listen"] == f"127.0.0.1:{run.port}"
    assert printed["listeners"][0]["routes"][0]["cluster"] == "app"
    assert printed["listeners"][0]["routes"][0]["timeout"] == 15.0  # a default, filled in
    assert printed["clusters"][0]["timeouts"]["connect"] == 0.25  # "250ms", in seconds
    assert printed["admin"]["listen"] == "127.0.0.1:9901"  # the pod's localhost by default
