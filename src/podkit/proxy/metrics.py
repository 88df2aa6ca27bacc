"""Prometheus metrics of the proxy, built at scrape time from /stats (merged over workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from podkit.proxy.stats import histogram_samples

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

P = "podkit_proxy_"
UPSTREAM_COUNTERS = {
    "connect_failures": "Upstream connections that could not be made",
    "resets": "Upstream connections closed before a whole response",
    "timeouts": "Requests whose upstream did not answer in time",
    "retries": "Requests sent again after a failure",
    "overflows": "Requests refused by the circuit breaker",
    "no_healthy": "Requests refused because no endpoint was available",
    "ejections": "Endpoints ejected by outlier detection",
    "auth_retries": "Requests sent once more with a new credential after a 401",
}


class ProxyCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats  # the current /stats document

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        yield from _listener_metrics(stats["listeners"])
        yield from _cluster_metrics(stats["clusters"])


def _listener_metrics(listeners: dict[str, Any]) -> Iterator[Metric]:
    labels = ["listener"]
    requests = CounterMetricFamily(
        P + "downstream_requests", "Requests answered, by status", labels=[*labels, "code"]
    )
    rejected = CounterMetricFamily(
        P + "downstream_rejected_requests",
        "Malformed or over-limit requests refused, by status",
        labels=[*labels, "code"],
    )
    conns = CounterMetricFamily(P + "downstream_connections", "Connections accepted", labels=labels)
    active = GaugeMetricFamily(
        P + "downstream_connections_active", "Open connections", labels=labels
    )
    latency = HistogramMetricFamily(
        P + "downstream_request_duration_seconds",
        "From a request's head to the end of its response",
        labels=labels,
    )
    for name, s in listeners.items():
        for code, n in s["requests"].items():
            requests.add_metric([name, code], n)
        for code, n in s["rejected"].items():
            rejected.add_metric([name, code], n)
        conns.add_metric([name], s["connections_total"])
        active.add_metric([name], s["active_connections"])
        latency.add_metric([name], list(histogram_samples(s["latency"])), s["latency"]["sum"])
    yield from (requests, rejected, conns, active, latency)


def _cluster_metrics(clusters: dict[str, Any]) -> Iterator[Metric]:
    labels = ["cluster"]
    requests = CounterMetricFamily(
        P + "upstream_requests", "Requests to a cluster, by final status", labels=[*labels, "code"]
    )
    latency = HistogramMetricFamily(
        P + "upstream_request_duration_seconds", "Request duration per cluster", labels=labels
    )
    counters = {
        key: CounterMetricFamily(P + "upstream_" + key, text, labels=labels)
        for key, text in UPSTREAM_COUNTERS.items()
    }
    conns = GaugeMetricFamily(
        P + "upstream_connections_active", "Open upstream connections", labels=labels
    )
    active = GaugeMetricFamily(P + "upstream_requests_active", "Requests in flight", labels=labels)
    available = GaugeMetricFamily(
        P + "endpoint_available",
        "1 when an endpoint takes requests (healthy, not ejected)",
        labels=[*labels, "endpoint"],
    )
    for name, c in clusters.items():
        for code, n in c["requests"].items():
            requests.add_metric([name, code], n)
        latency.add_metric([name], list(histogram_samples(c["latency"])), c["latency"]["sum"])
        for key, family in counters.items():
            family.add_metric([name], c[key])
        conns.add_metric([name], c["connections"])
        active.add_metric([name], c["active_requests"])
        for e in c["endpoints"]:
            available.add_metric([name, e["address"]], 1.0 if e["available"] else 0.0)
    yield from (requests, latency, *counters.values(), conns, active, available)
