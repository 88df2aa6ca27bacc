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


class StatusCounts:
    """What GET /status reports beside the access log's count of responses written: 5xx and 4xx
    among them, the same by route, and requests being handled now. Routes are the app's own
    paths, everything else is "other", so a scanner's random paths cannot grow the table."""

    def __init__(self, routes: frozenset[str]) -> None:
        self.known_routes = routes
        self.errors = 0  # 5xx: the app failed
        self.client_errors = 0  # 4xx: the request was wrong
        self.in_flight = 0
        self._routes: dict[str, list[int]] = {}  # route -> [requests, errors, client_errors]

    def route_of(self, path: str) -> str:
        return path if path in self.known_routes else "other"

    def finished(self, path: str, status: int) -> None:
        entry = self._routes.setdefault(self.route_of(path), [0, 0, 0])
        entry[0] += 1
        if status >= 500:
            self.errors += 1
            entry[1] += 1
        elif status >= 400:
            self.client_errors += 1
            entry[2] += 1

    def routes(self) -> list[dict[str, object]]:
        return [
            {"route": route, "requests": n, "errors": errors, "client_errors": client_errors}
            for route, (n, errors, client_errors) in sorted(self._routes.items())
        ]
