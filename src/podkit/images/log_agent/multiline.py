"""Joining multi-line messages (stack traces) into one event (pure; time is passed in).

A line matching `start` begins a new event; any other line is appended to the event being
held, with "\\n". The held event is delivered when the next one starts, when it reaches
`max_lines` or `max_bytes`, or `flush_timeout` seconds after its last line (no next line came).
Events are assembled per stream: a CRI file interleaves stdout and stderr records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from podkit.images.log_agent.lines import Line


@dataclass(slots=True)
class _Held:
    offset: int
    time: str
    parts: list[str]
    size: int
    last: float  # monotonic time of the last line appended


class Multiline:
    __slots__ = ("_start", "_held", "max_lines", "max_bytes", "flush_timeout")

    def __init__(
        self, start: re.Pattern[str], *, max_lines: int, max_bytes: int, flush_timeout: float
    ) -> None:
        self._start = start
        self._held: dict[str | None, _Held] = {}
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.flush_timeout = flush_timeout

    def held_start(self) -> int | None:
        return min((h.offset for h in self._held.values()), default=None)

    def deadline(self) -> float | None:
        """When the oldest held event is due (monotonic), None when nothing is held."""
        last = min((h.last for h in self._held.values()), default=None)
        return None if last is None else last + self.flush_timeout

    def feed(self, lines: list[Line], now: float) -> list[Line]:
        out: list[Line] = []
        held = self._held
        search = self._start.search
        for offset, time, stream, text in lines:
            h = held.get(stream)
            if h is not None:
                fits = h.size + 1 + len(text) <= self.max_bytes
                if fits and search(text) is None:
                    h.parts.append(text)
                    h.size += 1 + len(text)
                    h.last = now
                    if len(h.parts) >= self.max_lines or h.size >= self.max_bytes:
                        out.append(_line(held.pop(stream), stream))
                    continue
                out.append(_line(held.pop(stream), stream))
            # A line that does not start an event, with none held, starts one anyway: what it
            # continues was delivered before (timeout, restart) or never read.
            h = held[stream] = _Held(offset, time, [text], len(text), now)
            if self.max_lines <= 1 or h.size >= self.max_bytes:
                out.append(_line(held.pop(stream), stream))
        return out

    def due(self, now: float) -> list[Line]:
        """Held events whose flush_timeout passed."""
        late = [s for s, h in self._held.items() if now - h.last >= self.flush_timeout]
        return [_line(self._held.pop(s), s) for s in late]

    def flush(self) -> list[Line]:
        out = [_line(h, s) for s, h in self._held.items()]
        self._held.clear()
        return sorted(out)


def _line(h: _Held, stream: str | None) -> Line:
    return (h.offset, h.time, stream, "\n".join(h.parts))
