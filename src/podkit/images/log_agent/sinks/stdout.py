"""The stdout sink (Vector `console`, Fluent Bit `stdout`): one event a line, or indented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import orjson

from podkit.common import stdout
from podkit.common.config_section import Section
from podkit.images.log_agent.event import Batch, full_event, json_lines
from podkit.images.log_agent.sinks.base import Batching

Format = Literal["json", "pretty", "text"]


class StdoutConfig(Section):
    type: Literal["stdout"]
    name: str | None = None
    format: Format = "json"  # json: one line | pretty: indented | text: the message only


def text_lines(batch: Batch) -> bytes:
    """Each event's message on a line of its own (shared with the file sink's `text` format)."""
    return b"".join(
        [str(e.get("message", "")).encode("utf-8", "replace") + b"\n" for e in batch.events]
    )


def pretty_lines(batch: Batch) -> bytes:
    dumps, option, common = orjson.dumps, orjson.OPT_INDENT_2, batch.common
    # default=str: a value orjson cannot encode is printed as text rather than dropping the event
    return b"".join(
        [dumps(full_event(e, common), default=str, option=option) + b"\n" for e in batch.events]
    )


ENCODERS: dict[Format, Callable[[Batch], bytes]] = {
    "json": json_lines,
    "pretty": pretty_lines,
    "text": text_lines,
}


class StdoutSink:
    batching: Batching | None = None  # a record a send, in order

    def __init__(self, id: str, cfg: StdoutConfig) -> None:
        self.id = id
        self.cfg = cfg
        self._encode = ENCODERS[cfg.format]

    def encode(self, batch: Batch) -> bytes:
        return self._encode(batch)

    async def start(self) -> None:
        return None

    async def send(self, payload: bytes) -> None:
        # One write and one flush per payload: a syscall per event would cap throughput, and the
        # agent's own log lines (same writer) never land inside a payload.
        stdout.write(payload)

    async def close(self) -> None:
        return None
