"""One request to a sink, to its end: retried with backoff, halved when too large, and every
event that does not arrive counted by reason. The buffer (buffer.py) decides what a request holds
and runs several at a time; this module only sends one.

    ok                      -> delivered (less the items refused one by one, counted)
    RetryableError          -> wait (backoff, equal jitter) and send again (`remaining` if given);
                               `refused` marks the sink blocked until the receiver takes it
    TooLargeError (413)     -> send each half; one event alone too large is dropped, counted;
                               later requests are kept under the size that was refused
    RejectedError           -> dropped, counted (`on_client_error: drop`)
    max_attempts reached    -> dropped, counted as retries_exhausted

Logs: the first failure at once, then one line a minute with the count (an outage must not
flood the agent's own log); the same for refusals and drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from podkit.common.backoff import Backoff
from podkit.images.log_agent import items
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.sinks.base import (
    Rejected,
    RejectedError,
    RetryableError,
    Sink,
    TooLargeError,
)
from podkit.images.log_agent.throttle import Throttle

log = logging.getLogger("log-agent.buffer")


class Sender:
    def __init__(
        self, sink: Sink, max_attempts: int, counters: Counters, rand: Callable[[], float]
    ) -> None:
        self.sink = sink
        self.id = sink.id
        self.max_attempts = max_attempts
        self.max_bytes = sink.batching.max_bytes if sink.batching else 0  # 413 lowers it
        self.refused: str | None = None  # why the receiver refuses our requests, while it does
        self._counters = counters
        self._rand = rand
        self._failing = Throttle()
        self._dropping = Throttle()

    async def send(self, backoff: Backoff, payload: bytes, events: int) -> int:
        """Deliver `payload` (`events` events) or count why not; return the events dropped."""
        dropped = 0
        attempts = 0
        while True:
            attempts += 1
            try:
                rejected = await self.sink.send(payload)
            except TooLargeError as exc:
                return dropped + await self._too_large(backoff, payload, events, str(exc))
            except RejectedError as exc:
                self._drop({exc.reason: events}, str(exc))
                return dropped + events
            except Exception as caught:
                # Anything unforeseen (a sink bug, an unwrapped client error) is retried too:
                # a dead sender would stall this sink and its sources' offsets for ever.
                err = caught if isinstance(caught, RetryableError) else RetryableError(repr(caught))
                if err.rejected:
                    dropped += self._drop(err.rejected, str(err))
                if err.remaining is not None:
                    payload, events = err.remaining, items.count(err.remaining)
                if self.max_attempts and attempts >= self.max_attempts:
                    self._drop({"retries_exhausted": events}, str(err))
                    return dropped + events
                await self._retry_later(backoff, err)
                continue
            if rejected:
                dropped += self._drop(rejected, "refused one by one by the receiver")
            backoff.reset()
            self._recovered()
            return dropped

    async def _too_large(self, backoff: Backoff, payload: bytes, events: int, why: str) -> int:
        if self.sink.batching is None or events <= 1:
            self._drop({"http_413": events}, why)  # alone, and still too large
            return events
        if len(payload) // 2 < self.max_bytes:
            self.max_bytes = max(len(payload) // 2, 1)
            log.warning(
                "receiver refused a request as too large: requests are cut smaller",
                extra={"component": self.id, "bytes": len(payload), "max_bytes": self.max_bytes},
            )
        dropped = 0
        for half in items.halves(payload):
            dropped += await self.send(backoff, half, items.count(half))
        return dropped

    async def _retry_later(self, backoff: Backoff, err: RetryableError) -> None:
        self._counters.retried(self.id)
        delay = backoff.next_delay()
        delay = delay / 2 + self._rand() * delay / 2  # equal jitter
        if err.refused and self.refused is None:
            self._failing.clear()  # a refusal is news even within an outage's minute
        self.refused = f"receiver refuses: {err.refused}" if err.refused else None
        held = self._failing.due()
        if held is not None:
            log.warning(
                "send failed, retrying",
                extra={
                    "component": self.id,
                    "error": str(err),
                    "retry_in_s": round(delay, 2),
                    "retries_since": held,
                },
            )
        await asyncio.sleep(delay)

    def _recovered(self) -> None:
        self.refused = None
        if self._failing.since:
            log.info(
                "sink delivers again",
                extra={"component": self.id, "after_s": round(self._failing.clear(), 1)},
            )

    def _drop(self, rejected: Rejected, why: str) -> int:
        for reason, n in rejected.items():
            self._counters.drop(self.id, reason, n)
        held = self._dropping.due()
        if held is not None:
            log.error(
                "events dropped",
                extra={
                    "component": self.id,
                    "events": dict(rejected),
                    "error": why,
                    "drops_since": held,
                },
            )
        return sum(rejected.values())
