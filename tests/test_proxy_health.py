"""Health bookkeeping: active-check thresholds (HAProxy rise/fall), Envoy's outlier ejection and
retry budget. Time is a plain number handed in; nothing sleeps."""

from __future__ import annotations

import pytest

from podkit.proxy.health import HealthThresholds, OutlierDetector, RetryBudget

# ---------------------------------------------------------------------------------------------
# thresholds


def test_thresholds_fall_after_consecutive_failures_and_rise_after_successes() -> None:
    t = HealthThresholds(healthy_threshold=2, unhealthy_threshold=3)
    assert t.healthy is True
    assert [t.record(False), t.record(False)] == [None, None]
    assert t.record(False) is False and t.healthy is False
    assert t.record(False) is None  # no change, no news
    assert t.record(True) is None
    assert t.record(True) is True and t.healthy is True
    assert t.record(True) is None


def test_thresholds_need_consecutive_results() -> None:
    t = HealthThresholds(healthy_threshold=2, unhealthy_threshold=3)
    for ok in (False, False, True, False, False, True, False, False):
        assert t.record(ok) is None
    assert t.healthy is True
    assert t.record(False) is False
    for ok in (True, False, True, False):
        assert t.record(ok) is None
    assert t.healthy is False


def test_thresholds_can_start_unhealthy_and_flip_on_one() -> None:
    t = HealthThresholds(healthy_threshold=1, unhealthy_threshold=1, healthy=False)
    assert t.record(False) is None
    assert t.record(True) is True
    assert t.record(False) is False
    with pytest.raises(ValueError):
        HealthThresholds(healthy_threshold=0)


# ---------------------------------------------------------------------------------------------
# outlier detection

HOSTS = [f"10.0.0.{i}:80" for i in range(1, 11)]


def detector(**kw: float) -> OutlierDetector:
    d = OutlierDetector(**kw)  # type: ignore[arg-type]
    d.set_hosts(HOSTS)
    return d


def fail(d: OutlierDetector, key: str, n: int, now: float, result: str = "5xx") -> list[bool]:
    return [d.record(key, result, now) for _ in range(n)]


def test_five_consecutive_5xx_eject_for_the_base_time() -> None:
    d = detector()
    a = HOSTS[0]
    assert fail(d, a, 5, now=100.0) == [False, False, False, False, True]
    assert d.is_ejected(a, 100.0) and d.is_ejected(a, 129.999)
    assert d.ejected_count == 1 and d.total_ejections == 1
    assert d.tick(129.9) == []
    assert d.tick(130.0) == [a]
    assert not d.is_ejected(a, 130.0)
    assert d.tick(131.0) == [] and d.ejected_count == 0


def test_a_success_resets_the_count() -> None:
    d = detector()
    a = HOSTS[0]
    fail(d, a, 4, now=0.0)
    assert d.record(a, "success", 0.0) is False
    assert fail(d, a, 4, now=0.0) == [False] * 4
    assert not d.is_ejected(a, 0.0)
    assert d.record(a, "5xx", 0.0) is True


def test_connect_failures_count_as_5xx_too() -> None:
    d = detector(consecutive_5xx=5, consecutive_connect_failures=0)
    a = HOSTS[0]
    fail(d, a, 3, 0.0, "connect_failure")
    assert fail(d, a, 2, 0.0, "5xx") == [False, True]


def test_a_response_resets_the_connect_failure_count() -> None:
    d = detector(consecutive_5xx=0, consecutive_connect_failures=3)
    a = HOSTS[0]
    fail(d, a, 2, 0.0, "connect_failure")
    fail(d, a, 1, 0.0, "5xx")  # the connection worked
    assert fail(d, a, 2, 0.0, "connect_failure") == [False, False]
    assert fail(d, a, 1, 0.0, "connect_failure") == [True]


def test_a_zero_threshold_disables_that_detector() -> None:
    d = detector(consecutive_5xx=0, consecutive_connect_failures=0)
    assert not any(fail(d, HOSTS[0], 100, 0.0))
    assert not any(fail(d, HOSTS[0], 100, 0.0, "connect_failure"))
    assert d.total_ejections == 0


def test_ejection_time_grows_with_each_ejection_up_to_the_cap() -> None:
    d = detector(base_ejection_s=10.0, max_ejection_s=35.0)
    a = HOSTS[0]
    now = 0.0
    durations = []
    for _ in range(6):
        assert fail(d, a, 5, now)[-1] is True
        start = now
        while d.is_ejected(a, now):
            now += 0.5
        assert d.tick(now) == [a]
        durations.append(now - start)
    assert durations == [10.0, 20.0, 30.0, 35.0, 35.0, 35.0]
    assert d.times_ejected(a) == 4  # stops growing at the cap


