"""A sink's buffer and its senders: memory first, then disk, then the `when_full` policy.

    put(payload) --> memory queue --(over max_memory_bytes, or not replayable)--> disk queue
                                   \\--> senders: requests, send (delivery.py), acknowledge

Ordering: every record has a sequence number and is taken for sending in that order. The first
record that must go to disk (memory full, or input that cannot be read again) takes everything in
memory with it, the records being sent included; newer records then go to disk until it drains.

Requests: a sink without `batching` gets one record a request, one request at a time. A batching
sink (HTTP) gets requests of whole item lines from as many records as fit in `max_bytes` and
`max_events` (a larger record is split into several), waiting up to `linger` for more while
memory holds less than a full request, with up to `concurrency` requests in flight. Requests
may finish out of order: acknowledgements and disk releases are per record, done when all of
its parts are; a crash sends again what was in flight (at most `concurrency` requests).

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
from podkit.images.log_agent import items
from podkit.images.log_agent.delivery import Sender
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
from podkit.images.log_agent.sinks.base import Sink
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
    queued_at: float = 0.0  # monotonic, when put in memory (for linger)
    parts_left: int = 0  # parts not yet delivered, once taken for sending
    packed: tuple[bytes, bool] | None = None  # pack(payload), once needed for the disk

    def packed_payload(self) -> tuple[bytes, bool]:
        if self.packed is None:
            self.packed = pack(self.payload)
        return self.packed


@dataclass(slots=True)
class _Part:
    """A run of one record's items in a request."""

    record: _Record
    payload: bytes
    events: int


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
        self._memory: deque[_Record] = deque()
        self.memory_bytes = 0
        self._memory_events = 0
        self._taken: dict[int, _Record] = {}  # out of the queues, parts being sent (by seq)
        self._parts: deque[_Part] = deque()  # parts of taken records not yet in a request
        self._sender = Sender(sink, policy.max_attempts, counters, rand)
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
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.blocked: str | None = None  # why input waits (or is dropped), while it does
        self._blocking = Throttle()

    # -- numbers for metrics -------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return self._disk.file_bytes

    @property
    def queued_events(self) -> int:
        taken = sum(r.events for r in self._taken.values())
        return taken + self._memory_events + self._disk.events

    @property
    def refused(self) -> str | None:
        """Why the receiver refuses this sink's requests (HTTP 401...), while it does."""
        return self._sender.refused

    def blocked_reasons(self) -> list[str]:
        return [r for r in (self.blocked, self.refused) if r]

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
                rec = _Record(
                    self._seq, payload, events, ack, replay=replay, queued_at=time.monotonic()
                )
                self._memory.append(rec)
                self.memory_bytes += size
                self._memory_events += events
                self._unblock()
                self._has_work.set()
                return
            if packed is None:
                packed = pack(payload)
            # What goes to disk now: this record, and what memory holds (it spills first).
            need = HEADER_BYTES + len(packed[0]) + self._spill_bytes()
            full = self._disk.file_bytes + need > self.policy.max_disk_bytes
            if full and (len(self._disk) or self._memory):
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
        """Put the records being sent and every memory record on disk, in order, and
        acknowledge them: from here on the disk holds the whole queue."""
        for taken in sorted(self._taken.values(), key=lambda r: r.seq):
            if taken.disk is None:
                taken.disk = self._disk.append(
                    taken.seq,
                    taken.events,
                    taken.payload,
                    queued=False,
                    replay=taken.replay,
                    packed=taken.packed_payload(),
                )
                if taken.ack is not None:
                    taken.ack.done()
                    taken.ack = None
        while self._memory:
            rec = self._memory[0]
            # may raise (a full disk): then it stays in memory, and so does the rest
            self._disk.append(
                rec.seq, rec.events, rec.payload, replay=rec.replay, packed=rec.packed_payload()
            )
            self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            self._memory_events -= rec.events
            if rec.ack is not None:
                rec.ack.done()

    def _spill_bytes(self) -> int:
        """What spilling memory would write. Memory holds records only until the first goes to
        disk, so this packs a few records once (kept for the spill), not on every put."""
        records = [*self._memory, *(r for r in self._taken.values() if r.disk is None)]
        return sum(HEADER_BYTES + len(r.packed_payload()[0]) for r in records)

    def _drop_oldest(self) -> None:
        """Drop the oldest queued record (never one being sent: it may be arriving): on disk,
        or in memory when the disk holds none (their segments wait for records being sent).
        Space on disk comes back a segment at a time, so put drops until a whole one goes."""
        taken = self._disk.take()
        if taken is not None:
            self._counters.drop(self.id, "buffer_full", taken[0].events)
            self._disk.release(taken[0])
            self._save_position()
            return
        if self._memory:
            rec = self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            self._memory_events -= rec.events
            self._counters.drop(self.id, "buffer_full", rec.events)
            if rec.ack is not None:
                rec.ack.done()
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
        if self._taken:
            outstanding.append(min(self._taken))
        seqs = [seq for seq in outstanding if seq is not None]
        self._state.set(self._scope, "delivered", min(seqs) - 1 if seqs else self._seq)

    # -- delivery ------------------------------------------------------------------------------

    def start(self) -> None:
        batching = self.sink.batching
        senders = batching.concurrency if batching is not None else 1
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_loop()) for _ in range(senders)]

    async def _send_loop(self) -> None:
        backoff = Backoff(self.policy.initial_backoff, self.policy.max_backoff)
        while True:
            try:
                parts = await self._next_request()
            except OSError as exc:  # a segment unreadable for now: try again, do not die
                log.error(
                    "cannot read the disk buffer", extra={"component": self.id, "error": str(exc)}
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            if parts is None:
                return
            payload = b"".join(p.payload for p in parts)
            events = sum(p.events for p in parts)
            self._mark_sent(max(p.record.seq for p in parts))
            dropped = await self._sender.send(backoff, payload, events)
            try:
                self._request_done(parts, events - dropped, len(payload))
            except OSError as exc:  # e.g. a segment that cannot be deleted: it is delivered
                log.error(
                    "buffer bookkeeping failed", extra={"component": self.id, "error": str(exc)}
                )

    async def _next_request(self) -> list[_Part] | None:
        """The parts of the next request; None once stopping with nothing left."""
        while True:
            wait = self._linger_left()
            if wait > 0:
                self._has_work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._has_work.wait(), wait)
                continue
            parts = self._take_parts()
            if parts:
                return parts
            if self._stopping:
                return None
            self._has_work.clear()
            await self._has_work.wait()

    def _linger_left(self) -> float:
        """Seconds to wait for more before sending what memory holds: while it holds less than
        a full request and the oldest of it is younger than `linger`."""
        batching = self.sink.batching
        if batching is None or not batching.linger or self._stopping:
            return 0.0
        if self._parts or len(self._disk) or not self._memory:
            return 0.0  # a backlog (or nothing at all): no reason to wait
        if self._memory_events >= batching.max_events or self.memory_bytes >= self._max_bytes:
            return 0.0
        return self._memory[0].queued_at + batching.linger - time.monotonic()

    @property
    def _max_bytes(self) -> int:
        return self._sender.max_bytes

    def _take_parts(self) -> list[_Part]:
        """As many parts from the head of the queue as fit in one request."""
        batching = self.sink.batching
        parts: list[_Part] = []
        size = events = 0
        while True:
            if not self._parts and not self._take_record():
                return parts
            part = self._parts[0]
            if parts and (
                batching is None
                or size + len(part.payload) > self._max_bytes
                or events + part.events > batching.max_events
            ):
                return parts
            self._parts.popleft()
            parts.append(part)
            size += len(part.payload)
            events += part.events

    def _take_record(self) -> bool:
        """Take the oldest record out of the queues, in parts that each fit in a request."""
        if self._memory:
            rec = self._memory.popleft()
            self.memory_bytes -= len(rec.payload)
            self._memory_events -= rec.events
        else:
            taken = self._disk.take()
            if taken is None:
                return False
            disk_rec, payload = taken
            rec = _Record(disk_rec.seq, payload, disk_rec.events, None, disk_rec, disk_rec.replay)
        batching = self.sink.batching
        runs = [(rec.payload, rec.events)]
        if batching is not None and rec.payload:
            runs = items.split(rec.payload, self._max_bytes, batching.max_events)
        rec.parts_left = len(runs)
        self._taken[rec.seq] = rec
        self._parts.extend(_Part(rec, payload, n) for payload, n in runs)
        return True

    def _request_done(self, parts: list[_Part], delivered: int, nbytes: int) -> None:
        """Count what arrived (first deliveries, then replays) and finish the records whose
        parts are all done."""
        replays = sum(p.events for p in parts if p.record.replay)
        first = max(delivered - replays, 0)
        now = time.time()
        if first:
            self._counters.sent(self.id, first, nbytes, now)
        if delivered - first:
            self._counters.sent(self.id, delivered - first, 0 if first else nbytes, now, True)
        for part in parts:
            rec = part.record
            rec.parts_left -= 1
            if not rec.parts_left and self._taken.pop(rec.seq, None) is not None:
                self._finish(rec)

    def _finish(self, rec: _Record) -> None:
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
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Cut off mid-send (they may arrive twice): back to the queue's head, then to disk. A
        # record on disk already stays there, not released: the next run sends it.
        for rec in sorted(self._taken.values(), key=lambda r: r.seq, reverse=True):
            if rec.disk is None:
                self._memory.appendleft(rec)
                self.memory_bytes += len(rec.payload)
                self._memory_events += rec.events
        self._taken.clear()
        self._parts.clear()
        if self._memory:
            self._disk.new_segment()  # older than what is on disk: a segment of their own
        self._spill_memory()
        self._disk.close()
        with contextlib.suppress(Exception):
            await self.sink.close()
