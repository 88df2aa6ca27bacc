"""Admin endpoints every podkit image serves on the pod's localhost.

    GET /healthz   200 while the process lives (liveness)
    GET /readyz    200 once the image says it is ready, 503 before, while shutting down, or
                   while the image says why not (`ready` returns a reason instead of True)
    GET /metrics   Prometheus text exposition of the registry the image passes

Two ways to serve them, both on common/httpserver.py (plain asyncio: aiohttp's import alone
would cost an image ~0.3 s of start-up):
- `AdminServer`: its own listener (default 127.0.0.1).
- `admin_response(request, ...)`: the same three routes inside an image's own handler
  (simple-webapp serves them on its main port).

`registry` is a callable returning the prometheus_client CollectorRegistry; it is first called
on the first scrape, so prometheus_client (~0.15 s to import) stays off the start-up path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from podkit.common.httpserver import HttpServer, Request, Response

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

RegistryFactory = Callable[[], "CollectorRegistry"]
Ready = Callable[[], bool | str]  # True, or False / the reason it is not

ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ALLOW_GET = {"Allow": "GET, HEAD"}


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def admin_response(
    request: Request, *, ready: Ready, registry: RegistryFactory | None
) -> Response | None:
    """The answer for an admin path, or None when `request.path` is not one of them."""
    path = request.path
    if path not in ADMIN_PATHS or (path == "/metrics" and registry is None):
        return None
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"method not allowed\n", headers=dict(ALLOW_GET))
    if path == "/healthz":
        return Response.text(200, "ok\n")
    if path == "/readyz":
        state = ready()
        if state is True:
            return Response.text(200, "ready\n")
        return Response.text(503, f"not ready: {state}\n" if state else "not ready\n")
    assert registry is not None
    body, content_type = render_metrics(registry())
    return Response(200, body, content_type)


class AdminServer:
    def __init__(
        self,
        *,
        ready: Ready,
        registry: RegistryFactory | None,
        extra: Callable[[Request], Response | None] | None = None,
    ) -> None:
        """`extra` answers an image's own read-only paths (None: not one of them)."""
        self._ready = ready
        self._registry = registry
        self._extra = extra
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
            # Every path here is read-only: 405 even for unknown paths, as before.
            return Response(405, b"method not allowed\n", headers=dict(ALLOW_GET))
        answer = admin_response(request, ready=self._ready, registry=self._registry)
        if answer is None and self._extra is not None:
            answer = self._extra(request)
        return answer if answer is not None else Response.text(404, "not found\n")
