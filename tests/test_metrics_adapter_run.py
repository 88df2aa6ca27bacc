"""metrics-adapter as a user meets it: a real process scraping a real app over HTTP, its page
read with urllib and parsed by prometheus-client's own parsers (Prometheus text and
OpenMetrics), a slow app, an app answering garbage, a bad config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from log_agent_harness import ImageProcess, clean_environ
from proxy_harness import BackgroundServer

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def adapter_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in clean_environ().items() if not k.startswith("METRICS_ADAPTER_")}
    return {**env, **extra}


class Adapter(ImageProcess):
    def __init__(self, tmp: Path, config: str, env: dict[str, str]) -> None:
        path = tmp / f"adapter-{time.monotonic_ns()}.yaml"
        path.write_text(textwrap.dedent(config))
        super().__init__("podkit.images.metrics_adapter", ["--config", str(path)], env, tmp)
        ready = self.wait_for(
            lambda recs: next((r for r in recs if r.get("msg") == "ready"), None), timeout=10
        )
        self.page = "http://" + ready["listening"]["metrics"]
        self.admin = "http://" + ready["listening"]["admin"]


StartAdapter = Callable[[str], Adapter]


@pytest.fixture
def start_adapter(tmp_path: Path) -> Iterator[StartAdapter]:
    """`start_adapter(config_yaml)`: the page and admin listen on free ports; killed at the end."""
    started: list[Adapter] = []

    def start(config: str) -> Adapter:
        adapter = Adapter(
            tmp_path,
            config,
            adapter_env(
                METRICS_ADAPTER_LISTEN="127.0.0.1:0", METRICS_ADAPTER_ADMIN__LISTEN="127.0.0.1:0"
            ),
        )
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        adapter.kill()


class _AppHandler(BaseHTTPRequestHandler):
    server: _AppServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        app = self.server.app
        with app.lock:
            app.requests += 1
            body, content_type, status, delay = app.body, app.content_type, app.status, app.delay
        if delay:
            app.release.wait(delay)  # the app hangs (until the test ends)
        if content_type == "raw":
            self.wfile.write(body)  # not HTTP at all
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _AppServer(BackgroundServer, ThreadingHTTPServer):
    app: StatusApp

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a hung answer released at the end finds the adapter gone: expected


class StatusApp:
    """A stand-in app whose /status answers what the test sets: body, type, status, delay."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        self.lock = threading.Lock()
        self.body = body
        self.content_type = content_type
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        self.release = threading.Event()
        self.server = _AppServer(("127.0.0.1", 0), _AppHandler)
        self.server.app = self
        self.url = f"http://127.0.0.1:{self.server.port}/status"
        self.server.serve_in_background()

    def answer(
        self, body: bytes, content_type: str = "application/json", status: int = 200
    ) -> None:
        with self.lock:
            self.body, self.content_type, self.status = body, content_type, status

    def close(self) -> None:
        self.release.set()
        self.server.stop()


@pytest.fixture
def status_app() -> Iterator[Callable[..., StatusApp]]:
    apps: list[StatusApp] = []

    def start(body: bytes, content_type: str = "application/json") -> StatusApp:
        app = StatusApp(body, content_type)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()


def get(url: str, accept: str = "", method: str = "GET") -> tuple[int, str, str]:
    """(status, Content-Type, body); an HTTP error status is an answer too."""
    headers = {"Accept": accept} if accept else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(adapter: Adapter, accept: str = "") -> Samples:
    """The page, checked and parsed by the parser its Content-Type calls for."""
    status, content_type, body = get(adapter.page, accept)
    assert status == 200, body
    if accept.startswith("application/openmetrics-text"):
        assert content_type.startswith("application/openmetrics-text; version=1.0.0"), content_type
        assert body.endswith("# EOF\n")
        families = parse_openmetrics(body)
    else:
        assert content_type == "text/plain; version=0.0.4; charset=utf-8", content_type
        assert "# EOF" not in body
        families = parse_prometheus(body)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def result(samples: Samples, kind: str) -> float:
    return samples[("metrics_adapter_scrapes_total", (("result", kind),))]


