"""The agent's counters: plain ints on the hot path, exposed to Prometheus at scrape time.

prometheus_client's own Counter takes a lock per increment and costs ~0.15 s to import; keeping
plain counters and converting them in a collector keeps both off the event path and start-up.
Gauges (buffer fill, file lag) are read from the components when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric


@dataclass
class Counters:
    events_in: dict[str, int] = field(default_factory=dict)  # by source id
    bytes_in: dict[str, int] = field(default_factory=dict)  # by source id
    events_out: dict[str, int] = field(default_factory=dict)  # by sink id
    bytes_out: dict[str, int] = field(default_factory=dict)  # by sink id
    retries: dict[str, int] = field(default_factory=dict)  # by sink id
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (component, reason)
    lines_cut: dict[str, int] = field(default_factory=dict)  # over-long lines split, by source
    last_delivery: dict[str, float] = field(default_factory=dict)  # by sink: epoch seconds
    # Read at scrape time from the components that own the numbers.
    parse_failures: Callable[[], int] = lambda: 0
    time_failures: Callable[[], int] = lambda: 0
    buffers: Callable[[], dict[str, tuple[int, int, int]]] = dict  # sink: (mem B, disk B, events)
    file_lag: Callable[[], dict[tuple[str, str], int]] = dict  # (source, path): bytes

    def received(self, source: str, events: int, nbytes: int) -> None:
        self.events_in[source] = self.events_in.get(source, 0) + events
        self.bytes_in[source] = self.bytes_in.get(source, 0) + nbytes

    def cut(self, source: str, lines: int) -> None:
        self.lines_cut[source] = self.lines_cut.get(source, 0) + lines

    def sent(self, sink: str, events: int, nbytes: int, when: float) -> None:
        self.events_out[sink] = self.events_out.get(sink, 0) + events
        self.bytes_out[sink] = self.bytes_out.get(sink, 0) + nbytes
        self.last_delivery[sink] = when

    def retried(self, sink: str) -> None:
        self.retries[sink] = self.retries.get(sink, 0) + 1

    def drop(self, component: str, reason: str, events: int) -> None:
        if events:
            key = (component, reason)
            self.dropped[key] = self.dropped.get(key, 0) + events


class _CountersCollector:
    def __init__(self, counters: Counters) -> None:
        self._c = counters

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def by(label: str, name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            return family

        c = self._c
        yield by("source", "log_agent_events_in", "Events received, by source.", c.events_in)
        yield by("source", "log_agent_bytes_in", "Bytes received, by source.", c.bytes_in)
        yield by("sink", "log_agent_events_out", "Events delivered, by sink.", c.events_out)
        yield by("sink", "log_agent_bytes_out", "Payload bytes delivered, by sink.", c.bytes_out)
        yield by("sink", "log_agent_retries", "Failed sends retried, by sink.", c.retries)
        yield by("source", "log_agent_lines_cut", "Over-long lines split.", c.lines_cut)
        dropped = CounterMetricFamily(
            "log_agent_events_dropped",
            "Events dropped, by component and reason (buffer_full, rejected, "
            "retries_exhausted, no_route, http_<status>...).",
            labels=["component", "reason"],
        )
        for (component, reason), value in sorted(c.dropped.items()):
            dropped.add_metric([component, reason], value)
        yield dropped
        yield CounterMetricFamily(
            "log_agent_parse_failures",
            "Records the configured parser could not parse (kept as raw messages).",
            value=c.parse_failures(),
        )
        yield CounterMetricFamily(
            "log_agent_time_parse_failures",
            "Events whose own timestamp could not be parsed (the receive time is kept).",
            value=c.time_failures(),
        )
        last = GaugeMetricFamily(
            "log_agent_last_delivery_timestamp_seconds",
            "When each sink last delivered events (Unix time).",
            labels=["sink"],
        )
        for sink, when in sorted(c.last_delivery.items()):
            last.add_metric([sink], when)
        yield last
        mem = GaugeMetricFamily(
            "log_agent_buffer_memory_bytes", "Payload bytes queued in memory.", labels=["sink"]
        )
        disk = GaugeMetricFamily(
            "log_agent_buffer_disk_bytes", "Payload bytes queued on disk.", labels=["sink"]
        )
        events = GaugeMetricFamily(
            "log_agent_buffer_events", "Events queued, not yet delivered.", labels=["sink"]
        )
        for sink, (m, d, e) in sorted(c.buffers().items()):
            mem.add_metric([sink], m)
            disk.add_metric([sink], d)
            events.add_metric([sink], e)
        yield from (mem, disk, events)
        lag = GaugeMetricFamily(
            "log_agent_file_lag_bytes",
            "Bytes of each followed file not yet committed (delivered or safely buffered).",
            labels=["source", "path"],
        )
        for (source, path), value in sorted(c.file_lag().items()):
            lag.add_metric([source, path], value)
        yield lag


def build_registry(counters: Counters) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CountersCollector(counters))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry
