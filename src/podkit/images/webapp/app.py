"""simple-webapp's HTTP application: pages, API, health and metrics routes.

    GET  /            HTML page about the pod
    GET  /api/info    the same as JSON (pod name, namespace, uid, node, container, uptime, ...)
    GET  /status      counters as JSON (requests, errors, in_flight, uptime, per route), the
                      status the pod's metrics-adapter turns into Prometheus metrics
    GET  /api/call    ?path=/x: GET <UPSTREAM_URL>/x (through the pod's ambassador) as JSON
    ANY  /api/echo    the request back as JSON: method, path, query, headers, remote, body
    GET  /healthz  /readyz  /metrics   (common/admin.py)

GET routes answer HEAD too; other methods on them get 405 with an Allow header, unknown paths
404. Served by common/httpserver.py, whose response hook writes the access line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from podkit import __version__
from podkit.common.admin import ADMIN_PATHS, ALLOW_GET, admin_response
from podkit.common.httpserver import Request, Response
from podkit.common.podinfo import PodInfo
from podkit.images.webapp.access_log import AccessLog
from podkit.images.webapp.counts import RequestCounts, StatusCounts
from podkit.proxy.h1 import ChunkedScanner, ProtocolError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MAX_BODY = 1024 * 1024  # request bodies above this get 413 (aiohttp's default, kept)


class WebappState:
    def __init__(self, pod: PodInfo, access: AccessLog, *, upstream_url: str = "") -> None:
        self.pod = pod
        self.upstream_url = upstream_url
        self.access = access
        self.started = time.monotonic()
        self.ready = False
        self.counts = RequestCounts()
        access.on_request.append(self.counts.inc)
        self.status = StatusCounts(KNOWN_ROUTES)
        self._registry: CollectorRegistry | None = None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def on_response(self, request: Request, response: Response, sent: int, took: float) -> None:
        """HttpServer's response hook: the access line, then the /status counters."""
        self.access.log_response(request, response, sent, took)
        self.status.finished(unquote(request.path), response.status)

    def registry(self) -> CollectorRegistry:
        """Built at the first scrape: prometheus_client stays off the start-up path."""
        if self._registry is None:
            from podkit.images.webapp.metrics import build_registry

            self._registry = build_registry(self.counts, self.access.shipper)
        return self._registry


def _json(data: Any, status: int = 200) -> Response:
    body = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    return Response(status, body, "application/json")


def info(state: WebappState) -> dict[str, Any]:
    pod = state.pod
    return {
        "app": "simple-webapp",
        "version": __version__,
        "pod_name": pod.pod_name,
        "namespace": pod.namespace,
        "pod_uid": pod.pod_uid,
        "node_name": pod.node_name,
        "container": pod.container_name,
        "hostname": pod.hostname,
        "uptime_seconds": round(state.uptime, 3),
        "requests_served": state.access.requests,
    }


def status_page(state: WebappState, request: Request) -> Response:
    """Counters as the app itself sees them (the metrics-adapter's input). `requests` counts
    responses written, so this one is not in it yet; `in_flight` includes it."""
    counts = state.status
    data: dict[str, Any] = {
        "app": "simple-webapp",
        "version": __version__,
        "ready": state.ready,
        "uptime_seconds": round(state.uptime, 3),
        "requests": state.access.requests,
        "errors": counts.errors,
        "client_errors": counts.client_errors,
        "in_flight": counts.in_flight,
        "routes": counts.routes(),
    }
    shipper = state.access.shipper
    if shipper is not None:
        data["log_agent"] = {
            "connected": shipper.connected,
            "sent": shipper.sent,
            "dropped": shipper.dropped,
            "queued": shipper.queued,
        }
    return _json(data)


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def index(state: WebappState, request: Request) -> Response:
    data = info(state)
    rows = "\n".join(
        f"      <tr><th>{html.escape(k)}</th><td>{html.escape(_show(v))}</td></tr>"
        for k, v in data.items()
    )
    page = f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>simple-webapp</title>
  </head>
  <body>
    <h1>simple-webapp</h1>
    <p>Hello from pod <strong>{html.escape(_show(data["pod_name"]))}</strong>
       on host <strong>{html.escape(data["hostname"])}</strong>.</p>
    <table>
{rows}
    </table>
    <p><a href="/api/info">/api/info</a> · <a href="/api/echo">/api/echo</a> ·
       <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> ·
       <a href="/metrics">/metrics</a></p>
  </body>
