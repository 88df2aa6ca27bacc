"""A coarse clock for timeouts: read as an attribute on the hot path (no system call), moved on by
the proxy's ticker every TICK seconds, so a timeout fires up to TICK late (as in nginx)."""

from __future__ import annotations

import time

TICK = 0.1


class Clock:
    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = time.monotonic()

    def update(self) -> float:
        self.now = time.monotonic()
        return self.now
