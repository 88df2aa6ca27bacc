"""At most one log line a minute for a condition that lasts (a full disk, a blocked sink): the
first occurrence is reported at once, repeats once per interval with how many were held back."""

from __future__ import annotations

import time


class Throttle:
    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.since = 0.0  # when the condition began (monotonic), 0 while it is not on
        self._next = 0.0
        self._held = 0

    def due(self) -> int | None:
        """Called at each occurrence: the number held back since the last report when one is
        due now, else None."""
        now = time.monotonic()
        if not self.since:
            self.since = now
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self.interval
        held, self._held = self._held, 0
        return held

    def clear(self) -> float:
        """The condition ended: the seconds it lasted; the next occurrence reports at once."""
        lasted = time.monotonic() - self.since if self.since else 0.0
        self.since, self._next, self._held = 0.0, 0.0, 0
        return lasted