def test_simple_webapp_status_becomes_prometheus_and_openmetrics(
    start_adapter: StartAdapter, tmp_path: Path
) -> None:
    webapp = ImageProcess(
        "podkit.images.webapp",
        ["--port", "0", "--host", "127.0.0.1"],
        adapter_env(LOG_AGENT_ADDR="off", UPSTREAM_URL="http://127.0.0.1:1"),
        tmp_path,
    )
    try:
        serving = webapp.wait_for(
            lambda recs: next((r for r in recs if r.get("msg") == "serving"), None), timeout=10
        )
        base = "http://" + serving["listen"][0]
        # 3 pages, a 404, an API call, and a 502 (its upstream is not there).
        for path in ("/", "/", "/", "/nope", "/api/info", "/api/call?path=/x"):
            get(base + path)
        adapter = start_adapter(
            f"""
            target: {{url: "{base}/status", cache_ttl: 0}}
            metrics:
              - {{name: webapp_requests, path: $.requests, type: counter, help: Responses.}}
              - {{name: webapp_errors, path: $.errors, type: counter}}
              - {{name: webapp_in_flight, path: '{{.in_flight}}'}}
              - {{name: webapp_uptime, path: $.uptime_seconds, unit: seconds}}
              - name: webapp_route
                type: object
                valuetype: counter
                path: '$.routes[*]'
                labels: {{route: '{{.route}}', app: simple-webapp}}
                values: {{requests: $.requests, client_errors: $.client_errors}}
              - {{name: webapp, type: info, path: $, labels: {{version: $.version}}}}
            """
        )
        text = scrape(adapter)
        app = ("app", "simple-webapp")
        assert text[("metrics_adapter_up", ())] == 1
        assert text[("webapp_requests_total", ())] == 6  # the status request is not written yet
        assert text[("webapp_errors_total", ())] == 1
        assert text[("webapp_in_flight", ())] == 1  # the status request itself
        assert text[("webapp_uptime_seconds", ())] > 0
        assert text[("webapp_route_requests_total", (app, ("route", "/")))] == 3
        assert text[("webapp_route_requests_total", (app, ("route", "/api/info")))] == 1
        assert text[("webapp_route_client_errors_total", (app, ("route", "other")))] == 1
        assert text[("webapp_info", (("version", "0.1.0"),))] == 1

        om = scrape(adapter, OPENMETRICS)  # cache_ttl 0: a new scrape, which sees the last one
        assert om[("webapp_requests_total", ())] == 7
        assert om[("webapp_route_requests_total", (app, ("route", "/status")))] == 1
        assert om[("webapp_info", (("version", "0.1.0"),))] == 1
        assert result(om, "ok") == 2
        # The OpenMetrics page carries the metadata too.
        _, _, body = get(adapter.page, OPENMETRICS)
        families = {f.name: f for f in parse_openmetrics(body)}
        assert families["webapp_requests"].type == "counter"
        assert families["webapp_requests"].documentation == "Responses."
        assert families["webapp_uptime_seconds"].unit == "seconds"
        assert families["webapp"].type == "info"
    finally:
        webapp.kill()


def test_key_value_text_without_rules_and_the_admin_side(
    start_adapter: StartAdapter, status_app: Callable[..., StatusApp]
) -> None:
    app = status_app(b"# app stats\nrequests=7\nlatency_ms: 12.5\nversion=1.2.3\n", "text/plain")
    adapter = start_adapter(f"target: {{url: '{app.url}', format: text}}")
    for samples in (scrape(adapter), scrape(adapter, OPENMETRICS)):
        assert samples[("requests", ())] == 7 and samples[("latency_ms", ())] == 12.5
        assert not any(name == "version" for name, _ in samples)  # not a number: left out
    assert app.requests == 1  # cache_ttl (1 s by default): the second page reused the scrape

    # Admin: health, readiness, and the adapter's own metrics without asking the app again.
    assert get(adapter.admin + "/healthz")[0] == 200
    assert get(adapter.admin + "/readyz")[0] == 200
    status, _, body = get(adapter.admin + "/metrics")
    own = {s.name for f in parse_prometheus(body) for s in f.samples}
    assert status == 200 and "metrics_adapter_up" in own and "requests" not in own
    assert app.requests == 1
    # The page's port answers probes too; other paths and methods are refused.
    assert get(adapter.page.replace("/metrics", "/readyz"))[0] == 200
    assert get(adapter.page, method="POST")[0] == 405
    assert get(adapter.page.replace("/metrics", "/nope"))[0] == 404

    adapter.proc.send_signal(signal.SIGTERM)
    assert adapter.proc.wait(5) == 0
    assert any(r.get("msg") == "shutting down" for r in adapter.records())


