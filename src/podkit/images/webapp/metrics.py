"""simple-webapp's Prometheus metrics, built at the first scrape.

This module imports prometheus_client (~0.15 s), so app.py imports it only when /metrics is first
asked for. Until then requests are counted in a plain dict (RequestCounts) that the collector here
reads at each scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from podkit.common.log_shipper import LogShipper
from podkit.images.webapp.counts import RequestCounts


class _RequestsCollector(Collector):
    def __init__(self, counts: RequestCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "simple_webapp_http_requests",
            "HTTP requests served, by method and status.",
            labels=["method", "status"],
        )
        for (method, status), (count, created) in self._counts.snapshot().items():
            family.add_metric([method, str(status)], count, created=created)
        yield family


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


def build_registry(counts: RequestCounts, shipper: LogShipper | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_RequestsCollector(counts))
    if shipper is not None:
        registry.register(_ShipperCollector(shipper))
    return registry
