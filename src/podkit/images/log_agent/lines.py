"""Splitting a byte stream into lines (pure; used by the TCP and file sources)."""

from __future__ import annotations


class LineSplitter:
    """Feed bytes, get complete lines; a partial last line is held until its newline arrives.

    Lines longer than `max_line_bytes` are cut into pieces of that size so one runaway writer
    cannot make the agent buffer without bound. `\\r\\n` endings lose the `\\r`; empty lines are
    dropped, as Fluent Bit and Vector do.
    """

    __slots__ = ("_partial", "max_line_bytes", "cut_lines")

    def __init__(self, max_line_bytes: int = 1024 * 1024) -> None:
        self._partial = b""
        self.max_line_bytes = max_line_bytes
        self.cut_lines = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for a newline."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._partial + data if self._partial else data
        parts = buf.split(b"\n")
        self._partial = parts.pop()
        out = [p[:-1] if p.endswith(b"\r") else p for p in parts]
        out = [p for p in out if p]
        if len(self._partial) > self.max_line_bytes:
            limit = self.max_line_bytes
            while len(self._partial) > limit:
                out.append(self._partial[:limit])
                self._partial = self._partial[limit:]
                self.cut_lines += 1
        if any(len(p) > self.max_line_bytes for p in out):
            out = self._cut(out)
        return out

    def flush(self) -> bytes | None:
        """The held partial line, for when the stream ends (EOF, rotated file drained)."""
        rest, self._partial = self._partial, b""
        rest = rest[:-1] if rest.endswith(b"\r") else rest
        return rest or None

    def reset(self) -> None:
        self._partial = b""

    def _cut(self, lines: list[bytes]) -> list[bytes]:
        limit = self.max_line_bytes
        out: list[bytes] = []
        for line in lines:
            if len(line) <= limit:
                out.append(line)
                continue
            self.cut_lines += 1
            out.extend(line[i : i + limit] for i in range(0, len(line), limit))
        return out
