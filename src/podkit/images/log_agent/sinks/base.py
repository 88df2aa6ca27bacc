"""What every sink is: a pure encoder (batch -> payload bytes) and an async sender.

The pipeline encodes a batch for each sink it is routed to as soon as it arrives, keeps the
payload in the sink's buffer (memory, then disk), and calls `send` with it until it is delivered.
So a payload must be self-contained: the same bytes can be sent again after a restart.

Sinks with a `batching` (the HTTP sinks) encode one event per line, an *item*, and build the
request body from the lines when they send: any run of whole lines is a payload. So the buffer
joins the payloads of several records into one request (up to `max_bytes` and `max_events`,
waiting up to `linger` for more), splits a large one, halves a request the receiver finds too
large, and has up to `concurrency` requests in flight. Sinks without one get one record a send.

`send` returns when the payload was taken, with the items the receiver refused for good one by
one (by reason: an Elasticsearch mapping error, an OTLP partial success); or it raises:
- RetryableError: nothing (or not everything) was taken; try again after a backoff. When only
  part was refused (an Elasticsearch `_bulk` with some items 429), `remaining` is the payload to
  retry, so delivered items are not sent twice, and `rejected` what was refused for good.
  `refused` is set when the receiver refuses the request itself (HTTP 401, 403...): the sink is
  then blocked until it takes it.
- TooLargeError: the receiver refuses the body's size (HTTP 413): send less at a time.
- RejectedError: the receiver refused the data for good (`on_client_error: drop`): retrying
  cannot help, the events are dropped and counted under `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from podkit.images.log_agent.event import Batch

Rejected = dict[str, int]  # reason -> events refused for good


class RetryableError(Exception):
    def __init__(
        self,
        message: str,
        remaining: bytes | None = None,
        *,
        rejected: Rejected | None = None,
        refused: str | None = None,
    ) -> None:
        super().__init__(message)
        self.remaining = remaining
        self.rejected = rejected or {}
        self.refused = refused  # why the receiver refuses the request ("HTTP 401"), if it does


class TooLargeError(Exception):
    pass


class RejectedError(Exception):
    def __init__(self, message: str, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Batching:
    """How a sink of item lines is sent: see the module docstring."""

    max_bytes: int
    max_events: int
    linger: float  # seconds a request that is not full waits for more
    concurrency: int


class Sink(Protocol):
    id: str
    batching: Batching | None  # None: a record a send, one at a time

    def encode(self, batch: Batch) -> bytes:
        """The batch as one payload, ready to send (pure; no I/O)."""
        ...

    async def start(self) -> None:
        """Open files or connections that must exist before the first send."""
        ...

    async def send(self, payload: bytes) -> Rejected | None: ...

    async def close(self) -> None: ...
