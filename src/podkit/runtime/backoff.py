"""Restart backoff with the kubelet's timing (pure; the caller does the waiting).

First restart immediately, then 10 s doubling to a 300 s cap; a container that ran cleanly for
10 minutes starts over. `scale` shrinks every duration (tests, demos); 1.0 is the kubelet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 10.0
    cap: float = 300.0
    reset_after: float = 600.0
    scale: float = 1.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        """Seconds to wait before restarting a container that just exited after `ran_for` s."""
        if ran_for >= self.reset_after * self.scale:
            self.failures = 0
        self.failures += 1
        if self.failures == 1:
            return 0.0
        return min(self.initial * 2 ** (self.failures - 2), self.cap) * self.scale
