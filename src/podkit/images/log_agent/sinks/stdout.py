"""The stdout sink (Vector `console`, Fluent Bit `stdout`): one event a line, or indented."""

from __future__ import annotations

from typing import Literal

import orjson

from podkit.common import stdout
from podkit.images.log_agent.event import Event

Format = Literal["json", "pretty", "text"]


def encode(event: Event, fmt: Format) -> bytes:
    if fmt == "text":
        return str(event.get("message", "")).encode("utf-8", "replace") + b"\n"
    option = orjson.OPT_INDENT_2 if fmt == "pretty" else 0
    # default=str: a value orjson cannot encode is printed as text rather than dropping the event
    return orjson.dumps(event, default=str, option=option) + b"\n"


class StdoutSink:
    def __init__(self, id: str, fmt: Format = "json") -> None:
        self.id = id
        self.format: Format = fmt

    async def write(self, events: list[Event]) -> None:
        fmt = self.format
        # One write and one flush per batch: a syscall per event would cap throughput.
        stdout.write(b"".join(encode(e, fmt) for e in events))

    async def close(self) -> None:
        return None
