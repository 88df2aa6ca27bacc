"""Splitting a byte stream into lines (pure; used by the TCP and file sources).

`LineReader` knows where each line starts in the stream, decodes, and is the file source's hot
path: a whole chunk of ASCII is decoded at once and split as a str (one char per byte, so
lengths are byte offsets), offsets are running sums. The TCP source ignores the offsets.
"""

from __future__ import annotations

from itertools import accumulate, repeat
from operator import add

from podkit.images.log_agent.event import ID_KEY, Event, Lines

# A line on its way to an event: (byte offset of its start, time, stream or None, text).
Line = tuple[int, str, str | None, str]


class LineReader:
    """Bytes of one file or stream in, (start offsets, decoded lines) out; a partial last line
    is held until its newline arrives.

    Invalid UTF-8 becomes U+FFFD, and `invalid` counts the lines that had some. `\\r\\n` loses
    the `\\r`. Empty lines are dropped and counted in `empty` (kept as empty messages with
    `keep_empty`). A line longer than `max_line_bytes` is cut into pieces (at a UTF-8
    character boundary), each delivered as a line with its own offset; `cut` counts the lines
    that were cut, once each.
    """

    __slots__ = ("_partial", "_start", "_in_cut", "max_line_bytes", "keep_empty", "counts")

    def __init__(self, max_line_bytes: int, offset: int = 0, keep_empty: bool = False) -> None:
        self.max_line_bytes = max_line_bytes
        self.keep_empty = keep_empty
        self.counts = LineCounts()
        self.reset(offset)

    @property
    def cut(self) -> int:
        return self.counts.cut

    def reset(self, offset: int) -> None:
        self._partial = b""
        self._start = offset  # file offset of _partial[0]
        self._in_cut = False  # the held line already had pieces cut off (and was counted)

    @property
    def held_start(self) -> int:
        """Offset of the first byte not yet delivered: where a restart must read again."""
        return self._start

    def feed(self, data: bytes) -> tuple[list[int], list[str]]:
        buf = self._partial + data if self._partial else data
        nl = buf.rfind(b"\n")
        if nl < 0:
            self._partial = buf
            return self._cut_partial([], [])
        start, whole = self._start, buf[:nl]
        self._partial = buf[nl + 1 :]
        self._start = start + nl + 1
        if len(whole) > self.max_line_bytes:
            offsets, texts = self._split_cutting(whole, start)
        else:
            offsets, texts = split_lines(whole, start, self.counts, self.keep_empty)
        self._in_cut = False
        return self._cut_partial(offsets, texts)

    def flush(self) -> tuple[list[int], list[str]]:
        """The held partial line as a last line: the stream ended (rotated file drained)."""
        if not self._partial:
            return [], []
        rest, start = self._partial, self._start
        self._start += len(rest)
        self._partial, self._in_cut = b"", False
        return split_lines(rest, start, self.counts, self.keep_empty)

    def _split_cutting(self, whole: bytes, start: int) -> tuple[list[int], list[str]]:
        """The slow path: some line is longer than the limit."""
        limit = self.max_line_bytes
        offsets: list[int] = []
        texts: list[str] = []
        offset = start
        for i, part in enumerate(whole.split(b"\n")):
            line_start, offset = offset, offset + len(part) + 1
            part = part[:-1] if part.endswith(b"\r") else part
            if len(part) <= limit:
                pieces = [(0, part)]
            else:
                pieces = cut_utf8(part, limit)
                self.counts.cut += 0 if (i == 0 and self._in_cut) else 1
            if not part:
                if self.keep_empty:
                    offsets.append(line_start)
                    texts.append("")
                else:
                    self.counts.empty += 1
            for rel, piece in pieces:
                if piece:
                    offsets.append(line_start + rel)
                    texts.append(_decode(piece, self.counts))
        return offsets, texts

    def _cut_partial(self, offsets: list[int], texts: list[str]) -> tuple[list[int], list[str]]:
        """A held line over the limit already: deliver its head now, it cannot grow unbounded."""
        limit = self.max_line_bytes
        if len(self._partial) <= limit:
            return offsets, texts
        if not self._in_cut:
            self.counts.cut += 1
            self._in_cut = True
        pieces = cut_utf8(self._partial, limit)
        keep = pieces.pop()  # the tail (<= limit) stays held: more of the line may follow
        for rel, piece in pieces:
            offsets.append(self._start + rel)
            texts.append(_decode(piece, self.counts))
        self._start += keep[0]
        self._partial = keep[1]
        return offsets, texts


