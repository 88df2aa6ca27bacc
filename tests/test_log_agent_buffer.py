"""A sink's buffer in-process: order, spill to disk, recovery after a crash, retries, policy.

The sink here is the test's own object implementing the Sink protocol, so the test decides when
sends fail; files and SQLite are real."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from podkit.images.log_agent.buffer import BufferPolicy, SinkBuffer
from podkit.images.log_agent.disk_queue import HEADER_BYTES, pack
from podkit.images.log_agent.event import Ack, Batch, Lines, json_lines
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.sinks.base import Batching, RetryableError, TooLargeError
from podkit.images.log_agent.state import StateStore


class ScriptedSink:
    """Takes payloads; fails while `failing` is set (with `error`, else a RetryableError)."""

    def __init__(self) -> None:
        self.id = "scripted"
        self.batching: Batching | None = None
        self.got: list[bytes] = []
        self.failing = False
        self.error: Exception | None = None
        self.sent = asyncio.Event()

    def encode(self, batch: Batch) -> bytes:
        return b"".join(e["message"].encode() + b"\n" for e in batch.events)

    async def start(self) -> None:
        return None

    async def send(self, payload: bytes) -> None:
        if self.failing:
            raise self.error or RetryableError("down")
        self.got.append(payload)
        self.sent.set()

    async def close(self) -> None:
        return None


def policy(memory: int = 1 << 20, disk: int = 1 << 24, when_full: str = "block") -> BufferPolicy:
    return BufferPolicy(memory, disk, when_full, 0.001, 0.002, 0)  # type: ignore[arg-type]


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


def payload(n: int, pad: int = 0) -> bytes:
    """Ten lines of record n, with `pad` random hex digits each (zlib saves little on them)."""
    noise = random.Random(n)
    return b"".join(
        f"record {n:04d} {noise.randbytes(pad).hex()[:pad]}\n".encode() for _ in range(10)
    )


def test_records_spilled_to_disk_survive_a_crash_in_order(tmp_path: Path) -> None:
    acked: list[int] = []

    async def first_run() -> None:
        state = StateStore(tmp_path)
        sink = ScriptedSink()
        buf = SinkBuffer(sink, policy(memory=300), tmp_path / "q", state, Counters())
        buf.start()
        await buf.put(payload(0), 10, Ack(lambda: acked.append(0)), durable=False)
        await until(lambda: sink.got)  # delivered from memory
        sink.failing = True
        for n in range(1, 8):
            ack = Ack(lambda n=n: acked.append(n))
            ack.add(1)
            await buf.put(payload(n), 10, ack, durable=False)
        # Memory holds 300 bytes: the rest went to disk, and on disk means acknowledged.
        assert buf.disk_bytes > 0 and acked[-1] == 7
        state.commit()
        # A crash: no drain, no close. The loop's tasks die with it.

    asyncio.run(first_run())

    async def second_run() -> list[bytes]:
        state = StateStore(tmp_path)
        sink = ScriptedSink()
        buf = SinkBuffer(sink, policy(), tmp_path / "q", state, Counters())
        buf.start()
        await until(lambda: len(sink.got) >= 7)
        await buf.drain(1.0)
        state.close()
        return sink.got

    got = asyncio.run(second_run())
    # Record 1 may have been in flight when the sink went down: it comes first, then the rest.
    assert got == [payload(n) for n in range(1, 8)]
    assert not list((tmp_path / "q").glob("*.seg"))  # delivered: segments deleted


def test_unexpected_send_errors_are_retried_not_fatal(tmp_path: Path) -> None:
    async def run() -> Counters:
        counters = Counters()
        sink = ScriptedSink()
        sink.failing, sink.error = True, ValueError("a bug in a sink")
        buf = SinkBuffer(sink, policy(), tmp_path / "q", StateStore(tmp_path), counters)
        buf.start()
        ack = Ack(None)
        ack.add(1)
        await buf.put(payload(1), 10, ack, durable=False)
        await until(lambda: counters.retries.get("scripted", 0) >= 3)
        sink.failing = False
        await until(lambda: sink.got)
        await buf.drain(1.0)
        return counters

    counters = asyncio.run(run())
    assert counters.events_out[("scripted", "first")] == 10


PAD = 900  # records of about 5 KiB stored: over MIN_SEGMENT_BYTES, a segment each


def test_drop_oldest_never_drops_the_record_being_sent(tmp_path: Path) -> None:
    async def run() -> tuple[ScriptedSink, Counters]:
        counters = Counters()
        sink = ScriptedSink()
        sink.failing = True
        size = len(payload(0, PAD))
        on_disk = max(len(pack(payload(n, PAD))[0]) for n in range(10)) + HEADER_BYTES
        buf = SinkBuffer(
            sink,
            # room on disk for four records, a segment each: the one being sent, three queued
            policy(memory=size, disk=4 * on_disk, when_full="drop_oldest"),
            tmp_path / "q",
            StateStore(tmp_path),
            counters,
        )
        buf.start()
        await buf.put(payload(0, PAD), 10, None, durable=False)
        await until(lambda: counters.retries.get("scripted", 0) > 0)  # 0 is being sent
        for n in range(1, 10):
            await buf.put(payload(n, PAD), 10, None, durable=False)
        sink.failing = False
        await until(lambda: buf.queued_events == 0)
        await buf.drain(1.0)
        return sink, counters

    sink, counters = asyncio.run(run())
    # 0 was being sent; 1..6 dropped oldest-first to keep 3 on disk; the newest arrive.
    assert sink.got == [payload(n, PAD) for n in (0, 7, 8, 9)]
    assert counters.dropped[("scripted", "buffer_full")] == 60


def test_lines_in_columns_encode_exactly_like_event_dicts() -> None:
    """The fast path of json_lines, on messages made of the characters JSON escaping is about
    (pretty-printed JSON and CSV lines end in `",`), gives the dict path's bytes."""
    rng = random.Random(7)
    alphabet = ['"', "\\", ",", "x", "\n", "\x01", "é", "%"]
    for trial in range(2000):
        messages = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            for _ in range(rng.randint(1, 6))
        ]
        common = {"source": "file", "file": "/var/log/a%s.log"} if trial % 2 else {}

        def batch(msgs: list[str] = messages, common: dict[str, str] = common) -> Batch:
            lines = Lines("2026-11-26T00:00:00.000000Z", msgs, "9f3c", list(range(len(msgs))))
            return Batch("file", common=dict(common), lines=lines)

        dicts = batch()
        dicts.events  # noqa: B018 (turns the columns into dicts)
        columns = batch()
        assert json_lines(columns) == json_lines(dicts), messages
        assert [json.loads(x)["message"] for x in json_lines(columns).splitlines()] == messages


