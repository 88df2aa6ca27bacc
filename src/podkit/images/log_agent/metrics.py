"""The agent's counters: plain ints on the hot path, exposed to Prometheus at scrape time.

prometheus_client's own Counter takes a lock per increment and costs ~0.15 s to import; keeping
plain counters and converting them in a collector keeps both off the event path and start-up.
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
    lines_cut: dict[str, int] = field(default_factory=dict)  # over-long lines split, by source
    parse_failures: Callable[[], int] = lambda: 0

    def received(self, source: str, events: int, nbytes: int) -> None:
        self.events_in[source] = self.events_in.get(source, 0) + events
        self.bytes_in[source] = self.bytes_in.get(source, 0) + nbytes

    def cut(self, source: str, lines: int) -> None:
        self.lines_cut[source] = self.lines_cut.get(source, 0) + lines

    def sent(self, sink: str, events: int) -> None:
        self.events_out[sink] = self.events_out.get(sink, 0) + events


class _CountersCollector:
    def __init__(self, counters: Counters) -> None:
        self._c = counters

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        def by(label: str, name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            return family

        c = self._c
        yield by("source", "log_agent_events_in", "Events received, by source.", c.events_in)
        yield by("source", "log_agent_bytes_in", "Bytes received, by source.", c.bytes_in)
        yield by("sink", "log_agent_events_out", "Events written, by sink.", c.events_out)
        yield by("source", "log_agent_lines_cut", "Over-long lines split.", c.lines_cut)
        yield CounterMetricFamily(
            "log_agent_parse_failures",
            "Records the configured parser could not parse (kept as raw messages).",
            value=c.parse_failures(),
        )


def build_registry(counters: Counters) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CountersCollector(counters))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry
