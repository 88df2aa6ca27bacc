"""What flows through the agent: batches of events, and the acknowledgement each batch carries.

A batch is what one source read produced (a few thousand lines at most). Its events hold only
what differs per event; what every event of the batch shares (source, file, pod metadata, static
fields) is kept once in `common`, so a sink encodes it once per batch instead of once per event.
The full event a user sees is `{**event, **common}`; the two never share a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
class Batch:
    source_id: str
    events: list[Event]
    common: Event = field(default_factory=dict)
    nbytes: int = 0  # input bytes this batch stands for, for metrics
    ack: Ack | None = None
    # False for input that cannot be read again (TCP, HTTP): buffers put it on disk at once.
    replayable: bool = True


def full_event(event: Event, common: Event) -> Event:
    """The event as a user sees it: its own fields, then the batch's shared ones."""
    return {**event, **common} if common else event


def json_lines(batch: Batch) -> bytes:
    """The batch as JSON lines, `common` encoded once and spliced into every line."""
    dumps = orjson.dumps
    if not batch.common:
        return b"".join([dumps(e, default=str) + b"\n" for e in batch.events])
    tail = b"," + dumps(batch.common, default=str)[1:] + b"\n"
    whole = dumps(batch.common, default=str) + b"\n"
    # dumps(e)[:-1] drops the closing brace; an empty event is the shared fields alone.
    return b"".join([dumps(e, default=str)[:-1] + tail if e else whole for e in batch.events])
