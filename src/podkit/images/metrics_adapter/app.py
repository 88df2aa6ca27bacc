"""The adapter's HTTP side: the translated page on `listen`, and the admin endpoints.

    GET <path> (/metrics)   the app's metrics and the adapter's own (cache.py), in the format
                            the Accept header asks for (render.py)
    GET /healthz /readyz    also here, so a probe can use the published port
    GET /                   a short text pointing at the page

The admin listener (common/admin.py) serves /healthz, /readyz and /metrics with the adapter's
own metrics only (no scrape of the app is triggered there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from podkit.common.admin import ALLOW_GET, admin_response
from podkit.common.httpserver import Request, Response
from podkit.images.metrics_adapter.cache import page_families, self_families
from podkit.images.metrics_adapter.scraper import Scraper

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class AdapterState:
    def __init__(self, scraper: Scraper, page_path: str) -> None:
        self.scraper = scraper
        self.page_path = page_path
        self.ready = False
        self._registry: CollectorRegistry | None = None

    def registry(self) -> CollectorRegistry:
        """The admin /metrics: the adapter's own metrics, as of the last scrape."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            from podkit.images.metrics_adapter.render import FamiliesCollector

            registry = CollectorRegistry(auto_describe=False)
            cache = self.scraper.cache
            registry.register(
                FamiliesCollector(lambda: self_families(cache.view(self.scraper.clock())))
            )
            self._registry = registry
        return self._registry


def build_handler(state: AdapterState) -> Callable[[Request], Awaitable[Response]]:
    def ready() -> bool:
        return state.ready

    async def handle(request: Request) -> Response:
        if request.path == state.page_path:
            if request.method not in ("GET", "HEAD"):
                return Response(405, b"method not allowed\n", headers=dict(ALLOW_GET))
            from podkit.images.metrics_adapter.render import render  # first page only: ~0.15 s

            view = await state.scraper.view()
            body, content_type = render(page_families(view), request.headers.get("accept", ""))
            return Response(200, body, content_type, headers={"Cache-Control": "no-store"})
        answer = admin_response(request, ready=ready, registry=None)  # /healthz, /readyz
        if answer is not None:
            return answer
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return Response.text(
                200, f"metrics-adapter: metrics of {state.scraper.url} at {state.page_path}\n"
            )
        return Response.text(404, "not found\n")

    return handle