# -- batching sinks (HTTP): requests joined, split, halved, several at a time ---------------------


class ItemSink(ScriptedSink):
    """A batching sink of item lines: refuses with 413 a request over `limit` bytes (and always
    one holding "huge"), refuses with 401 while `refusing`, and counts the sends in flight."""

    def __init__(self, batching: Batching, limit: int = 1 << 30) -> None:
        super().__init__()
        self.batching = batching
        self.limit = limit
        self.refusing = False
        self.hold = asyncio.Event()
        self.hold.set()
        self.in_flight = self.most_in_flight = 0

    async def send(self, payload: bytes) -> None:
        if self.refusing:
            raise RetryableError("HTTP 401: token expired", refused="HTTP 401")
        if len(payload) > self.limit or b"huge" in payload:
            raise TooLargeError("HTTP 413")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1
        await super().send(payload)


def lines(first: int, n: int) -> bytes:
    return b"".join(b"item %05d\n" % i for i in range(first, first + n))


def items_got(sink: ScriptedSink) -> list[bytes]:
    return [line for request in sink.got for line in request.splitlines()]


def run_buffer(
    tmp_path: Path, sink: ScriptedSink, puts: list[bytes], counters: Counters
) -> list[int]:
    """Put the payloads (one record each), wait for all to be delivered or dropped; the order
    in which the records were acknowledged."""
    acked: list[int] = []

    async def run() -> None:
        buf = SinkBuffer(sink, policy(), tmp_path / "q", StateStore(tmp_path), counters)
        buf.start()
        for n, data in enumerate(puts):
            ack = Ack(lambda n=n: acked.append(n))
            ack.add(1)
            await buf.put(data, data.count(b"\n"), ack, durable=False)
        await until(lambda: len(acked) == len(puts))
        await buf.drain(1.0)

    asyncio.run(run())
    return acked


