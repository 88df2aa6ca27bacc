"""Families -> exposition text, by prometheus_client's own writers (so the output is what its
parsers and Prometheus accept, by construction). The Accept header chooses: OpenMetrics
(`application/openmetrics-text`, ending in `# EOF`) or the Prometheus text format 0.0.4.

Imported at the first scrape: prometheus_client costs ~0.15 s to import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from podkit.images.metrics_adapter.mapping import Family


def to_metric(family: Family) -> Metric:
    # The name already carries its unit suffix (mapping.family_name), so Metric adds nothing.
    metric = Metric(family.name, family.help, family.type, family.unit)
    for labels, value in family.samples:
        metric.add_sample(family.sample_name, labels, value)
    return metric


class FamiliesCollector(Collector):
    """A collector over families made elsewhere; `source` is called at each collect()."""

    def __init__(self, source: Callable[[], Iterable[Family]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source():
            yield to_metric(family)


def render(families: Sequence[Family], accept: str = "") -> tuple[bytes, str]:
    """(body, content type) for a request with this Accept header."""
    encoder, content_type = choose_encoder(accept)
    return encoder(FamiliesCollector(lambda: families)), content_type