def test_the_multiplier_decays_while_the_host_behaves() -> None:
    d = detector(base_ejection_s=10.0, max_ejection_s=300.0, interval_s=10.0)
    a = HOSTS[0]
    fail(d, a, 5, 0.0)
    d.tick(10.0)
    fail(d, a, 5, 10.0)
    assert d.tick(30.0) == [a] and d.times_ejected(a) == 2
    d.tick(39.9)
    assert d.times_ejected(a) == 2
    d.tick(40.0)
    assert d.times_ejected(a) == 1
    fail(d, a, 5, 41.0)  # 20 s: the multiplier went 1 -> 2
    assert d.is_ejected(a, 60.9) and d.tick(61.0) == [a]
    d.tick(81.0)  # one tick two intervals after the end takes off two
    assert d.times_ejected(a) == 0
    fail(d, a, 5, 100.0)
    assert d.is_ejected(a, 109.9) and not d.is_ejected(a, 110.0)  # the base time again


def test_max_ejection_percent_caps_ejections() -> None:
    d = detector(max_ejection_percent=20.0)  # 10 hosts: 2
    assert fail(d, HOSTS[0], 5, 0.0)[-1] is True
    assert fail(d, HOSTS[1], 5, 0.0)[-1] is True
    assert fail(d, HOSTS[2], 5, 0.0)[-1] is False
    assert d.ejected_count == 2 and d.ejections_overflow == 1
    # the count restarted: once room is free it takes a fresh run of five
    assert d.tick(30.0) == [HOSTS[0], HOSTS[1]]
    assert fail(d, HOSTS[2], 4, 30.0) == [False] * 4
    assert d.record(HOSTS[2], "5xx", 30.0) is True


def test_one_host_may_always_be_ejected() -> None:
    d = OutlierDetector(max_ejection_percent=10.0)
    d.set_hosts(["a:80", "b:80"])  # 10% of 2 hosts is less than one
    assert fail(d, "a:80", 5, 0.0)[-1] is True
    assert fail(d, "b:80", 5, 0.0)[-1] is False
    assert d.ejected_count == 1
    # an expired ejection frees the room even before tick runs
    assert fail(d, "b:80", 5, 30.0)[-1] is True
    assert d.tick(30.0) == ["a:80"]


def test_an_ejected_host_is_not_ejected_again() -> None:
    d = detector()
    a = HOSTS[0]
    fail(d, a, 5, 0.0)
    assert not any(fail(d, a, 20, 5.0))  # in-flight requests failing after the ejection
    assert d.total_ejections == 1
    assert d.is_ejected(a, 29.9) and not d.is_ejected(a, 30.0)
    assert d.tick(30.0) == [a]  # ended without tick, still reported once


def test_results_after_the_ejection_ends_count_from_zero() -> None:
    d = detector()
    a = HOSTS[0]
    fail(d, a, 5, 0.0)
    assert fail(d, a, 4, 30.0) == [False] * 4  # the first of these ended the ejection
    assert d.tick(30.0) == [a]
    assert d.record(a, "5xx", 31.0) is True
    assert d.is_ejected(a, 31.0 + 59.9) and not d.is_ejected(a, 91.0)  # second time: 60 s


def test_set_hosts_forgets_removed_hosts() -> None:
    d = detector()
    fail(d, HOSTS[0], 5, 0.0)
    fail(d, HOSTS[1], 4, 0.0)
    d.set_hosts(HOSTS[2:] + ["10.0.0.99:80"])
    assert d.ejected_count == 0 and not d.is_ejected(HOSTS[0], 1.0)
    assert d.record(HOSTS[1], "5xx", 1.0) is False  # unknown now: ignored
    assert d.tick(100.0) == []
    assert fail(d, "10.0.0.99:80", 5, 1.0)[-1] is True
    d.set_hosts(HOSTS)
    assert d.times_ejected(HOSTS[1]) == 0 and fail(d, HOSTS[1], 5, 2.0)[-1] is True


def test_unknown_result_is_an_error() -> None:
    d = detector()
    with pytest.raises(ValueError, match="unknown result 'timeout'"):
        d.record(HOSTS[0], "timeout", 0.0)
    with pytest.raises(ValueError):
        OutlierDetector(base_ejection_s=0.0)


# ---------------------------------------------------------------------------------------------
# retry budget


@pytest.mark.parametrize(
    ("active_requests", "active_retries", "allowed"),
    [
        (0, 0, True),
        (0, 2, True),
        (0, 3, False),  # min_retry_concurrency 3
        (15, 2, True),  # 20% of 15 = 3, the same as the floor
        (15, 3, False),
        (16, 3, True),  # 20% of 16 = 3.2
        (16, 4, False),
        (100, 19, True),
        (100, 20, False),
    ],
)
def test_retry_budget_defaults(active_requests: int, active_retries: int, allowed: bool) -> None:
    assert RetryBudget().allows(active_requests, active_retries) is allowed


def test_retry_budget_settings() -> None:
    b = RetryBudget(budget_percent=50.0, min_retry_concurrency=0)
    assert b.allows(10, 4) and not b.allows(10, 5)
    assert not b.allows(0, 0)
    assert not RetryBudget(budget_percent=0.0, min_retry_concurrency=0).allows(1000, 0)
    with pytest.raises(ValueError):
        RetryBudget(budget_percent=-1.0)
