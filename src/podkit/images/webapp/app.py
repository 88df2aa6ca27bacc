"""simple-webapp's HTTP application: pages, API, health and metrics routes."""

from __future__ import annotations

import base64
import contextlib
import html
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from podkit import __version__
from podkit.common.admin import add_admin_routes
from podkit.common.log_shipper import LogShipper
from podkit.common.podinfo import PodInfo
from podkit.images.webapp.access_log import REQUEST_START, AccessLog

STATE: web.AppKey[WebappState] = web.AppKey("state")


class WebappState:
    def __init__(self, pod: PodInfo, access: AccessLog) -> None:
        self.pod = pod
        self.access = access
        self.started = time.monotonic()
        self.ready = False
        self.registry = CollectorRegistry()
        requests = Counter(
            "simple_webapp_http_requests",
            "HTTP requests served, by method and status.",
            ["method", "status"],
            registry=self.registry,
        )
        access.on_request.append(lambda m, s: requests.labels(m, str(s)).inc())
        if access.shipper is not None:
            self.registry.register(_ShipperCollector(access.shipper))

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started


class _ShipperCollector(Collector):
    """The log shipper's plain counters, read at scrape time."""

    def __init__(self, shipper: LogShipper) -> None:
        self._shipper = shipper

    def collect(self) -> Iterator[Metric]:
        s = self._shipper
        prefix = "simple_webapp_log_agent_lines"
        yield CounterMetricFamily(f"{prefix}_sent", "Access lines sent to the log agent.", s.sent)
        yield CounterMetricFamily(
            f"{prefix}_dropped", "Access lines dropped because the queue was full.", s.dropped
        )
        yield GaugeMetricFamily(f"{prefix}_queued", "Access lines waiting to be sent.", s.queued)


@web.middleware
async def stamp_start(request: web.Request, handler: Handler) -> web.StreamResponse:
    # uvloop's loop.time() ticks in milliseconds; the access line wants finer request times.
    request[REQUEST_START] = time.perf_counter()
    return await handler(request)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n",
        status=status,
        content_type="application/json",
    )


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


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


async def index(request: web.Request) -> web.Response:
    data = info(request.app[STATE])
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
    return web.Response(text=page, content_type="text/html")


async def api_info(request: web.Request) -> web.Response:
    return _json(info(request.app[STATE]))


async def api_echo(request: web.Request) -> web.Response:
    body = await request.read()
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = str(name)  # aiohttp's istr keys are a str subclass orjson refuses
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "query": {k: request.query.getall(k) for k in request.query},
        "headers": headers,
        "remote": request.remote,
    }
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body"] = None
        out["body_base64"] = base64.b64encode(body).decode()
    if body and request.content_type == "application/json":
        with contextlib.suppress(orjson.JSONDecodeError):  # echo the raw body only
            out["json"] = orjson.loads(body)
    return _json(out)


def build_app(state: WebappState) -> web.Application:
    app = web.Application(middlewares=[stamp_start])
    app[STATE] = state
    app.router.add_get("/", index)
    app.router.add_get("/api/info", api_info)
    app.router.add_route("*", "/api/echo", api_echo)
    add_admin_routes(app, ready=lambda: state.ready, registry=lambda: state.registry)
    return app