def test_a_slow_app_never_makes_the_page_hang(
    start_adapter: StartAdapter, status_app: Callable[..., StatusApp]
) -> None:
    app = status_app(b'{"requests": 3}')
    adapter = start_adapter(
        f"""
        target: {{url: '{app.url}', timeout: 500ms, cache_ttl: 0, serve_stale_for: 60s}}
        metrics: [{{name: app_requests, path: $.requests, type: counter}}]
        """
    )
    assert scrape(adapter)[("app_requests_total", ())] == 3

    app.delay = 60.0  # the app hangs from now on
    app.answer(b'{"requests": 4}')

    def timed_scrape(accept: str) -> tuple[float, Samples]:
        started = time.monotonic()
        samples = scrape(adapter, accept)
        return time.monotonic() - started, samples

    # Four scrapers at once: each answered when the one scrape of the app times out.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(timed_scrape, ["", OPENMETRICS, "", OPENMETRICS]))
    for took, samples in answers:
        assert took < 2.0, f"the page took {took:.2f}s with a 0.5 s scrape timeout"
        assert samples[("metrics_adapter_up", ())] == 0
        assert result(samples, "timeout") == 1
        # The policy: serve_stale_for keeps the last good values, their age shown.
        assert samples[("app_requests_total", ())] == 3
        assert samples[("metrics_adapter_data_age_seconds", ())] >= 0.49
        assert samples[("metrics_adapter_scrape_duration_seconds", ())] >= 0.49
    assert app.requests == 2  # one scrape for the four pages
    warning = adapter.wait_for(
        lambda recs: next((r for r in recs if r.get("msg") == "scrape failed"), None)
    )
    assert warning["result"] == "timeout" and warning["level"] == "warning"

    app.delay = 0.0  # the app is back
    samples = scrape(adapter)
    assert samples[("metrics_adapter_up", ())] == 1 and samples[("app_requests_total", ())] == 4


@pytest.mark.parametrize(
    ("body", "content_type", "status", "expected"),
    [
        (b"<html><h1>Service Unavailable</h1></html>", "text/html", 200, "bad_body"),
        (b'{"requests": ', "application/json", 200, "bad_body"),
        (b'{"requests": 2}', "application/json", 500, "http_error"),
        (b"\x00\x01 garbage, not HTTP\r\n\r\n", "raw", 200, "http_error"),
        (b'{"requests": 2, "pad": "' + b"x" * 5000 + b'"}', "application/json", 200, "too_large"),
    ],
)
def test_garbage_from_the_app_is_up_0_not_a_broken_page(
    start_adapter: StartAdapter,
    status_app: Callable[..., StatusApp],
    body: bytes,
    content_type: str,
    status: int,
    expected: str,
) -> None:
    app = status_app(b'{"requests": 1}')
    adapter = start_adapter(
        f"""
        target: {{url: '{app.url}', cache_ttl: 0, max_body_bytes: 1000}}
        metrics: [{{name: app_requests, path: $.requests, type: counter}}]
        """
    )
    assert scrape(adapter)[("metrics_adapter_up", ())] == 1

    app.answer(body, content_type, status)
    for accept in ("", OPENMETRICS):
        samples = scrape(adapter, accept)
        assert samples[("metrics_adapter_up", ())] == 0
        assert ("app_requests_total", ()) not in samples  # serve_stale_for 0 (the default)
    assert result(samples, expected) == 2 and result(samples, "ok") == 1

    app.close()  # the app is gone: connection refused
    samples = scrape(adapter)
    assert samples[("metrics_adapter_up", ())] == 0 and result(samples, "connect_error") == 1
    [failure] = [r for r in adapter.records() if r.get("msg") == "scrape failed"]
    assert failure["result"] == expected  # logged once per outage, with the reason
    assert failure["error"]


def test_a_config_error_exits_2_naming_the_file_and_field_path(tmp_path: Path) -> None:
    path = tmp_path / "adapter.yaml"
    path.write_text(
        textwrap.dedent(
            """
            metrics:
              - {name: requests, path: $.requests}
              - name: routes
                path: '$.routes[*]'
                labels: {route: '{ .route'}
              - {name: errors, path: '$.errors[?(@.code = 500)]'}
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "podkit.images.metrics_adapter", "--config", str(path)],
        env=adapter_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # nothing was started, nothing logged as ready
    assert done.stderr.splitlines() == [
        "metrics-adapter: config error:",
        f"{path}: metrics[1].labels.route: invalid selector '{{ .route': '{{' without a "
        "closing '}' (a label with a {selector} inside is a template)",
        f"{path}: metrics[2].path: invalid selector '$.errors[?(@.code = 500)]': at character "
        "19: use == to compare",
    ]
    assert time.monotonic() - started < 10

    # An environment override is named as the source of its error.
    done = subprocess.run(
        [sys.executable, "-m", "podkit.images.metrics_adapter", "--dry-run"],
        env=adapter_env(METRICS_ADAPTER_TARGET__TIMEOUT="soon"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert (
        "environment METRICS_ADAPTER_TARGET__TIMEOUT: target.timeout: invalid duration 'soon'"
        in done.stderr
    )
    assert (
        json.loads(
            subprocess.run(
                [sys.executable, "-m", "podkit.images.metrics_adapter", "--dry-run"],
                env=adapter_env(METRICS_ADAPTER_TARGET__TIMEOUT="250ms"),
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
        )["target"]["timeout"]
        == 0.25
    )
