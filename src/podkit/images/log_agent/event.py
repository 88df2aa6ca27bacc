"""What flows through the agent: raw records from sources, events to sinks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# An event is a plain dict, ready for JSON: sinks encode it without a conversion step.
Event = dict[str, Any]


@dataclass(slots=True)
class RawRecord:
    """One line or one JSON object as a source received it, before any transform."""

    message: str
    source: str  # source type: tcp | http | file
    received: float  # epoch seconds
    fields: dict[str, Any] | None = None  # already decoded by the source (HTTP JSON bodies)
    file: str | None = None  # file source: the path the line was read from
    container: str | None = None  # file source: the configured container_name
