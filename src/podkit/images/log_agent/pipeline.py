"""The topology's spine: sources push records in, transforms run, sinks get batches out.

    sources --ingest()--> Transformer --buffer--> pump task --write()--> sinks

The buffer between transforms and sinks is bounded in events. When it is full, `ingest` waits,
so a TCP or HTTP sender is slowed down (TCP backpressure) rather than events being dropped.
Batches form naturally: the pump takes everything buffered since its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from podkit.images.log_agent.event import Event, RawRecord
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.transforms import Transformer

MAX_BATCH = 4096


class Sink(Protocol):
    id: str

    async def write(self, events: list[Event]) -> None: ...

    async def close(self) -> None: ...


class Pipeline:
    def __init__(
        self,
        transformer: Transformer,
        sinks: Sequence[Sink],
        counters: Counters,
        *,
        max_buffered_events: int = 50_000,
    ) -> None:
        self._transformer = transformer
        self._sinks = list(sinks)
        self.counters = counters
        self._max_buffered = max_buffered_events
        self._buffer: deque[Event] = deque()
        self._has_events = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._closing = False
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._run())

    def ingest_nowait(self, source_id: str, records: list[RawRecord], nbytes: int) -> None:
        """Accept records without waiting (for final flushes); the bound may be exceeded."""
        self.counters.received(source_id, len(records), nbytes)
        if not records:
            return
        apply = self._transformer.apply
        self._buffer.extend(apply(r) for r in records)
        self._has_events.set()
        if len(self._buffer) >= self._max_buffered:
            self._has_room.clear()

    async def ingest(self, source_id: str, records: list[RawRecord], nbytes: int) -> None:
        """Accept records, then wait while the buffer is over its bound (backpressure)."""
        self.ingest_nowait(source_id, records, nbytes)
        if not self._has_room.is_set():
            await self._has_room.wait()

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._has_events.clear()
                await self._has_events.wait()
                continue
            n = min(len(self._buffer), MAX_BATCH)
            batch = [self._buffer.popleft() for _ in range(n)]
            if len(self._buffer) < self._max_buffered // 2:
                self._has_room.set()
            for sink in self._sinks:
                await sink.write(batch)
                self.counters.sent(sink.id, n)

    async def close(self, timeout: float = 2.0) -> None:
        """Deliver what is buffered (up to `timeout`), then close the sinks."""
        self._closing = True
        self._has_events.set()
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):  # give up on a stuck sink, still exit
                await asyncio.wait_for(self._pump, timeout)
        for sink in self._sinks:
            await sink.close()
