"""Requests served by (method, status), counted without prometheus_client (see metrics.py)."""

from __future__ import annotations

import time


class RequestCounts:
    def __init__(self) -> None:
        # (method, status) -> [count, epoch seconds the pair was first seen (the _created time)]
        self._counts: dict[tuple[str, int], list[float]] = {}

    def inc(self, method: str, status: int) -> None:
        entry = self._counts.get((method, status))
        if entry is None:
            self._counts[(method, status)] = [1, time.time()]
        else:
            entry[0] += 1

    def snapshot(self) -> dict[tuple[str, int], tuple[float, float]]:
        return {key: (entry[0], entry[1]) for key, entry in self._counts.items()}
