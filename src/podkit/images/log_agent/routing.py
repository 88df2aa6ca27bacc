"""Which events of a batch a sink gets: `Route(match).select(batch)`. Pure logic (no I/O).

A match maps dotted field paths to conditions, all of which must hold (see transform_config's
Match): a scalar (equal), a list (equal to any), {regex: ...} (re.search on the value as text),
{exists: true|false}. A path is looked up in the event, then in the batch's `common`; a key may
itself contain dots (label names like app.kubernetes.io/name do), the whole key is tried first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from podkit.images.log_agent.event import Batch, Event
from podkit.images.log_agent.transform_config import Match

_MISSING: Any = object()  # a path that resolves to nothing (a field set to null does exist)

Predicate = Callable[[Any], bool]


def lookup(obj: dict[str, Any], path: str) -> Any:
    """The value at a dotted path in nested dicts, or _MISSING."""
    if path in obj:
        return obj[path]
    dot = path.find(".")
    while dot != -1:
        inner = obj.get(path[:dot], _MISSING)
        if isinstance(inner, dict):
            value = lookup(inner, path[dot + 1 :])
            if value is not _MISSING:
                return value
        dot = path.find(".", dot + 1)
    return _MISSING


def _same(value: Any, expected: Any) -> bool:
    # Python has True == 1; a user matching `ok: true` does not mean the number 1.
    return value == expected and isinstance(value, bool) == isinstance(expected, bool)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str).decode()  # nested values, as a sink would write them


def predicate(condition: Any) -> Predicate:
    """A test of one looked-up value (or _MISSING) for a validated MatchValue."""
    if isinstance(condition, dict):
        if "exists" in condition:
            wanted = bool(condition["exists"])
            return lambda value: (value is not _MISSING) == wanted
        search = re.compile(condition["regex"]).search
        return lambda value: value is not _MISSING and search(_as_text(value)) is not None
    if isinstance(condition, list):
        options = list(condition)
        return lambda value: any(_same(value, option) for option in options)
    return lambda value: _same(value, condition)


class Route:
    """The events a sink's `match` selects; an empty match selects everything."""

    def __init__(self, match: Match) -> None:
        self.match = dict(match)
        self._tests = [(path, predicate(condition)) for path, condition in match.items()]

    def matches(self, event: Event, common: Event) -> bool:
        """Whether one event (with its batch's common fields) is selected."""
        for path, test in self._tests:
            value = lookup(event, path)
            if value is _MISSING:
                value = lookup(common, path)
            if not test(value):
                return False
        return True

    def select(self, batch: Batch) -> Batch | None:
        """None when nothing matches; `batch` itself when everything does; else a new batch of
        the matching events sharing source_id, common, ack and replayable."""
        if not self._tests:
            return batch
        # Fields in common are the same for every event: decide those once for the batch.
        per_event: list[tuple[str, Predicate]] = []
        for path, test in self._tests:
            value = lookup(batch.common, path)
            if value is _MISSING:
                per_event.append((path, test))
            elif not test(value):
                return None
        if not per_event:
            return batch
        events = batch.events
        if len(per_event) == 1:
            ((path, test),) = per_event
            kept = [event for event in events if test(lookup(event, path))]
        else:
            kept = [
                event for event in events if all(test(lookup(event, p)) for p, test in per_event)
            ]
        if len(kept) == len(events):
            return batch
        if not kept:
            return None
        return Batch(
            source_id=batch.source_id,
            events=kept,
            common=batch.common,
            nbytes=batch.nbytes * len(kept) // len(events),
            ack=batch.ack,
            replayable=batch.replayable,
        )
