"""What flows through the agent: batches of events, and the acknowledgement each batch carries.

A batch is what one source read produced (a few thousand lines at most). Its events hold only
what differs per event; what every event of the batch shares (source, file, pod metadata, static
fields) is kept once in `common`, so a sink encodes it once per batch instead of once per event.
The full event a user sees is `{**event, **common}`; the two never share a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

# An event is a plain dict, ready for JSON: sinks encode it without a conversion step.
Event = dict[str, Any]

# Keys every event has: "time" (RFC 3339 text, UTC) and "message" (text). Events from a source
# that can be read again (files) also carry ID_KEY: file identity + byte offset, the same on every
# delivery, so a sink (Elasticsearch `_id`, or any consumer) can drop a duplicate.
ID_KEY = "_id"


class Ack:
    """Done once every sink the batch was routed to holds it safely (delivered or on disk).

    `parts` is how many holders must say so; `done()` is called by each. The callback runs once,
    when the last holder is done: the source then may forget the batch (a file source commits the
    offset after it). A batch routed to no sink is done at once (`parts == 0`).
    """

    __slots__ = ("_left", "_on_done")

    def __init__(self, on_done: Callable[[], None] | None) -> None:
        self._left = 0
        self._on_done = on_done

    def add(self, parts: int = 1) -> None:
        self._left += parts

    def done(self) -> None:
        self._left -= 1
        if self._left == 0 and self._on_done is not None:
            callback, self._on_done = self._on_done, None
            callback()


@dataclass(slots=True)
class Lines:
    """Plain lines from one read of one file, before anyone needs them as dicts.

    Event i is {"time": time, "message": messages[i], "_id": f"{id_prefix}:{offsets[i]}"}.
    Kept in columns because most batches of a file source are never looked at line by line
    (parse: raw, routing on pod fields): encoders then write them without building a dict per
    line, which is most of the cost of shipping a line.
    """

    time: str
    messages: list[str]
    id_prefix: str
    offsets: list[int]

    def events(self) -> list[Event]:
        t, prefix = self.time, self.id_prefix
        return [
            {"time": t, "message": m, ID_KEY: f"{prefix}:{o}"}
            for m, o in zip(self.messages, self.offsets, strict=True)
        ]


class Batch:
    """Events from one source read: built from dicts, or from `Lines` and turned into dicts
    only when something asks for `events`."""

    __slots__ = (
        "source_id",
        "_events",
        "lines",
        "common",
        "nbytes",
        "ack",
        "replayable",
        "replay",
    )

    def __init__(
        self,
        source_id: str,
        events: list[Event] | None = None,
        common: Event | None = None,
        nbytes: int = 0,  # input bytes this batch stands for, for metrics
        ack: Ack | None = None,
        # False for input that cannot be read again (TCP, HTTP): buffers put it on disk at once.
        replayable: bool = True,
        *,
        lines: Lines | None = None,
        replay: bool = False,  # read again after a restart: may have been delivered before
    ) -> None:
        if (events is None) == (lines is None):
            raise ValueError("a batch is made of events or of lines")
        self.source_id = source_id
        self._events = events
        self.lines = lines
        self.common: Event = {} if common is None else common
        self.nbytes = nbytes
        self.ack = ack
        self.replayable = replayable
        self.replay = replay

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            assert self.lines is not None
            self._events = self.lines.events()
            self.lines = None  # from now on the dicts are the truth (a transform may edit them)
        return self._events

    def __len__(self) -> int:
        """The number of events, without turning lines into dicts."""
        return len(self.lines.messages) if self.lines is not None else len(self.events)


def full_event(event: Event, common: Event) -> Event:
    """The event as a user sees it: its own fields, then the batch's shared ones."""
    return {**event, **common} if common else event


def json_lines(batch: Batch) -> bytes:
    """The batch as JSON lines, `common` encoded once and spliced into every line."""
    dumps = orjson.dumps
    if batch.lines is not None:
        return _json_lines_columns(batch.lines, batch.common)
    if not batch.common:
        return b"".join([dumps(e, default=str) + b"\n" for e in batch.events])
    tail = b"," + dumps(batch.common, default=str)[1:] + b"\n"
    whole = dumps(batch.common, default=str) + b"\n"
    # dumps(e)[:-1] drops the closing brace; an empty event is the shared fields alone.
    return b"".join([dumps(e, default=str)[:-1] + tail if e else whole for e in batch.events])


def _json_lines_columns(lines: Lines, common: Event) -> bytes:
    """The same bytes json_lines gives for lines.events(), built by C code only: about twice
    as fast as encoding a dict per line.

    orjson encodes the whole message list at once; inside an encoded string a quote is always
    escaped, so `","` occurs inside an element only right after a backslash: when the blob has
    no `\\","`, splitting on `","` gives each message's encoding. One `%` format over a
    repeated line template then puts them together."""
    if not lines.messages:
        return b""
    dumps = orjson.dumps
    blob = dumps(lines.messages)
    if b'\\","' in blob:
        # A message with an escaped quote before a comma (`x="1",`) puts `","` inside an
        # element too: encode those batches message by message.
        messages = [dumps(m)[1:-1] for m in lines.messages]
    else:
        messages = blob[2:-2].split(b'","')
    offsets = dumps(lines.offsets)[1:-1].split(b",")
    parts: list[bytes] = [b""] * (2 * len(messages))
    parts[0::2] = messages
    parts[1::2] = offsets
    tail = b'",' + dumps(common, default=str)[1:] if common else b'"}'
    line = (
        b'{"time":'
        + dumps(lines.time)
        + b',"message":"%s","'
        + ID_KEY.encode()
        + b'":"'
        + lines.id_prefix.encode().replace(b"%", b"%%")
        + b":%s"
        + tail.replace(b"%", b"%%")
        + b"\n"
    )
    return line * len(messages) % tuple(parts)
