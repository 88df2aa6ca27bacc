"""Payloads of item lines (pure): what lets the buffer join, split and halve HTTP requests.

A batching sink's payload is items, one a line, each line ending in a newline (sinks/base.py):
any run of whole lines is a payload of its own, and joined payloads are one.
"""

from __future__ import annotations


def count(payload: bytes) -> int:
    return payload.count(b"\n")


def split(payload: bytes, max_bytes: int, max_events: int) -> list[tuple[bytes, int]]:
    """(run, items) with at most `max_events` items and `max_bytes` bytes each (an item longer
    than that is a run of its own), in order."""
    runs: list[tuple[bytes, int]] = []
    start, end = 0, len(payload)
    while start < end:
        cut = end
        if end - start > max_bytes:  # the last line break within the limit, else the first
            cut = payload.rfind(b"\n", start, start + max_bytes) + 1
            if cut <= start:
                cut = payload.index(b"\n", start) + 1
        items = payload.count(b"\n", start, cut)
        if items > max_events:  # cut after the max_events-th line instead
            cut = start
            for _ in range(max_events):
                cut = payload.index(b"\n", cut) + 1
            items = max_events
        runs.append((payload[start:cut], items))
        start = cut
    return runs


def halves(payload: bytes) -> tuple[bytes, bytes]:
    """The payload cut at the line boundary nearest its middle byte (both halves non-empty when
    it has two items or more)."""
    middle = len(payload) // 2
    after = payload.find(b"\n", middle) + 1
    before = payload.rfind(b"\n", 0, middle) + 1
    cut = after if after and after < len(payload) else before
    if not 0 < cut < len(payload):
        cut = before if 0 < before < len(payload) else after
    return payload[:cut], payload[cut:]
