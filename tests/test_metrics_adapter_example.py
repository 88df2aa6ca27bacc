"""examples/adapter-metrics.yaml, end to end, as the README tells a user to run it: the webapp's
/status, turned into Prometheus and OpenMetrics by the metrics-adapter beside it in the pod."""

from __future__ import annotations

import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from podkit_harness import REPO, free_port, http_get, wait_for

EXAMPLE = REPO / "examples" / "adapter-metrics.yaml"


def _page(url: str, accept: str = "") -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_adapter_metrics_example_exports_the_webapps_status(podkit) -> None:
    app_port, metrics_port = free_port(), free_port()
    run = podkit("run", str(EXAMPLE), "-p", f"{app_port}:8080", "-p", f"{metrics_port}:9102")
    run.wait_stderr(f"published on localhost:{app_port}")
    run.wait_stderr(f"published on localhost:{metrics_port}")
    app = f"http://localhost:{app_port}"
    wait_for("the webapp", lambda: http_get(app + "/")[0] == 200, 20)
    for path in ("/", "/nope", "/api/info"):
        http_get(app + path)
    metrics = f"http://localhost:{metrics_port}/metrics"

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        content_type, body = _page(metrics)
        assert content_type.startswith("text/plain; version=0.0.4")
        got = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse_prometheus(body)
            for s in family.samples
        }
        # The adapter may come up before the app: wait for a page with the app's values.
        return got if got.get(("metrics_adapter_up", ())) == 1 else None

    samples = wait_for("the adapter's page with the app's metrics", scraped, 20)
    assert samples[("webapp_requests_total", ())] >= 4  # ours; the probes' come on top
    assert samples[("webapp_route_requests_total", (("route", "/api/info"),))] == 1
    assert samples[("webapp_route_requests_total", (("route", "/"),))] >= 2
    assert samples[("webapp_route_requests_total", (("route", "other"),))] == 1
    assert samples[("webapp_errors_total", ())] == 0
    assert samples[("webapp_in_flight_requests", ())] == 1
    assert samples[("webapp_uptime_seconds", ())] > 0
    assert samples[("webapp_build_info", (("app", "simple-webapp"), ("version", "0.1.0")))] == 1

    content_type, body = _page(metrics, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(body)}
    assert families["webapp_requests"].type == "counter"
    assert families["webapp_uptime_seconds"].unit == "seconds"
    assert families["webapp_build"].type == "info"
    assert run.stop() == 0
