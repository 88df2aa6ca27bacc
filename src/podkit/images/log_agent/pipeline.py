"""The topology's spine: a source's batch is transformed, routed, encoded and buffered per sink.

    source --ingest(batch)--> Transformer --route--> sink.encode --> SinkBuffer --> sink.send

`ingest` returns once every sink it was routed to has queued the batch: with a full buffer and
the `block` policy that waits, which is how backpressure reaches the sources. Encoding happens
here, once per batch and sink, so buffers hold ready-to-send payloads that survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from podkit.images.log_agent.buffer import SinkBuffer
from podkit.images.log_agent.event import Ack, Batch
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.routing import Route
from podkit.images.log_agent.transforms import Transformer

Ingest = Callable[[Batch], Awaitable[None]]
log = logging.getLogger("log-agent")


@dataclass(slots=True)
class Output:
    route: Route
    buffer: SinkBuffer


class Pipeline:
    def __init__(self, outputs: Sequence[Output], counters: Counters) -> None:
        self.outputs = list(outputs)
        self.counters = counters

    def ingest_for(self, transformer: Transformer) -> Ingest:
        """The `ingest` a source calls: this pipeline with the source's own transformer."""

        async def ingest(batch: Batch) -> None:
            await self.ingest(transformer, batch)

        return ingest

    async def ingest(self, transformer: Transformer, batch: Batch) -> None:
        count = len(batch)
        self.counters.received(batch.source_id, count, batch.nbytes)
        if not count:
            if batch.ack is not None:
                _ack_now(batch.ack)
            return
        transformer.apply(batch)
        targets = []
        for output in self.outputs:
            selected = output.route.select(batch)
            if selected is not None:
                targets.append((output.buffer, selected))
        ack = batch.ack
        if not targets:
            self.counters.drop(batch.source_id, "no_route", count)
            if ack is not None:
                _ack_now(ack)
            return
        if ack is not None:
            ack.add(len(targets))  # every part first: one buffer's done() must not finish it
        durable = not batch.replayable
        for buffer, selected in targets:
            try:
                payload = buffer.sink.encode(selected)
                await buffer.put(payload, len(selected), ack, durable=durable, replay=batch.replay)
            except Exception as exc:  # noqa: BLE001 (one sink's failure must not stall the rest)
                # An event the sink cannot encode, or a disk buffer that cannot be written:
                # counted and acknowledged, or the source could never commit past this batch.
                reason = "buffer_error" if isinstance(exc, OSError) else "encode_error"
                log.error(
                    "events dropped",
                    extra={"component": buffer.id, "reason": reason, "error": str(exc)},
                )
                self.counters.drop(buffer.id, reason, len(selected))
                if ack is not None:
                    ack.done()
        # Let the delivery tasks run between two reads of a fast source, so a sink that keeps
        # up is fed from memory instead of the source filling memory and spilling to disk.
        await asyncio.sleep(0)


def _ack_now(ack: Ack) -> None:
    ack.add(1)
    ack.done()
