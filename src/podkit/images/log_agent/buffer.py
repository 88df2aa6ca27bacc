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

Full means the disk queue's files would pass max_disk_bytes with the new record: they never do.
Segments are deleted whole, once every record in them is delivered or dropped, and are
max_disk_bytes / 32 each (4 KiB at least), so space comes back in small steps. `block`
(default) makes put wait: the source stops reading, a file stays on disk where it is, a TCP
sender is slowed down. `drop_oldest` drops the oldest records until a segment goes and the new
one fits, and counts the events dropped.

A disk that cannot be written (no space left): input that can be read again (a file: the file
is the buffer) waits in put until the disk takes it, as with `block`; only input that cannot
(TCP, HTTP) is dropped, and counted. Either way the sink shows as blocked (gauge, one log line a
minute at most).
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
from podkit.images.log_agent.disk_queue import (
    HEADER_BYTES,
    MIN_SEGMENT_BYTES,
    SEGMENT_BYTES,
    DiskQueue,
    DiskRecord,
    pack,
)
from podkit.images.log_agent.event import Ack
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.sinks.base import RejectedError, RetryableError, Sink
from podkit.images.log_agent.state import StateStore
from podkit.images.log_agent.throttle import Throttle

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
    replay: bool = False  # sent again after a restart: counted apart (maybe a duplicate)


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
        segment = min(SEGMENT_BYTES, max(policy.max_disk_bytes // 32, MIN_SEGMENT_BYTES))
        self._disk = DiskQueue(directory, segment)
        saved = state.load(self._scope)
        delivered = int(saved.get("delivered", 0))
        self._sent = int(saved.get("sent", 0))  # the newest seq handed to the sink
        # new records number on from every seq used before: none can pass for an old one
        self._seq = max(self._disk.recover(delivered, self._sent), self._sent)
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
        self.blocked: str | None = None  # why input waits (or is dropped), while it does
        self._blocking = Throttle()
        self._failing = Throttle()

    # -- numbers for metrics -------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return self._disk.file_bytes

    @property
    def queued_events(self) -> int:
        inflight = self._inflight.events if self._inflight is not None else 0
        return inflight + sum(r.events for r in self._memory) + self._disk.events

    # -- intake --------------------------------------------------------------------------------

    async def put(
        self,
        payload: bytes,
        events: int,
        ack: Ack | None,
        *,
        durable: bool,
        replay: bool = False,
    ) -> None:
        """Queue a payload: in memory, or on disk (`durable` input, a full memory, or records
        on disk already, which go first). Waits while the disk part is full (`block`) or
        cannot be written; see the module docstring."""
        size = len(payload)
        packed: tuple[bytes, bool] | None = None
        while True:
            to_disk = (
                durable
                or len(self._disk)
                or (self._memory and self.memory_bytes + size > self.policy.max_memory_bytes)
            )
            if not to_disk:
                self._seq += 1
                self._memory.append(_Record(self._seq, payload, events, ack, replay=replay))
                self.memory_bytes += size
                self._unblock()
                self._has_work.set()
                return
            if packed is None:
                packed = pack(payload)
            need = HEADER_BYTES + len(packed[0])
            if self._disk.file_bytes + need > self.policy.max_disk_bytes and len(self._disk):
                if self.policy.when_full == "drop_oldest":
                    self._drop_oldest()
                    continue
                self._block("disk buffer full (max_disk_bytes)")
                await self._wait_for_room()
                continue
            try:
                self._spill_memory()
                self._disk.append(self._seq + 1, events, payload, replay=replay, packed=packed)
            except OSError as exc:
                reason = f"disk buffer cannot be written: {exc.strerror or exc}"
                self._block(reason)
                if durable:  # TCP, HTTP: nowhere to keep it, nothing to read it again from
                    self._counters.drop(self.id, "disk_error", events)
                    if ack is not None:
                        ack.done()
                    return
                await self._wait_for_room(timeout=1.0)  # the file is the buffer: wait
                continue
            self._seq += 1
            if ack is not None:
                ack.done()  # on disk: a restart delivers it
            self._unblock()
            self._has_work.set()
            return

    async def _wait_for_room(self, timeout: float | None = None) -> None:
        self._has_room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._has_room.wait(), timeout)

    def _block(self, reason: str) -> None:
        """Input waits (or is dropped): say so at once, then at most once a minute."""
        if self.blocked != reason:
            self._blocking.clear()
            self.blocked = reason
        held = self._blocking.due()
        if held is not None:
            log.warning(
                "sink input blocked",
                extra={
                    "component": self.id,
                    "reason": reason,
                    "for_s": round(time.monotonic() - self._blocking.since),
                },
            )

    def _unblock(self) -> None:
        if self.blocked is not None:
            log.info(
                "sink input flows again",
                extra={
                    "component": self.id,
                    "reason": self.blocked,
                    "after_s": round(self._blocking.clear(), 1),
                },
            )
            self.blocked = None

    def _spill_memory(self) -> None:
        """Put the record being sent and every memory record on disk, in order, and
        acknowledge them: from here on the disk holds the whole queue."""
        inflight = self._inflight
        if inflight is not None and inflight.disk is None:
            inflight.disk = self._disk.append(
                inflight.seq,
                inflight.events,
                inflight.payload,
                queued=False,
                replay=inflight.replay,
            )
            if inflight.ack is not None:
                inflight.ack.done()
                inflight.ack = None
        while self._memory:
            rec = self._memory[0]
            # may raise (a full disk): then it stays in memory, and so does the rest
            self._disk.append(rec.seq, rec.events, rec.payload, replay=rec.replay)
            self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            if rec.ack is not None:
                rec.ack.done()

    def _drop_oldest(self) -> None:
        """Drop the oldest queued record (never the one being sent: it may be arriving).
        Only called with records on disk, and then memory is empty: they spilled with it.
        Space comes back a segment at a time, so put drops until a whole segment goes."""
        taken = self._disk.take()
        if taken is not None:
            self._counters.drop(self.id, "buffer_full", taken[0].events)
            self._disk.release(taken[0])
            self._save_position()

    def _mark_sent(self, seq: int) -> None:
        """Record, before its first byte goes out, that `seq` is being sent: found on disk by
        the next run, it is counted as a replay (maybe delivered), the records after it not."""
        if seq > self._sent:
            self._sent = seq
            self._state.set(self._scope, "sent", seq)
            self._state.commit()

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
            self._mark_sent(rec.seq)
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
        return _Record(disk_rec.seq, payload, disk_rec.events, None, disk_rec, disk_rec.replay)

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
                held = self._failing.due()  # an outage: one line a minute, retries counted
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
                continue
            rejected += self._item_rejects()
            backoff.reset()
            if self._failing.since:
                log.info(
                    "sink delivers again",
                    extra={"component": self.id, "after_s": round(self._failing.clear(), 1)},
                )
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
            self._counters.sent(self.id, delivered, nbytes, time.time(), rec.replay)
        if rec.disk is not None:
            self._disk.release(rec.disk)
            self._save_position()
        if rec.ack is not None:
            rec.ack.done()
        self._has_room.set()  # a waiting put looks again (room, or a disk writable again)

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
