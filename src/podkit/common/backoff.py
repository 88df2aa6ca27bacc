"""Reconnect backoff (pure): doubling delays with a cap, reset after a success."""

from __future__ import annotations


class Backoff:
    def __init__(self, initial: float = 0.05, cap: float = 1.0, factor: float = 2.0) -> None:
        if not 0 < initial <= cap:
            raise ValueError("need 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call after a failure doubles it, to the cap."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.initial
