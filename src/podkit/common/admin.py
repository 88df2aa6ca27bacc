"""Admin endpoints every podkit image serves on the pod's localhost.

    GET /healthz   200 while the process lives (liveness)
    GET /readyz    200 once the image says it is ready, 503 before and while shutting down
    GET /metrics   Prometheus text exposition of the registry the image passes

Two ways to serve them:
- `AdminServer`: its own listener (default 127.0.0.1) on plain asyncio. Images that must start
  fast use this; aiohttp's import alone would cost them ~0.4 s.
- `add_admin_routes(app, ...)`: the same three routes on an aiohttp application the image
  already runs.

`registry` is a callable returning the prometheus_client CollectorRegistry; it is first called
on the first scrape, so prometheus_client (~0.15 s to import) stays off the start-up path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from podkit.common.httpserver import HttpServer, Request, Response

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

RegistryFactory = Callable[[], "CollectorRegistry"]


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


class AdminServer:
    def __init__(self, *, ready: Callable[[], bool], registry: RegistryFactory | None) -> None:
        self._ready = ready
        self._registry = registry
        self._http = HttpServer(self._handle, max_body=64 * 1024)

    async def start(self, host: str, port: int) -> None:
        await self._http.start(host, port)

    @property
    def port(self) -> int:
        return self._http.port

    async def close(self) -> None:
        await self._http.close(timeout=0.2)

    async def _handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"})
        if request.path == "/healthz":
            return Response.text(200, "ok\n")
        if request.path == "/readyz":
            return (
                Response.text(200, "ready\n")
                if self._ready()
                else Response.text(503, "not ready\n")
            )
        if request.path == "/metrics" and self._registry is not None:
            body, content_type = render_metrics(self._registry())
            return Response(200, body, content_type)
        return Response.text(404, "not found\n")


def add_admin_routes(
    app: web.Application, *, ready: Callable[[], bool], registry: RegistryFactory | None
) -> None:
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return (
            web.Response(text="ready\n")
            if ready()
            else web.Response(status=503, text="not ready\n")
        )

    async def metrics(_: web.Request) -> web.Response:
        assert registry is not None
        body, content_type = render_metrics(registry())
        # aiohttp wants charset apart from the media type
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if registry is not None:
        app.router.add_get("/metrics", metrics)
