"""Which part of a file is safely delivered (pure).

Batches leave in file order but sinks acknowledge them in any order. A file's committed offset
is the end of the longest prefix of batches that are all done: a crash then re-reads only what
was in flight (duplicates, never loss), and a batch acknowledged early does not commit the
batches before it that are still on their way.
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    __slots__ = ("committed", "_base", "_ends", "_done")

    def __init__(self, committed: int) -> None:
        self.committed = committed
        self._base = 0  # sequence number of _ends[0]
        self._ends: deque[int] = deque()  # resume offset after each batch in flight, in order
        self._done: deque[bool] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._ends)

    def add(self, end: int) -> int:
        """A batch after which reading would resume at `end`; returns its sequence number."""
        self._ends.append(end)
        self._done.append(False)
        return self._base + len(self._ends) - 1

    def done(self, seq: int) -> bool:
        """Batch `seq` is safe. True when that moved the committed offset."""
        i = seq - self._base
        if i < 0 or i >= len(self._done) or self._done[i]:
            return False  # unknown or repeated: ignore
        self._done[i] = True
        moved = False
        while self._done and self._done[0]:
            self._done.popleft()
            end = self._ends.popleft()
            self._base += 1
            if end != self.committed:
                self.committed, moved = end, True
        return moved

    def advance(self, end: int) -> bool:
        """Progress with nothing to deliver (blank lines, a held line): done as soon as it is
        reached in order. True when the committed offset moved."""
        return self.done(self.add(end))