def test_requests_join_small_records_and_split_large_ones_in_order(tmp_path: Path) -> None:
    sink = ItemSink(Batching(max_bytes=100, max_events=4, linger=0.05, concurrency=1))
    puts = [lines(0, 1), lines(1, 2), lines(3, 25), lines(28, 1)]  # one record of 250 bytes
    acked = run_buffer(tmp_path, sink, puts, counters := Counters())
    assert items_got(sink) == lines(0, 29).splitlines()  # each once, in order
    assert all(len(r) <= 100 and r.count(b"\n") <= 4 for r in sink.got)
    assert len(sink.got) == 8  # 29 items, 4 a request at most (10 bytes each)
    assert sorted(acked) == [0, 1, 2, 3]
    assert counters.events_out[("scripted", "first")] == 29


def test_too_large_halves_down_to_one_event_dropping_only_that_one(tmp_path: Path) -> None:
    sink = ItemSink(Batching(max_bytes=10_000, max_events=1000, linger=0, concurrency=1), 250)
    huge = b"item huge " + b"x" * 500 + b"\n"
    puts = [lines(0, 40) + huge + lines(40, 40)]  # one record, over the receiver's limit
    run_buffer(tmp_path, sink, puts, counters := Counters())
    assert items_got(sink) == lines(0, 80).splitlines()
    assert counters.dropped == {("scripted", "http_413"): 1}
    assert counters.events_out[("scripted", "first")] == 80
    assert max(len(r) for r in sink.got) <= 250


def test_several_requests_in_flight_finish_out_of_order_acks_per_record(tmp_path: Path) -> None:
    sink = ItemSink(Batching(max_bytes=10, max_events=1, linger=0, concurrency=4))
    sink.hold.clear()
    acked: list[int] = []

    async def run() -> None:
        buf = SinkBuffer(sink, policy(), tmp_path / "q", StateStore(tmp_path), Counters())
        buf.start()
        for n in range(8):
            ack = Ack(lambda n=n: acked.append(n))
            ack.add(1)
            await buf.put(lines(n, 1), 1, ack, durable=False)
        await until(lambda: sink.in_flight == 4)
        assert acked == [] and buf.queued_events == 8
        sink.hold.set()
        await until(lambda: len(acked) == 8)
        await buf.drain(1.0)

    asyncio.run(run())
    assert sink.most_in_flight == 4
    assert sorted(items_got(sink)) == lines(0, 8).splitlines()


def test_a_refusing_receiver_blocks_the_sink_and_nothing_is_dropped(tmp_path: Path) -> None:
    sink = ItemSink(Batching(max_bytes=1000, max_events=100, linger=0, concurrency=2))
    sink.refusing = True
    counters = Counters()

    async def run() -> None:
        buf = SinkBuffer(sink, policy(), tmp_path / "q", StateStore(tmp_path), counters)
        buf.start()
        await buf.put(lines(0, 5), 5, None, durable=False)
        await until(lambda: counters.retries.get("scripted", 0) >= 3)
        assert buf.refused == "receiver refuses: HTTP 401"
        assert buf.blocked_reasons() == ["receiver refuses: HTTP 401"]
        sink.refusing = False  # the credentials were fixed
        await until(lambda: buf.queued_events == 0)
        assert buf.refused is None and buf.blocked_reasons() == []
        await buf.drain(1.0)

    asyncio.run(run())
    assert items_got(sink) == lines(0, 5).splitlines()
    assert counters.dropped == {}
