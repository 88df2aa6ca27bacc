"""The HTTP Retry-After header (RFC 9110 10.2.3), read by the auth-adapter's token requests and
the registry client alike."""

from __future__ import annotations

import email.utils
import time


def parse_retry_after(value: str | None, now_epoch: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_epoch is None else now_epoch
    return max(0.0, when.timestamp() - now)
