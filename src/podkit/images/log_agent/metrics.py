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
    # by (sink id, "first" | "replay"): a replay is sent again after a restart (recovered from
    # the disk buffer, or read again from a file past its committed offset): maybe a duplicate
    events_out: dict[tuple[str, str], int] = field(default_factory=dict)
    bytes_out: dict[str, int] = field(default_factory=dict)  # by sink id
    retries: dict[str, int] = field(default_factory=dict)  # by sink id
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (component, reason)
    lines_cut: dict[str, int] = field(default_factory=dict)  # over-long lines split, by source
    empty_lines: dict[str, int] = field(default_factory=dict)  # dropped, by source
    invalid_utf8: dict[str, int] = field(default_factory=dict)  # lines decoded with U+FFFD
    last_delivery: dict[str, float] = field(default_factory=dict)  # by sink: epoch seconds
    # disk buffers no configured sink owns: (events, payload bytes), by buffer name
    orphaned: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Read at scrape time from the components that own the numbers.
    parse_failures: Callable[[], int] = lambda: 0
    time_failures: Callable[[], int] = lambda: 0
    buffers: Callable[[], dict[str, tuple[int, int, int]]] = dict  # sink: (mem B, disk B, events)
    file_lag: Callable[[], dict[tuple[str, str], int]] = dict  # (source, path): bytes
    # (sink, why): its input waits (or is dropped), or its receiver refuses its requests
    blocked: Callable[[], list[tuple[str, str]]] = list

    def received(self, source: str, events: int, nbytes: int) -> None:
        self.events_in[source] = self.events_in.get(source, 0) + events
        self.bytes_in[source] = self.bytes_in.get(source, 0) + nbytes

    def cut(self, source: str, lines: int) -> None:
        self.lines_cut[source] = self.lines_cut.get(source, 0) + lines

    def lines(self, source: str, counts: tuple[int, int, int]) -> None:
        """A reader's (cut, empty, invalid) counts (lines.LineCounts.take)."""
        cut, empty, invalid = counts
        for table, n in ((self.lines_cut, cut), (self.empty_lines, empty)):
            if n:
                table[source] = table.get(source, 0) + n
        if invalid:
            self.invalid_utf8[source] = self.invalid_utf8.get(source, 0) + invalid

    def sent(self, sink: str, events: int, nbytes: int, when: float, replay: bool = False) -> None:
        key = (sink, "replay" if replay else "first")
        self.events_out[key] = self.events_out.get(key, 0) + events
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
        out = CounterMetricFamily(
            "log_agent_events_out",
            "Events delivered, by sink; delivery=replay: sent again after a restart (from the "
            "disk buffer, or read again from a file), maybe a duplicate.",
            labels=["sink", "delivery"],
        )
        for (sink, delivery), value in sorted(c.events_out.items()):
            out.add_metric([sink, delivery], value)
        yield out
        yield by("sink", "log_agent_bytes_out", "Payload bytes delivered, by sink.", c.bytes_out)
        yield by("sink", "log_agent_retries", "Failed sends retried, by sink.", c.retries)
        yield by("source", "log_agent_lines_cut", "Over-long lines split.", c.lines_cut)
        yield by(
            "source",
            "log_agent_empty_lines",
            "Empty lines dropped (empty_lines: keep delivers them).",
            c.empty_lines,
        )
        yield by(
            "source",
            "log_agent_invalid_utf8_lines",
            "Lines with invalid UTF-8, delivered with U+FFFD in its place.",
            c.invalid_utf8,
        )
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
            "log_agent_buffer_disk_bytes",
            "Bytes the disk buffer's files take (compressed payloads, and delivered records "
            "of segments not yet deleted).",
            labels=["sink"],
        )
        events = GaugeMetricFamily(
            "log_agent_buffer_events", "Events queued, not yet delivered.", labels=["sink"]
        )
        for sink, (m, d, e) in sorted(c.buffers().items()):
            mem.add_metric([sink], m)
            disk.add_metric([sink], d)
            events.add_metric([sink], e)
        yield from (mem, disk, events)
        blocked = GaugeMetricFamily(
            "log_agent_sink_blocked",
            "1 while a sink's input waits (its buffer full, its disk not writable) or, for "
            "input that cannot wait, is dropped, or while its receiver refuses its requests "
            "(HTTP 401...); the reason says which.",
            labels=["sink", "reason"],
        )
        for sink, reason in sorted(c.blocked()):
            blocked.add_metric([sink, reason], 1)
        yield blocked
        orphan_events = GaugeMetricFamily(
            "log_agent_orphaned_buffer_events",
            "Events kept in disk buffers no configured sink owns (renamed or removed sinks).",
            labels=["buffer"],
        )
        orphan_bytes = GaugeMetricFamily(
            "log_agent_orphaned_buffer_bytes",
            "Payload bytes kept in disk buffers no configured sink owns.",
            labels=["buffer"],
        )
        for name, (n, b) in sorted(c.orphaned.items()):
            orphan_events.add_metric([name], n)
            orphan_bytes.add_metric([name], b)
        yield from (orphan_events, orphan_bytes)
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
