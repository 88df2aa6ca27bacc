"""Token metrics: plain counters on the request path, turned into Prometheus families at scrape
time (as the log-agent does: prometheus_client's own Counter locks per increment and costs
~0.15 s to import). Labels are upstream names and result kinds: never a token or a secret.

    auth_adapter_token_fetches_total{upstream, result}   result: ok, refused, server_error,
                                                         bad_answer, timeout, unreachable,
                                                         tls_error, credentials, internal_error
    auth_adapter_token_cache_hits_total{upstream}        requests served a cached token
                                                         without waiting for a token request
    auth_adapter_token_fetch_seconds_total{upstream}     time spent in token requests
    auth_adapter_token_refresh_lag_seconds{upstream}     how late the last new token came after
                                                         its predecessor's refresh time (0: on
                                                         time; large: refresh-ahead failing)
    auth_adapter_token_ready{upstream}                   1 once a first token was obtained
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric


@dataclass(eq=False)  # hashable by identity: prometheus_client registers it as a collector
class TokenMetrics:
    fetches: dict[tuple[str, str], int] = field(default_factory=dict)  # (upstream, result)
    fetch_seconds: dict[str, float] = field(default_factory=dict)  # by upstream, summed
    cache_hits: dict[str, int] = field(default_factory=dict)  # by upstream
    refresh_lag: dict[str, float] = field(default_factory=dict)  # by upstream: the last one
    # Read at scrape time: upstream -> ready.
    ready: Callable[[], dict[str, bool]] = dict

    def fetched(self, upstream: str, result: str, seconds: float) -> None:
        key = (upstream, result)
        self.fetches[key] = self.fetches.get(key, 0) + 1
        self.fetch_seconds[upstream] = self.fetch_seconds.get(upstream, 0.0) + seconds

    def hit(self, upstream: str) -> None:
        self.cache_hits[upstream] = self.cache_hits.get(upstream, 0) + 1

    def lag(self, upstream: str, seconds: float) -> None:
        self.refresh_lag[upstream] = max(0.0, seconds)

    def collect(self) -> Iterator[Metric]:
        """The families, for a prometheus_client collector (`registry.register(metrics)`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        fetches = CounterMetricFamily(
            "auth_adapter_token_fetches",
            "Token requests to the token endpoint, by upstream and result.",
            labels=["upstream", "result"],
        )
        for (upstream, result), value in sorted(self.fetches.items()):
            fetches.add_metric([upstream, result], value)
        yield fetches
        yield _by_upstream(
            CounterMetricFamily,
            "auth_adapter_token_fetch_seconds",
            "Time spent in token requests, by upstream.",
            self.fetch_seconds,
        )
        yield _by_upstream(
            CounterMetricFamily,
            "auth_adapter_token_cache_hits",
            "Requests served a cached token without waiting for a token request, by upstream.",
            self.cache_hits,
        )
        yield _by_upstream(
            GaugeMetricFamily,
            "auth_adapter_token_refresh_lag_seconds",
            "How long after its predecessor's refresh time the last new token came (0: on time).",
            self.refresh_lag,
        )
        yield _by_upstream(
            GaugeMetricFamily,
            "auth_adapter_token_ready",
            "1 once a first token was obtained for the upstream.",
            {upstream: 1.0 if ready else 0.0 for upstream, ready in self.ready().items()},
        )


def _by_upstream(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    values: Mapping[str, float],
) -> Metric:
    family = kind(name, documentation, labels=["upstream"])
    for upstream, value in sorted(values.items()):
        family.add_metric([upstream], value)
    return family
