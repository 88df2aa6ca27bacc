"""The auth-adapter's token cache state machine, driven with a fake clock: no I/O, no sleeping."""

from __future__ import annotations

import pytest

from podkit.images.auth_adapter.token_cache import (
    REJECTION_WINDOW,
    Action,
    CachePolicy,
    Token,
    TokenCache,
)


def cache(**policy: float | None) -> TokenCache:
    # rand() = 0: jitter takes nothing off, so delays are exact.
    return TokenCache(CachePolicy(**policy), rand=lambda: 0.0)  # type: ignore[arg-type]


def fetched(c: TokenCache, now: float, value: str = "tok", **kw: object) -> Token:
    """Run one fetch to success at `now`."""
    d = c.decide(now)
    assert d.action in (Action.FETCH, Action.USE_AND_REFRESH), d
    kw.setdefault("expires_in", 3600.0)
    return c.fetch_succeeded(now, value, **kw)  # type: ignore[arg-type]


def test_cold_cache_fetches_once_and_everyone_else_waits_then_uses_it() -> None:
    c = cache()
    assert c.decide(0.0).action is Action.FETCH
    # 199 more callers while the fetch runs: all wait for it; none starts another.
    assert {c.decide(0.001 * i).action for i in range(199)} == {Action.WAIT}
    token = c.fetch_succeeded(0.5, "abc", expires_in=3600)
    for i in range(200):
        d = c.decide(1.0 + i)
        assert d.action is Action.USE and d.token is token
    assert token.authorization == "Bearer abc"


def test_lifetime_counts_from_the_start_of_the_fetch_less_a_leeway() -> None:
    c = cache(refresh_margin=60)
    assert c.decide(100.0).action is Action.FETCH
    token = c.fetch_succeeded(130.0, "t", expires_in=3600)  # a 30 s slow answer
    assert token.obtained_at == 100.0
    assert token.expires_at == pytest.approx(100.0 + 3600 - 5)  # 5 s leeway
    assert token.refresh_at == pytest.approx(100.0 + 3600 - 60)
    assert c.decide(token.expires_at - 0.001).token is token
    assert c.decide(token.expires_at).action is not Action.USE


def test_refresh_ahead_by_margin_starts_one_background_fetch_and_keeps_serving() -> None:
    c = cache(refresh_margin=60)
    old = fetched(c, 0.0, "old")
    assert c.decide(3539.9).action is Action.USE
    d = c.decide(3540.0)
    assert d.action is Action.USE_AND_REFRESH and d.token is old
    # The refresh runs: everyone keeps the old token, nobody starts a second fetch.
    for t in (3540.1, 3541.0, 3590.0):
        d = c.decide(t)
        assert d.action is Action.USE and d.token is old
    new = c.fetch_succeeded(3541.0, "new", expires_in=3600)
    assert c.decide(3542.0).token is new


def test_refresh_fraction_and_margin_the_earlier_wins() -> None:
    c = cache(refresh_margin=60, refresh_fraction=0.5)
    token = fetched(c, 0.0, expires_in=1000)
    assert token.refresh_at == pytest.approx(500.0)
    c = cache(refresh_margin=60, refresh_fraction=0.99)
    token = fetched(c, 0.0, expires_in=1000)
    assert token.refresh_at == pytest.approx(940.0)


def test_margin_is_capped_at_half_a_short_lifetime() -> None:
    # A 30 s token with a 60 s margin would otherwise be "due" the moment it arrives.
    c = cache(refresh_margin=60)
    token = fetched(c, 0.0, expires_in=30)
    assert token.refresh_at == pytest.approx(15.0)
    assert c.decide(1.0).action is Action.USE


def test_default_lifetime_when_expires_in_is_absent() -> None:
    c = cache(default_expires_in=120, refresh_margin=10)
    token = fetched(c, 0.0, expires_in=None)
    assert not token.lifetime_given
    assert token.refresh_at == pytest.approx(110.0)
    assert token.expires_at == pytest.approx(120 - 5)


def test_expires_in_zero_is_not_a_refetch_loop() -> None:
    c = cache()
    token = fetched(c, 0.0, expires_in=0)
    assert token.expires_at >= 0.9 and token.refresh_at == 0.5
    assert c.decide(0.4).action is Action.USE