class LineCounts:
    """What a reader met that changes lines from the bytes: counted, as nothing is lost unseen."""

    __slots__ = ("cut", "empty", "invalid")

    def __init__(self) -> None:
        self.cut = 0  # over-long lines cut into pieces
        self.empty = 0  # empty lines dropped
        self.invalid = 0  # lines with invalid UTF-8 (decoded with U+FFFD)

    def take(self) -> tuple[int, int, int]:
        """(cut, empty, invalid) since the last take."""
        counts = (self.cut, self.empty, self.invalid)
        self.cut = self.empty = self.invalid = 0
        return counts


def _decode(data: bytes, counts: LineCounts) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        counts.invalid += 1
        return data.decode("utf-8", "replace")


def split_lines(
    whole: bytes, start: int, counts: LineCounts | None = None, keep_empty: bool = False
) -> tuple[list[int], list[str]]:
    """Newline-separated lines (no trailing newline) starting at file offset `start`."""
    if whole.isascii():
        text = whole.decode("ascii")
        texts = text.split("\n")
        lens = list(map(len, texts))
    else:
        # Replacement never swallows a newline byte, so the str splits into as many parts as
        # the bytes; the lengths (for offsets) come from the bytes.
        try:
            text = whole.decode("utf-8")
        except UnicodeDecodeError:
            text = whole.decode("utf-8", "replace")
            if counts is not None:
                counts.invalid += sum(1 for part in whole.split(b"\n") if not _valid(part))
        texts = text.split("\n")
        lens = list(map(len, whole.split(b"\n")))
    # offset of line i: start + the lengths (each + its newline) of the lines before it
    offsets = list(accumulate(map(add, lens, repeat(1)), initial=start))
    del offsets[-1]  # where the line after the last one would start
    if "\r" in text:
        texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    if not keep_empty and "" in texts:
        kept = [(o, t) for o, t in zip(offsets, texts, strict=False) if t]
        if counts is not None:
            counts.empty += len(texts) - len(kept)
        offsets = [o for o, _ in kept]
        texts = [t for _, t in kept]
    return offsets, texts


def _valid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def cut_utf8(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    """`data` in pieces of at most `limit` bytes, (relative offset, piece), not splitting a
    UTF-8 character when it can help it."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(data)
    while pos < n:
        end = min(pos + limit, n)
        if end < n:
            back = end
            while back > pos + 1 and back > end - 4 and data[back] & 0xC0 == 0x80:
                back -= 1  # data[back] continues a character: cut before that character
            if data[back] & 0xC0 != 0x80:
                end = back
        out.append((pos, data[pos:end]))
        pos = end
    return out


def text_events(offsets: list[int], texts: list[str], now: str, ident: str) -> Lines:
    """Events of plain lines, one received time for the whole read: kept in columns, as most
    are never looked at one by one (event.Lines)."""
    return Lines(now, texts, ident, offsets)


def line_events(lines: list[Line], ident: str) -> list[Event]:
    """Events of assembled lines (CRI, multiline): each has its own time, maybe a stream."""
    return [
        {"time": tm, "message": m, ID_KEY: f"{ident}:{o}"}
        if s is None
        else {"time": tm, "message": m, "stream": s, ID_KEY: f"{ident}:{o}"}
        for o, tm, s, m in lines
    ]
