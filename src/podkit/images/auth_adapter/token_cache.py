"""The token cache of one OAuth2 client, as a state machine without I/O or clock.

The shell asks `decide(now)` what a request should do and reports how each fetch ended; every
time is a number the caller passes (time.monotonic() in the image, a fake clock in the tests).

    decide(now) -> USE              a valid token; nothing to do
                   USE_AND_REFRESH  a valid token, but its refresh time has come: start a fetch
                                    in the background (the decision itself marks it started)
                   FETCH            no valid token: start a fetch (marked started) and wait for it
                   WAIT             no valid token, a fetch is running: wait for its end
                   FAIL             no valid token and the endpoint failed recently: fail now
                                    with the last failure's reason (no request of its own)

    fetch_succeeded(now, ...) / fetch_failed(now, reason, ...)   how a started fetch ended
    invalidate(token, now)     the API said the token is invalid: drop it (if still the current)

Single flight: at most one fetch runs at a time, whatever the number of callers. Backoff: after
a failure the next fetch waits `min(initial * 2**(n-1), max)` (times a jitter factor in
[1 - jitter, 1]) after the n-th failure in a row, or the server's Retry-After if longer (up to
max); a still-valid token keeps being used meanwhile.

Token lifetime: counted from when the fetch STARTED (a slow answer cannot make a token look
fresher than it is), less a small leeway so a token is not sent in its last seconds. The refresh
time is the earlier of `lifetime - margin` (the margin capped at half the lifetime, so a short
token is not refreshed in a loop) and `fraction * lifetime` when a fraction is set.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

# A token is not used in its last seconds: it could expire on the way to the API.
EXPIRY_LEEWAY = 5.0
EXPIRY_LEEWAY_FRACTION = 0.1  # ...but never more than this share of a short lifetime
MIN_LIFETIME = 1.0  # an expires_in of 0 would make every request fetch
# Tokens rejected (invalidate) within this many seconds of being obtained, each right after its
# predecessor was also rejected, mean the API refuses what the server issues (wrong audience,
# clock, key): from the REJECTIONS_BEFORE_BACKOFF-th such token on, fetches back off instead of
# following every request. Two in a row can happen legitimately (a revocation sweep).
REJECTION_WINDOW = 30.0
REJECTIONS_BEFORE_BACKOFF = 3


@dataclass(frozen=True)
class CachePolicy:
    refresh_margin: float = 60.0
    refresh_fraction: float | None = None
    default_expires_in: float = 300.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.refresh_margin < 0:
            raise ValueError("refresh_margin must be >= 0")
        if self.refresh_fraction is not None and not 0 < self.refresh_fraction <= 1:
            raise ValueError("refresh_fraction must be in (0, 1]")
        if self.default_expires_in <= 0:
            raise ValueError("default_expires_in must be > 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def backoff_delay(self, failures: int, rand: float) -> float:
        """The wait after the `failures`-th failure in a row (>= 1); `rand` in [0, 1)."""
        base = min(self.backoff_initial * 2 ** min(failures - 1, 60), self.backoff_max)
        return base * (1 - self.jitter * rand)


@dataclass(frozen=True, eq=False, repr=False)
class Token:
    """An access token and its schedule (times on the caller's clock). Compared by identity:
    `invalidate` drops a token only if it is still the cached one."""

    access_token: str
    token_type: str
    obtained_at: float
    expires_at: float
    refresh_at: float
    scope: str | None
    lifetime_given: bool  # False: the server gave no expires_in, default_expires_in applied

    @property
    def authorization(self) -> str:
        """The Authorization header value: `Bearer <token>`."""
        return f"{self.token_type} {self.access_token}"

    def __repr__(self) -> str:
        life = self.expires_at - self.obtained_at
        given = "" if self.lifetime_given else ", default lifetime"
        return f"Token({self.token_type}, usable {life:.0f}s{given}, scope={self.scope!r})"

    __str__ = __repr__


class Action(enum.Enum):
    USE = "use"
    USE_AND_REFRESH = "use_and_refresh"
    FETCH = "fetch"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    token: Token | None = None
    reason: str | None = None  # FAIL: why there is no token
    retry_in: float | None = None  # FAIL: seconds until the next fetch may start


class TokenCache:
    def __init__(
        self, policy: CachePolicy | None = None, rand: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy or CachePolicy()
        self._rand = rand
        self._token: Token | None = None
        self._fetching = False
        self._fetch_started_at = 0.0
        self._not_before = float("-inf")  # no fetch starts before this (backoff)
        self._failures = 0  # fetch failures in a row
        self._last_error: str | None = None
        self._rejections = 0  # tokens rejected by the API in a row, each soon after issue
        self._dropped = False  # the last cached token went away by invalidate()
        self._replaces_rejected = False  # the cached token came in place of a rejected one

    # -- queries ------------------------------------------------------------------------------

    @property
    def token(self) -> Token | None:
        """The cached token, valid or not."""
        return self._token

    @property
    def fetching(self) -> bool:
        return self._fetching

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def valid_token(self, now: float) -> Token | None:
        t = self._token
        return t if t is not None and now < t.expires_at else None

    def next_wakeup(self, now: float) -> float | None:
        """When a background refresher should call decide() next: the cached token's refresh
        time or the end of the backoff, whichever is later; None while a fetch runs."""
        if self._fetching:
            return None
        t = self.valid_token(now)
        if t is not None:
            return max(t.refresh_at, self._not_before)
        return max(now, self._not_before)

    # -- the decision -------------------------------------------------------------------------

    def decide(self, now: float) -> Decision:
        t = self.valid_token(now)
        backing_off = now < self._not_before
        if t is not None:
            if now >= t.refresh_at and not self._fetching and not backing_off:
                self._start(now)
                return Decision(Action.USE_AND_REFRESH, t)
            return Decision(Action.USE, t)
        if self._fetching:
            return Decision(Action.WAIT)
        if backing_off:
            return Decision(
                Action.FAIL,
                reason=self._last_error or "no token yet",
                retry_in=self._not_before - now,
            )
        self._start(now)
        return Decision(Action.FETCH)

    def _start(self, now: float) -> None:
        self._fetching = True
        self._fetch_started_at = now

    # -- events -------------------------------------------------------------------------------

    def fetch_succeeded(
        self,
        now: float,
        access_token: str,
        *,
        expires_in: float | None,
        token_type: str = "Bearer",
        scope: str | None = None,
    ) -> Token:
        """The started fetch returned a token: it becomes the cached one."""
        if not self._fetching:
            raise RuntimeError("fetch_succeeded without a fetch started")
        p = self.policy
        start = self._fetch_started_at
        lifetime = max(expires_in if expires_in is not None else p.default_expires_in, 0.0)
        lifetime = max(lifetime, MIN_LIFETIME)
        usable = lifetime - min(EXPIRY_LEEWAY, lifetime * EXPIRY_LEEWAY_FRACTION)
        refresh_in = lifetime - min(p.refresh_margin, lifetime / 2)
        if p.refresh_fraction is not None:
            refresh_in = min(refresh_in, lifetime * p.refresh_fraction)
        token = Token(
            access_token=access_token,
            token_type=token_type,
            obtained_at=start,
            expires_at=start + usable,
            refresh_at=start + min(refresh_in, usable),
            scope=scope,
            lifetime_given=expires_in is not None,
        )
        if not self._dropped:
            self._rejections = 0  # the previous token lived until it was replaced
        self._replaces_rejected = self._dropped
        self._dropped = False
        self._token = token
        self._fetching = False
        self._failures = 0
        self._last_error = None
        self._not_before = float("-inf")
        return token

    def fetch_failed(self, now: float, reason: str, retry_after: float | None = None) -> float:
        """The started fetch failed; returns the seconds until the next fetch may start."""
        if not self._fetching:
            raise RuntimeError("fetch_failed without a fetch started")
        self._fetching = False
        self._failures += 1
        self._last_error = reason
        delay = self.policy.backoff_delay(self._failures, self._rand())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.backoff_max))
        self._not_before = now + delay
        return delay

    def invalidate(self, token: Token, now: float) -> bool:
        """The API rejected `token` (401 invalid_token). If it is still the cached token it is
        dropped, so the next decide() fetches anew; returns whether it was dropped. A token that
        was already replaced is ignored: a burst of 401s for one token causes one fetch."""
        if token is not self._token:
            return False
        self._token = None
        fresh = now - token.obtained_at < REJECTION_WINDOW
        self._rejections = self._rejections + 1 if (fresh and self._replaces_rejected) else 1
        self._dropped = True
        if self._rejections >= REJECTIONS_BEFORE_BACKOFF and not self._fetching:
            self._last_error = (
                f"the API rejected {self._rejections} tokens in a row as invalid right after "
                "they were issued"
            )
            nth = self._rejections - REJECTIONS_BEFORE_BACKOFF + 1
            delay = self.policy.backoff_delay(nth, self._rand())
            self._not_before = max(self._not_before, now + delay)
        return True

    def credentials_changed(self) -> None:
        """A secret, key or token file changed: the next fetch need not wait out the backoff
        (the failure may have been the old credentials)."""
        self._not_before = float("-inf")