def test_failed_refresh_keeps_serving_the_valid_token_and_backs_off() -> None:
    c = cache(refresh_margin=60, backoff_initial=1, backoff_max=8)
    token = fetched(c, 0.0)
    now = 3540.0
    attempts = []
    # Hammer decide() every 10 ms for 30 s of fake time: attempts follow the backoff only.
    while now < 3570.0:
        d = c.decide(now)
        assert d.token is token
        if d.action is Action.USE_AND_REFRESH:
            attempts.append(now)
            c.fetch_failed(now, "token endpoint answered HTTP 503")
        now = round(now + 0.01, 2)
    gaps = [round(b - a, 2) for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert set(gaps[4:]) == {8.0}  # capped
    assert len(attempts) == 6  # 3540, 3541, 3543, 3547, 3555, 3563


def test_no_valid_token_and_backing_off_fails_fast_with_the_reason() -> None:
    c = cache(backoff_initial=2, backoff_max=60)
    assert c.decide(0.0).action is Action.FETCH
    assert c.decide(0.1).action is Action.WAIT
    delay = c.fetch_failed(0.2, "token endpoint refused the request: invalid_client, HTTP 401")
    assert delay == 2.0
    d = c.decide(0.3)
    assert d.action is Action.FAIL
    assert d.reason is not None and "invalid_client" in d.reason
    assert d.retry_in == pytest.approx(1.9)
    # Every caller during the backoff fails at once: none starts a request.
    assert {c.decide(0.3 + i * 0.001).action for i in range(1000)} == {Action.FAIL}
    assert c.decide(2.2).action is Action.FETCH
    assert c.fetch_failed(2.3, "again") == 4.0


def test_token_expiring_during_an_outage_turns_into_fail_with_the_last_reason() -> None:
    c = cache(refresh_margin=60, backoff_initial=30, backoff_max=30)
    token = fetched(c, 0.0, expires_in=100)  # refresh at 50, usable until 95
    assert c.decide(50.0).action is Action.USE_AND_REFRESH
    c.fetch_failed(50.0, "cannot connect to token endpoint: Connection refused")
    assert c.decide(79.0).token is token
    assert c.decide(80.0).action is Action.USE_AND_REFRESH
    c.fetch_failed(80.0, "cannot connect to token endpoint: Connection refused")
    d = c.decide(95.0)
    assert d.action is Action.FAIL and d.reason is not None and "Connection refused" in d.reason


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    c = cache(backoff_initial=1, backoff_max=60)
    c.decide(0.0)
    assert c.fetch_failed(0.0, "503", retry_after=20) == 20.0
    assert c.decide(19.9).action is Action.FAIL
    assert c.decide(20.0).action is Action.FETCH
    assert c.fetch_failed(20.0, "503", retry_after=3600) == 60.0


def test_jitter_takes_at_most_its_share_off_the_delay() -> None:
    policy = CachePolicy(backoff_initial=4, backoff_max=100, jitter=0.5)
    assert policy.backoff_delay(1, 0.0) == 4.0
    assert policy.backoff_delay(1, 0.999) == pytest.approx(2.002)
    assert policy.backoff_delay(3, 0.5) == pytest.approx(12.0)


def test_success_resets_the_backoff() -> None:
    c = cache(backoff_initial=1, backoff_max=60)
    for t in (0.0, 1.0, 3.0, 7.0):
        assert c.decide(t).action is Action.FETCH
        c.fetch_failed(t, "down")
    assert c.failures == 4
    fetched(c, 15.0)
    assert c.failures == 0 and c.last_error is None
    c.invalidate(c.token, 16.0)  # type: ignore[arg-type]
    assert c.decide(16.0).action is Action.FETCH
    assert c.fetch_failed(16.0, "down") == 1.0


def test_invalidate_drops_only_the_current_token_and_causes_one_fetch() -> None:
    c = cache()
    first = fetched(c, 0.0, "first")
    assert c.invalidate(first, 100.0)
    assert c.decide(100.0).action is Action.FETCH
    # The burst of 401s for the same token that came back meanwhile: no more fetches.
    assert not c.invalidate(first, 100.1)
    assert {c.decide(100.2).action for _ in range(50)} == {Action.WAIT}
    second = c.fetch_succeeded(100.3, "second", expires_in=3600)
    assert not c.invalidate(first, 100.4)  # stale: the new token stays
    assert c.decide(100.5).token is second


def test_invalidate_during_a_refresh_waits_for_it() -> None:
    c = cache(refresh_margin=60)
    old = fetched(c, 0.0, "old")
    assert c.decide(3540.0).action is Action.USE_AND_REFRESH
    assert c.invalidate(old, 3541.0)
    assert c.decide(3541.1).action is Action.WAIT
    new = c.fetch_succeeded(3542.0, "new", expires_in=3600)
    assert c.decide(3542.1).token is new


def test_fresh_tokens_rejected_in_a_row_back_off_instead_of_fetching_per_request() -> None:
    c = cache(backoff_initial=1, backoff_max=60)
    t1 = fetched(c, 1000.0, "t1")
    assert c.invalidate(t1, 2000.0)  # an old token rejected: fetch at once
    t2 = fetched(c, 2000.0, "t2")
    assert c.invalidate(t2, 2000.1)  # its fresh replacement too: could be a revocation sweep
    t3 = fetched(c, 2000.1, "t3")
    assert c.invalidate(t3, 2000.2)  # and the next: the API refuses what the server issues
    d = c.decide(2000.2)
    assert d.action is Action.FAIL
    assert d.reason is not None and "rejected 3 tokens" in d.reason
    assert c.decide(2001.2).action is Action.FETCH
    t4 = c.fetch_succeeded(2001.2, "t4", expires_in=3600)
    assert c.invalidate(t4, 2001.3)
    assert c.decide(2001.3 + 1.99).action is Action.FAIL  # the wait doubled
    assert c.decide(2001.3 + 2.0).action is Action.FETCH
    # A token that lives until its refresh ends the streak.
    c.fetch_succeeded(2003.3, "t5", expires_in=100)
    assert c.decide(2003.3 + 60).action is Action.USE_AND_REFRESH
    t6 = c.fetch_succeeded(2063.3, "t6", expires_in=100)
    assert c.invalidate(t6, 2063.4)
    assert c.decide(2063.4).action is Action.FETCH


def test_a_token_rejected_long_after_it_was_issued_is_replaced_at_once() -> None:
    c = cache()
    t1 = fetched(c, 0.0, "t1")
    assert c.invalidate(t1, 10.0)
    t2 = fetched(c, 10.0, "t2")
    # t2 served for longer than the rejection window: a revocation, not a broken setup.
    assert c.invalidate(t2, 10.0 + REJECTION_WINDOW + 1)
    assert c.decide(10.0 + REJECTION_WINDOW + 1).action is Action.FETCH


def test_changed_credentials_end_the_backoff() -> None:
    c = cache(backoff_initial=30, backoff_max=60)
    c.decide(0.0)
    c.fetch_failed(0.0, "token endpoint refused the request: invalid_client, HTTP 401")
    assert c.decide(1.0).action is Action.FAIL
    c.credentials_changed()
    assert c.decide(1.0).action is Action.FETCH


def test_next_wakeup_follows_refresh_time_and_backoff() -> None:
    c = cache(refresh_margin=60, backoff_initial=10, backoff_max=10)
    assert c.next_wakeup(0.0) == 0.0  # nothing yet: fetch now
    c.decide(0.0)
    assert c.next_wakeup(0.0) is None  # a fetch runs
    token = c.fetch_succeeded(0.0, "t", expires_in=600)
    assert c.next_wakeup(1.0) == token.refresh_at == 540.0
    c.decide(540.0)
    c.fetch_failed(540.0, "down")
    assert c.next_wakeup(541.0) == 550.0


def test_events_without_a_started_fetch_are_refused() -> None:
    c = cache()
    with pytest.raises(RuntimeError):
        c.fetch_succeeded(0.0, "t", expires_in=10)
    with pytest.raises(RuntimeError):
        c.fetch_failed(0.0, "x")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CachePolicy(backoff_initial=10, backoff_max=1)
    with pytest.raises(ValueError):
        CachePolicy(refresh_fraction=1.5)
    with pytest.raises(ValueError):
        CachePolicy(default_expires_in=0)


def test_token_repr_and_str_never_show_the_value() -> None:
    c = cache()
    token = fetched(c, 0.0, "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln", scope="read")
    for text in (repr(token), str(token), f"{token}", repr(c.decide(1.0))):
        assert "eyJhbGci" not in text and "c2VjcmV0" not in text
    assert "read" in repr(token)
