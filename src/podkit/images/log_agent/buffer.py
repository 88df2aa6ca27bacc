"""A sink's buffer and delivery loop: memory first, then disk, then the `when_full` policy.

    put(payload) --> memory queue --(over max_memory_bytes, or not replayable)--> disk queue
                                   \\--> delivery loop: send, retry with backoff, acknowledge

Ordering: every record has a sequence number and is delivered in that order. The first record
that must go to disk (memory full, or input that cannot be read again) takes everything in memory
with it, the record being sent included; newer records then go to disk until it drains.

Acknowledgement (what lets a file source commit its offset):
- a memory record is acknowledged when the sink took it;
- a disk record when it was written to disk (a restart delivers it from there), and its delivery
  is recorded as the last delivered seq in the state store.
Spilling all of memory at once is what keeps duplicates after a crash to the one record being
sent: were older memory records left unacknowledged behind acknowledged disk records, a file
source could not commit past them, and a restart would read again what the disk also replays.
- a dropped record (RejectedError, or drop_oldest when full) is acknowledged too, and counted.

Full means the disk queue is over max_disk_bytes. `block` (default) makes put wait: the source
stops reading, a file stays on disk where it is, a TCP sender is slowed down. `drop_oldest` drops
the oldest records until the new one fits and counts the events dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from podkit.common.backoff import Backoff
from podkit.images.log_agent.disk_queue import SEGMENT_BYTES, DiskQueue, DiskRecord
from podkit.images.log_agent.event import Ack
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.sinks.base import RejectedError, RetryableError, Sink
from podkit.images.log_agent.state import StateStore

log = logging.getLogger("log-agent.buffer")


@dataclass(frozen=True, slots=True)
class BufferPolicy:
    max_memory_bytes: int
    max_disk_bytes: int
    when_full: Literal["block", "drop_oldest"]
    initial_backoff: float
    max_backoff: float
    max_attempts: int  # 0: retry for ever


@dataclass(slots=True)
class _Record:
    seq: int
    payload: bytes
    events: int
    ack: Ack | None  # memory records: done once delivered; disk records were acked on write
    disk: DiskRecord | None = None  # where it lies on disk, for a disk record


class SinkBuffer:
    def __init__(
        self,
        sink: Sink,
        policy: BufferPolicy,
        directory: Path,
        state: StateStore,
        counters: Counters,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.id = sink.id
        self.policy = policy
        self._state = state
        self._scope = f"buffer:{sink.id}"
        self._counters = counters
        self._rand = rand
        self._memory: deque[_Record] = deque()
        self.memory_bytes = 0
        self._inflight: _Record | None = None  # taken out of the queues, being sent
        # Segments are deleted whole: keep each small next to the bound, so the files on disk
        # stay near max_disk_bytes even when the queue never empties.
        segment = min(SEGMENT_BYTES, max(policy.max_disk_bytes // 8, 64 * 1024))
        self._disk = DiskQueue(directory, segment)
        delivered = int(state.load(self._scope).get("delivered", 0))
        self._seq = self._disk.recover(delivered)
        if len(self._disk):
            log.info(
                "delivering records left on disk by the last run",
                extra={"component": self.id, "records": len(self._disk)},
            )
        self._has_work = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- numbers for metrics -------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return self._disk.bytes

    @property
    def queued_events(self) -> int:
        inflight = self._inflight.events if self._inflight is not None else 0
        return inflight + sum(r.events for r in self._memory) + self._disk.events

    # -- intake --------------------------------------------------------------------------------

    async def put(self, payload: bytes, events: int, ack: Ack | None, *, durable: bool) -> None:
        """Queue a payload; with `block`, wait while the disk queue is full."""
        size = len(payload)
        while self._disk.bytes + size > self.policy.max_disk_bytes and len(self._disk):
            if self.policy.when_full == "drop_oldest":
                self._drop_oldest()
                continue
            self._has_room.clear()
            await self._has_room.wait()
        self._seq += 1
        if (
            durable
            or len(self._disk)
            or (self._memory and self.memory_bytes + size > self.policy.max_memory_bytes)
        ):
            self._spill_memory()
            self._disk.append(self._seq, events, payload)
            if ack is not None:
                ack.done()  # on disk: a restart delivers it
        else:
            self._memory.append(_Record(self._seq, payload, events, ack))
            self.memory_bytes += size
        self._has_work.set()

    def _spill_memory(self) -> None:
        """Put the record being sent and every memory record on disk, in order, and
        acknowledge them: from here on the disk holds the whole queue."""
        inflight = self._inflight
        if inflight is not None and inflight.disk is None:
            inflight.disk = self._disk.append(
                inflight.seq, inflight.events, inflight.payload, queued=False
            )
            if inflight.ack is not None:
                inflight.ack.done()
                inflight.ack = None
        while self._memory:
            rec = self._memory[0]
            self._disk.append(rec.seq, rec.events, rec.payload)  # may raise: then it stays
            self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            if rec.ack is not None:
                rec.ack.done()

    def _drop_oldest(self) -> None:
        """Drop the oldest queued record (never the one being sent: it may be arriving).
        Only called with records on disk, and then memory is empty: they spilled with it."""
        taken = self._disk.take()
        if taken is not None:
            self._counters.drop(self.id, "buffer_full", taken[0].events)
            self._disk.release(taken[0])
            self._save_position()

    def _save_position(self) -> None:
        """Record the seq below which every record is delivered or dropped: a restart replays
        the disk records above it. Memory records count too, as they may be put on disk at
        shutdown (they are always older than the disk records)."""
        outstanding = [self._disk.first_seq]
        if self._memory:
            outstanding.append(self._memory[0].seq)
        if self._inflight is not None:
            outstanding.append(self._inflight.seq)
        seqs = [seq for seq in outstanding if seq is not None]
        self._state.set(self._scope, "delivered", min(seqs) - 1 if seqs else self._seq)

    # -- delivery ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._deliver_loop())

    async def _deliver_loop(self) -> None:
        backoff = Backoff(self.policy.initial_backoff, self.policy.max_backoff)
        while True:
            try:
                rec = self._take()
            except OSError as exc:  # a segment unreadable for now: try again, do not die
                log.error(
                    "cannot read the disk buffer", extra={"component": self.id, "error": str(exc)}
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            if rec is None:
                if self._stopping:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            self._inflight = rec
            delivered, nbytes = await self._deliver(backoff, rec)
            self._inflight = None
            try:
                self._finish(rec, delivered, nbytes)
            except OSError as exc:  # e.g. a segment that cannot be deleted: it is delivered
                log.error(
                    "buffer bookkeeping failed", extra={"component": self.id, "error": str(exc)}
                )

    def _take(self) -> _Record | None:
        if self._memory:
            rec = self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            return rec
        taken = self._disk.take()
        if taken is None:
            return None
        disk_rec, payload = taken
        return _Record(disk_rec.seq, payload, disk_rec.events, None, disk_rec)

    async def _deliver(self, backoff: Backoff, rec: _Record) -> tuple[int, int]:
        """Send one record until it is delivered, rejected, or out of attempts; return how
        many of its events were delivered, and the bytes of the last payload sent."""
        payload = rec.payload
        attempts = 0
        rejected = 0  # events refused item by item so far (Elasticsearch `_bulk`)
        while True:
            attempts += 1
            try:
                await self.sink.send(payload)
            except RejectedError as exc:
                log.error("events rejected", extra={"component": self.id, "error": str(exc)})
                item_rejects = self._item_rejects()
                if item_rejects:
                    rejected += item_rejects
                else:
                    lost = rec.events - rejected if exc.events is None else exc.events
                    self._counters.drop(self.id, exc.reason, lost)
                    rejected += lost
                return max(rec.events - rejected, 0), len(payload)
            except Exception as caught:
                # Anything unforeseen (a sink bug, an unwrapped client error) is retried too:
                # a dead delivery task would stall this sink and its sources' offsets for ever.
                err = caught if isinstance(caught, RetryableError) else RetryableError(repr(caught))
                rejected += self._item_rejects()
                if err.remaining is not None:
                    payload = err.remaining
                if self.policy.max_attempts and attempts >= self.policy.max_attempts:
                    log.error(
                        "giving up after retries",
                        extra={"component": self.id, "attempts": attempts, "error": str(err)},
                    )
                    self._counters.drop(self.id, "retries_exhausted", rec.events - rejected)
                    return 0, 0
                delay = backoff.next_delay()
                delay = delay / 2 + self._rand() * delay / 2  # equal jitter
                self._counters.retried(self.id)
                log.warning(
                    "send failed, retrying",
                    extra={"component": self.id, "error": str(err), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                continue
            rejected += self._item_rejects()
            backoff.reset()
            return max(rec.events - rejected, 0), len(payload)

    def _item_rejects(self) -> int:
        """Count the items a sink refused one by one in its last answer (a `_bulk` with
        mapping errors): dropped for good, by reason; the rest of the payload went on."""
        result = getattr(self.sink, "last_result", None)
        if result is None or not result.rejected:
            return 0
        for reason, n in result.rejected.items():
            self._counters.drop(self.id, reason, n)
        return int(sum(result.rejected.values()))

    def _finish(self, rec: _Record, delivered: int, nbytes: int) -> None:
        if delivered:
            self._counters.sent(self.id, delivered, nbytes, time.time())
        if rec.disk is not None:
            self._disk.release(rec.disk)
            self._save_position()
        if rec.ack is not None:
            rec.ack.done()
        if not self._has_room.is_set() and self._disk.bytes <= self.policy.max_disk_bytes:
            self._has_room.set()

    # -- shutdown ------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Deliver what is queued within `timeout`; then put what memory still holds on disk,
        so it is acknowledged (its sources commit) and the next run delivers it."""
        self._stopping = True
        self._has_work.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._inflight is not None and self._inflight.disk is None:
            # Cut off mid-send (it may arrive twice): back to the queue's head, then to disk.
            self._memory.appendleft(self._inflight)
        self._inflight = None
        if self._memory:
            self._disk.new_segment()  # older than what is on disk: a segment of their own
        self._spill_memory()
        self._disk.close()
        with contextlib.suppress(Exception):
            await self.sink.close()
