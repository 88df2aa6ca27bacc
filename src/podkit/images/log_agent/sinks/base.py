"""What every sink is: a pure encoder (batch -> payload bytes) and an async sender.

The pipeline encodes a batch for each sink it is routed to as soon as it arrives, keeps the
payload in the sink's buffer (memory, then disk), and calls `send` with it until it is delivered.
So a payload must be self-contained: the same bytes can be sent again after a restart.

`send` returns when the payload is delivered, or raises:
- RetryableError: nothing (or not everything) was taken; try again after a backoff. When only
  part was refused (an Elasticsearch `_bulk` with some items 429), `remaining` is the payload to
  retry, so delivered items are not sent twice.
- RejectedError: the receiver refused the data for good (HTTP 400, 413 for one event): retrying
  cannot help, the events are dropped and counted under `reason`.
"""

from __future__ import annotations

from typing import Protocol

from podkit.images.log_agent.event import Batch


class RetryableError(Exception):
    def __init__(self, message: str, remaining: bytes | None = None) -> None:
        super().__init__(message)
        self.remaining = remaining


class RejectedError(Exception):
    def __init__(self, message: str, reason: str = "rejected", events: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.events = events  # how many events were refused; None: all of the payload's


class Sink(Protocol):
    id: str

    def encode(self, batch: Batch) -> bytes:
        """The batch as one payload, ready to send (pure; no I/O)."""
        ...

    async def start(self) -> None:
        """Open files or connections that must exist before the first send."""
        ...

    async def send(self, payload: bytes) -> None: ...

    async def close(self) -> None: ...
