"""Counters the hot path bumps as plain ints, turned into Prometheus metrics only when scraped
(a prometheus_client call per request would cost more than the rest of proxying it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Seconds; Envoy-like spread from 0.5 ms to 60 s.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def status_counts(requests: dict[int, int]) -> dict[str, int]:
    """Counts by status for /stats and /metrics; 0 (cut mid-exchange) is shown as "aborted"."""
    return {(str(k) if k else "aborted"): v for k, v in sorted(requests.items())}


class Histogram:
    """Observations by bucket (bisect_left(BUCKETS, seconds)) and their sum. The hot path bumps
    both fields itself (ListenerRuntime.finished): a method call per request costs more."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


class ClusterStats:
    """Per cluster: what /metrics and /stats show."""

    __slots__ = (
        "requests",
        "latency",
        "connect_failures",
        "resets",
        "timeouts",
        "retries",
        "overflows",
        "no_healthy",
        "ejections",
        "auth_retries",
        "connections_total",
    )

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}  # upstream status -> count
        self.latency = Histogram()
        self.connect_failures = 0
        self.resets = 0
        self.timeouts = 0
        self.retries = 0
        self.overflows = 0  # circuit breaker said no
        self.no_healthy = 0
        self.ejections = 0
        self.auth_retries = 0  # sent once more with a new credential after a 401
        self.connections_total = 0


class ListenerStats:
    __slots__ = ("requests", "latency", "connections_total", "active_connections", "rejected")

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}  # status sent to the client -> count
        self.latency = Histogram()
        self.connections_total = 0
        self.active_connections = 0
        self.rejected: dict[int, int] = {}  # malformed/over-limit requests by status


def histogram_json(h: Histogram) -> dict[str, Any]:
    return {"counts": list(h.counts), "sum": h.sum}


def histogram_samples(h: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(le, cumulative count) pairs of a histogram_json in Prometheus order, ending with +Inf."""
    total = 0
    for bound, count in zip((*BUCKETS, float("inf")), h["counts"], strict=True):
        total += count
        yield ("+Inf" if bound == float("inf") else repr(bound), float(total))


def stats_json(
    listeners: Iterable[tuple[str, ListenerStats]], clusters: Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """/stats: the counters as JSON, cluster entries already dicts (they carry endpoint state)."""
    return {
        "listeners": {
            name: {
                "requests": status_counts(s.requests),
                "connections_total": s.connections_total,
                "active_connections": s.active_connections,
                "rejected": {str(k): v for k, v in sorted(s.rejected.items())},
                "latency": histogram_json(s.latency),
            }
            for name, s in listeners
        },
        "clusters": dict(clusters),
    }


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add one worker's /stats to another's: numbers add up, mappings merge, endpoint lists merge
    by address; anything else (a name, an endpoint's availability) keeps `into`'s value."""
    for key, value in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = value
        elif isinstance(value, dict) and isinstance(mine, dict):
            merge(mine, value)
        elif isinstance(value, bool) or isinstance(mine, bool):
            continue
        elif isinstance(value, int | float) and isinstance(mine, int | float):
            into[key] = mine + value
        elif key == "counts" and isinstance(mine, list):
            into[key] = [a + b for a, b in zip(mine, value, strict=True)]
        elif key == "endpoints" and isinstance(mine, list):
            by_address = {e["address"]: e for e in mine}
            for entry in value:
                if entry["address"] in by_address:
                    merge(by_address[entry["address"]], entry)
                else:
                    mine.append(entry)
    return into
