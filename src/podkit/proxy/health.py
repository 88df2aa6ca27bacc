"""Upstream health bookkeeping (pure): check thresholds, outlier ejection and the retry budget.

No I/O and no clock: time is passed in as `now` (monotonic seconds). The engine's asyncio side
runs the checks, feeds the results in, and turns the decisions into `Host.available`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["RESULTS", "HealthThresholds", "OutlierDetector", "RetryBudget"]

RESULTS = ("success", "5xx", "connect_failure")


class HealthThresholds:
    """Active checks' rise/fall (HAProxy), one per endpoint: the state flips only after
    `unhealthy_threshold` failures in a row while healthy or `healthy_threshold` successes in a
    row while unhealthy, so one lost probe does not take a host out."""

    __slots__ = ("healthy_threshold", "unhealthy_threshold", "healthy", "_run")

    def __init__(
        self, healthy_threshold: int = 2, unhealthy_threshold: int = 3, healthy: bool = True
    ) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be >= 1")
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.healthy = healthy
        self._run = 0  # consecutive results that disagree with `healthy`

    def record(self, ok: bool) -> bool | None:
        """One check result; the new `healthy` when it changes, else None."""
        if ok == self.healthy:
            self._run = 0
            return None
        self._run += 1
        if self._run < (self.healthy_threshold if ok else self.unhealthy_threshold):
            return None
        self.healthy = ok
        self._run = 0
        return ok


class _HostState:
    __slots__ = (
        "consecutive_5xx",
        "consecutive_connect",
        "times_ejected",
        "ejected",
        "until",
        "decay_at",
    )

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_connect = 0
        self.times_ejected = 0  # the ejection-time multiplier; decays while the host behaves
        self.ejected = False
        self.until = 0.0  # when the ejection ends
        self.decay_at = 0.0


class OutlierDetector:
    """Envoy's passive outlier detection for one cluster, keyed by host key.

    - consecutive_5xx counts 5xx responses and connect failures (a connect failure is what Envoy
      reports as a 503); consecutive_connect_failures counts connect failures only (Envoy's
      consecutive_local_origin_failure). A success resets both; a 5xx resets only the connect
      counter, because getting a response proves the connection works. A threshold of 0 disables
      that detector. Reaching a threshold tries an ejection and restarts that count either way,
      as Envoy does, so a host refused by max_ejection_percent needs a fresh run of failures.
    - An ejection lasts base_ejection_s * times_ejected (this one included), capped at
      max_ejection_s. The multiplier stops growing at the cap and drops by one per interval_s
      (Envoy's interval) that the host spends un-ejected, so a host that failed long ago starts
      again from the base time.
    - At most max_ejection_percent of the hosts are ejected at once, but one host always may be:
      a two-host cluster can still eject its broken host (Envoy does the same).
    - Results for hosts not in `set_hosts` (a response racing a removal) and for ejected hosts
      (requests in flight when it was ejected) are ignored.

    An ejection ends as soon as its time is up, whichever method sees it first; `tick` reports
    the hosts whose ejection ended since the last `tick` and should run about once per second.
    """

    __slots__ = (
        "consecutive_5xx",
        "consecutive_connect_failures",
        "base_ejection_s",
        "max_ejection_s",
        "max_ejection_percent",
        "interval_s",
        "total_ejections",
        "ejections_overflow",
        "_hosts",
        "_ejected",
        "_ended",
        "_max_multiplier",
    )

    def __init__(
        self,
        consecutive_5xx: int = 5,
        consecutive_connect_failures: int = 5,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejection_percent: float = 10.0,
        interval_s: float = 10.0,
    ) -> None:
        if consecutive_5xx < 0 or consecutive_connect_failures < 0:
            raise ValueError("outlier thresholds must be >= 0 (0 disables)")
        if not 0 < base_ejection_s <= max_ejection_s:
            raise ValueError("need 0 < base_ejection_s <= max_ejection_s")
        if not 0 <= max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be within 0..100")
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.consecutive_5xx = consecutive_5xx
        self.consecutive_connect_failures = consecutive_connect_failures
        self.base_ejection_s = base_ejection_s
        self.max_ejection_s = max_ejection_s
        self.max_ejection_percent = max_ejection_percent
        self.interval_s = interval_s
        self.total_ejections = 0  # metric: ejections ever made
        self.ejections_overflow = 0  # metric: ejections refused by max_ejection_percent
        self._hosts: dict[str, _HostState] = {}
        self._ejected: dict[str, _HostState] = {}
        self._ended: list[str] = []
        self._max_multiplier = math.ceil(max_ejection_s / base_ejection_s)

    @property
    def ejected_count(self) -> int:
        """Metric: hosts ejected now (as of the last call that was given the time)."""
        return len(self._ejected)

    def times_ejected(self, key: str) -> int:
        """The current ejection-time multiplier of a host (0 for an unknown host)."""
        state = self._hosts.get(key)
        return state.times_ejected if state is not None else 0

    def set_hosts(self, keys: Iterable[str]) -> None:
        """The cluster's membership: new hosts start clean, removed ones are forgotten."""
        wanted = dict.fromkeys(keys)
        self._hosts = {k: self._hosts.get(k) or _HostState() for k in wanted}
        self._ejected = {k: s for k, s in self._ejected.items() if k in wanted}
        self._ended = [k for k in self._ended if k in wanted]

    def is_ejected(self, key: str, now: float) -> bool:
        state = self._ejected.get(key)
        if state is None:
            return False
        if now < state.until:
            return True
        self._uneject(key, state, now)
        return False

    def record(self, key: str, result: str, now: float) -> bool:
        """One request's outcome for a host; True when this call ejected it."""
        state = self._hosts.get(key)
        if state is None:
            return False
        if state.ejected:
            if now < state.until:
                return False
            self._uneject(key, state, now)
        if result == "success":
            state.consecutive_5xx = state.consecutive_connect = 0
            return False
        if result == "5xx":
            state.consecutive_connect = 0
        elif result != "connect_failure":
            raise ValueError(f"unknown result {result!r} (one of {', '.join(RESULTS)})")
        else:
            state.consecutive_connect += 1
            if state.consecutive_connect == self.consecutive_connect_failures:
                state.consecutive_connect = 0
                if self._eject(key, state, now):
                    return True
        state.consecutive_5xx += 1
        if state.consecutive_5xx == self.consecutive_5xx:
            state.consecutive_5xx = 0
            return self._eject(key, state, now)
        return False

    def tick(self, now: float) -> list[str]:
        """End the ejections that are due; the keys whose ejection ended since the last tick."""
        for key, state in list(self._ejected.items()):
            if now >= state.until:
                self._uneject(key, state, now)
        interval = self.interval_s
        for state in self._hosts.values():
            while state.times_ejected and not state.ejected and now >= state.decay_at:
                state.times_ejected -= 1
                state.decay_at += interval
        ended, self._ended = self._ended, []
        return ended

    def _eject(self, key: str, state: _HostState, now: float) -> bool:
        for other, other_state in list(self._ejected.items()):
            if now >= other_state.until:
                self._uneject(other, other_state, now)
        ejected = len(self._ejected)
        if ejected and 100.0 * (ejected + 1) / len(self._hosts) > self.max_ejection_percent:
            self.ejections_overflow += 1
            return False
        state.times_ejected = min(state.times_ejected + 1, self._max_multiplier)
        state.ejected = True
        state.until = now + min(self.base_ejection_s * state.times_ejected, self.max_ejection_s)
        state.consecutive_5xx = state.consecutive_connect = 0
        self._ejected[key] = state
        self.total_ejections += 1
        return True

    def _uneject(self, key: str, state: _HostState, now: float) -> None:
        state.ejected = False
        state.consecutive_5xx = state.consecutive_connect = 0
        state.decay_at = now + self.interval_s
        del self._ejected[key]
        self._ended.append(key)


class RetryBudget:
    """Envoy's retry budget: retries in flight may be at most budget_percent of the requests in
    flight, but never fewer than min_retry_concurrency, so a struggling cluster is not buried
    under retries while a quiet one can still retry."""

    __slots__ = ("budget_percent", "min_retry_concurrency")

    def __init__(self, budget_percent: float = 20.0, min_retry_concurrency: int = 3) -> None:
        if budget_percent < 0 or min_retry_concurrency < 0:
            raise ValueError("budget_percent and min_retry_concurrency must be >= 0")
        self.budget_percent = budget_percent
        self.min_retry_concurrency = min_retry_concurrency

    def allows(self, active_requests: int, active_retries: int) -> bool:
        """May one more retry start now?"""
        limit = max(self.min_retry_concurrency, active_requests * self.budget_percent / 100.0)
        return active_retries < limit