</html>
"""
    return Response(200, page.encode(), "text/html; charset=utf-8")


def api_info(state: WebappState, request: Request) -> Response:
    return _json(info(state))


def api_echo(state: WebappState, request: Request) -> Response:
    body = request.body
    headers: dict[str, str] = {}
    for name, value in request.raw_headers:  # names as the client spelled them
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out: dict[str, Any] = {
        "method": request.method,
        "path": request.path,  # percent-decoded by the router
        "query": request.query_params(),
        "headers": headers,
        "remote": request.remote,
    }
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body"] = None
        out["body_base64"] = base64.b64encode(body).decode()
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media_type == "application/json":
        with contextlib.suppress(orjson.JSONDecodeError):  # echo the raw body only
            out["json"] = orjson.loads(body)
    return _json(out)


CALL_TIMEOUT = 5.0  # seconds for the whole outbound request


async def api_call(state: WebappState, request: Request) -> Response:
    """GET <upstream_url><path>: the app calling out through its ambassador or adapter, as a
    service calls its dependencies. Answers the upstream's status and body as JSON."""
    if not state.upstream_url:
        return _json({"error": "no upstream configured (set UPSTREAM_URL)"}, 503)
    path = (request.query_params().get("path") or ["/"])[0]
    if not path.startswith("/"):
        return _json({"error": "path must start with /"}, 400)
    host, _, port = state.upstream_url.removeprefix("http://").rstrip("/").partition(":")
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, int(port or 80))
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port or 80}\r\n"
                "User-Agent: simple-webapp\r\nConnection: close\r\n\r\n".encode()
            )
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError) as exc:
        return _json({"error": f"upstream unreachable: {exc}"}, 502)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        return _json({"error": "upstream sent no HTTP response"}, 502)
    if b"transfer-encoding: chunked" in head.lower():
        try:
            body = _unchunk(body)
        except ProtocolError:
            return _json({"error": "upstream sent a malformed chunked body"}, 502)
    out: dict[str, Any] = {"upstream_status": int(status_line[1])}
    try:
        out["body"] = orjson.loads(body)
    except orjson.JSONDecodeError:
        out["body"] = body.decode("utf-8", "replace")
    return _json(out)


def _unchunk(body: bytes) -> bytes:
    """The payload of a chunked body, framing checked by the proxy engine's own scanner."""
    payload: list[bytes] = []
    ChunkedScanner(status=502, payload=payload).feed(body)
    return b"".join(payload)


Route = Callable[[WebappState, Request], Response]
# path -> (methods, handler); None allows every method
ROUTES: dict[str, tuple[frozenset[str] | None, Route]] = {
    "/": (frozenset({"GET", "HEAD"}), index),
    "/api/info": (frozenset({"GET", "HEAD"}), api_info),
    "/api/echo": (None, api_echo),
    "/status": (frozenset({"GET", "HEAD"}), status_page),
}
# Paths counted by name in /status (anything else is "other").
KNOWN_ROUTES = frozenset({*ROUTES, "/api/call", *ADMIN_PATHS})


def build_handler(state: WebappState) -> Callable[[Request], Awaitable[Response]]:
    """The HttpServer handler: routes on the percent-decoded path, as aiohttp did."""

    def ready() -> bool:
        return state.ready

    async def handle(request: Request) -> Response:
        state.status.in_flight += 1
        try:
            return await route(request)
        finally:
            state.status.in_flight -= 1

    async def route(request: Request) -> Response:
        path = unquote(request.path)
        if path != request.path:
            request = replace(request, path=path)
        if path == "/api/call" and request.method in ("GET", "HEAD"):
            return await api_call(state, request)
        entry = ROUTES.get(path)
        if entry is None:
            admin = admin_response(request, ready=ready, registry=state.registry)
            return admin if admin is not None else Response.text(404, "404: Not Found\n")
        methods, handler = entry
        if methods is not None and request.method not in methods:
            return Response(405, b"405: Method Not Allowed\n", headers=dict(ALLOW_GET))
        return handler(state, request)

    return handle
