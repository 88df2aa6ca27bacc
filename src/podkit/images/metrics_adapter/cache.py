"""What the page shows, decided from the scrape results so far. Pure: times are passed in.

Policy (README.md, "Timeouts, caching and failures"):
- A scrape's result, good or bad, is reused for `cache_ttl` seconds: however many scrapers ask,
  the app is asked at most once per `cache_ttl`.
- A failed scrape (timeout, refused, non-2xx, a body that does not parse, too large) shows
  `metrics_adapter_up 0` and, for `serve_stale_for` seconds after the last good scrape, that
  scrape's values (with `metrics_adapter_data_age_seconds`); after that, none of the app's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podkit.images.metrics_adapter.mapping import RESERVED_PREFIX, Family, Problem

# Every result a scrape can have; all are exported from the start (at 0), as Prometheus advises.
RESULTS = ("ok", "timeout", "connect_error", "http_error", "bad_body", "too_large")


@dataclass(frozen=True)
class Outcome:
    result: str  # one of RESULTS
    duration: float  # seconds
    finished: float  # monotonic seconds
    wall: float  # epoch seconds, for the last-success timestamp
    error: str = ""
    families: tuple[Family, ...] = ()  # the app's metrics, for "ok"
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class View:
    """The page at one moment."""

    up: bool
    last: Outcome | None
    shown: Outcome | None  # whose values are on the page (the last good one), or None
    age: float | None  # seconds since `shown` was scraped
    counts: dict[str, int] = field(default_factory=dict)


class ScrapeCache:
    def __init__(self, *, ttl: float, serve_stale_for: float) -> None:
        self.ttl = ttl
        self.serve_stale_for = serve_stale_for
        self.last: Outcome | None = None
        self.last_ok: Outcome | None = None
        self.counts = dict.fromkeys(RESULTS, 0)

    def fresh(self, now: float) -> bool:
        """Whether the last result may still be served without asking the app."""
        return self.last is not None and now - self.last.finished < self.ttl

    def record(self, outcome: Outcome) -> None:
        self.last = outcome
        self.counts[outcome.result] += 1
        if outcome.result == "ok":
            self.last_ok = outcome

    def view(self, now: float) -> View:
        last = self.last
        up = last is not None and last.result == "ok"
        shown = age_shown = None
        if self.last_ok is not None:
            age = now - self.last_ok.finished
            if up or age <= self.serve_stale_for:
                shown, age_shown = self.last_ok, max(0.0, age)
        return View(up, last, shown, age_shown, dict(self.counts))


def self_families(view: View) -> list[Family]:
    """The adapter's own metrics: on the page next to the app's, and on the admin /metrics."""
    p = RESERVED_PREFIX
    up = Family(f"{p}up", "gauge", "1 when the last scrape of the app succeeded, else 0.")
    up.samples.append(({}, 1.0 if view.up else 0.0))
    out = [up]
    if view.last is not None:
        duration = Family(
            f"{p}scrape_duration_seconds", "gauge", "How long the last scrape of the app took."
        )
        duration.samples.append(({}, view.last.duration))
        out.append(duration)
    if view.age is not None:
        age = Family(
            f"{p}data_age_seconds",
            "gauge",
            "Age of the app's values on this page (more than 0 when cached or stale).",
        )
        age.samples.append(({}, view.age))
        out.append(age)
    if view.shown is not None:
        when = Family(
            f"{p}last_success_timestamp_seconds",
            "gauge",
            "When the values on this page were scraped (Unix time).",
        )
        when.samples.append(({}, view.shown.wall))
        out.append(when)
    scrapes = Family(f"{p}scrapes", "counter", "Requests to the app's status, by result.")
    for result, count in view.counts.items():
        scrapes.samples.append(({"result": result}, float(count)))
    out.append(scrapes)
    if view.shown is not None and view.shown.problems:
        by_metric: dict[str, int] = {}
        for problem in view.shown.problems:
            by_metric[problem.metric] = by_metric.get(problem.metric, 0) + 1
        problems = Family(
            f"{p}mapping_problems",
            "gauge",
            "Series of a configured metric that could not be read from the app's status "
            "(missing key, not a number); the adapter's log says why.",
        )
        for metric, count in by_metric.items():
            problems.samples.append(({"metric": metric}, float(count)))
        out.append(problems)
    return out


def page_families(view: View) -> list[Family]:
    """The whole page: the app's metrics (when there are any to show), then the adapter's."""
    app = list(view.shown.families) if view.shown is not None else []
    return app + self_families(view)
