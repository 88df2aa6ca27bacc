"""Timestamps in the one format every podkit image writes: RFC 3339, UTC, milliseconds."""

from __future__ import annotations

import time

_cached_second = -1
_cached_prefix = ""


def rfc3339(t: float | None = None) -> str:
    """`2026-11-25T22:15:08.123Z` for epoch seconds `t` (now when omitted)."""
    global _cached_second, _cached_prefix
    if t is None:
        t = time.time()
    second = int(t)
    # strftime is the slow part and hot paths stamp thousands of events per second.
    if second != _cached_second:
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _cached_second = second
    return f"{_cached_prefix}.{int((t - second) * 1000):03d}Z"
