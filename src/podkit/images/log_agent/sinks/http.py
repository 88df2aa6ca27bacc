"""The generic HTTP sink (Vector `http`, Fluent Bit `http`), and the pure helpers the
API-specific HTTP sinks (loki, elasticsearch, otlp) build on.

Each request is one POST to `endpoint` (the full URL) of full events, either as JSON lines
(`application/x-ndjson`, the default) or as one JSON array (`application/json`). Payloads are
JSON lines either way (one item a line, sinks/base.py); the array is made when sending.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from functools import lru_cache
from typing import Literal

from pydantic import Field

from podkit.images.log_agent.event import Batch, json_lines
from podkit.images.log_agent.sinks.base import Rejected
from podkit.images.log_agent.sinks.http_client import HttpClient, HttpClientConfig

Format = Literal["ndjson", "json_array"]
CONTENT_TYPES: dict[Format, str] = {
    "ndjson": "application/x-ndjson",
    "json_array": "application/json",
}


class HttpConfig(HttpClientConfig):
    type: Literal["http"]
    name: str | None = None
    endpoint: str = Field(description="the full URL each payload is POSTed to")
    format: Format = "ndjson"


def body(payload: bytes, fmt: Format) -> bytes:
    """The request body for a payload of JSON lines."""
    if fmt == "ndjson":
        return payload
    if not payload:
        return b"[]"
    # JSON text never holds a raw newline (it is escaped inside strings), so the line breaks are
    # exactly the separators between events.
    return b"[" + payload[:-1].replace(b"\n", b",") + b"]"


class HttpSink:
    def __init__(self, id: str, cfg: HttpConfig) -> None:
        self.id = id
        self.cfg = cfg
        self._client = HttpClient(id, cfg)
        self.batching = cfg.batching()

    def encode(self, batch: Batch) -> bytes:
        return json_lines(batch)

    async def start(self) -> None:
        await self._client.start()

    async def send(self, payload: bytes) -> Rejected | None:
        fmt = self.cfg.format
        await self._client.post(self.cfg.endpoint, body(payload, fmt), CONTENT_TYPES[fmt])
        return None

    async def close(self) -> None:
        await self._client.close()


# -- helpers shared by the HTTP encoders (pure) ----------------------------------------------------

# RFC 3339, any number of fractional digits (Go and Vector write 9); the offset may lack its colon.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)")


def unix_nanos(value: object) -> int | None:
    """An RFC 3339 time as nanoseconds since the Unix epoch (full precision); None if it is not
    one. Events' "time" is usually the agent's own UTC text, but may be the sender's."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    date, clock, fraction, zone = m.groups()
    seconds = _epoch_seconds(date, clock, zone)
    if seconds is None:
        return None
    return seconds * 1_000_000_000 + int((fraction or "")[:9].ljust(9, "0"))


# Cached: the events of one batch mostly share their second.
@lru_cache(maxsize=4096)
def _epoch_seconds(date: str, clock: str, zone: str) -> int | None:
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}{offset}")
    except ValueError:  # 25:00:00, 2026-02-30, a leap second
        return None
    return calendar.timegm(parsed.utctimetuple())
