"""Ship log lines to the pod's log-agent over TCP without ever slowing the caller.

`send()` only appends to a bounded in-memory queue (overflow drops the oldest line and counts
it) and wakes a background task. That task connects lazily, writes everything queued in batches,
and reconnects with a capped backoff (50 ms doubling to 1 s) when the agent is not there yet or
goes away, so lines logged before the agent came up arrive once it is up. A line whose write
failed goes back to the front of the queue; a line the kernel accepted just before the agent
vanished can still be lost (TCP gives no delivery receipt; the log-agent's own at-least-once
protocol is a later step).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from podkit.common.backoff import Backoff

log = logging.getLogger("podkit.log_shipper")

MAX_BATCH_LINES = 512
CONNECT_TIMEOUT = 1.0


def parse_agent_addr(value: str | None) -> tuple[str, int] | None:
    """'127.0.0.1:5170' -> ('127.0.0.1', 5170); '', 'off', 'none', 'false' -> None (disabled)."""
    from podkit.common.config import parse_hostport

    if value is None or value.strip().lower() in ("", "off", "none", "false", "disabled"):
        return None
    return parse_hostport(value)


class LogShipper:
    def __init__(
        self, host: str, port: int, *, max_queue: int = 10_000, backoff: Backoff | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.max_queue = max_queue
        self.sent = 0
        self.dropped = 0
        self.connected = False
        self._queue: deque[bytes] = deque()
        self._backoff = backoff or Backoff(0.05, 1.0)
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, line: bytes) -> None:
        """Queue one newline-terminated line. Never blocks, never raises."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(line)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout: float = 0.5) -> None:
        """Give queued lines up to `timeout` to reach an agent we are connected to, then stop."""
        self._closing.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                if self._closing.is_set():
                    return  # no agent to flush to: do not hold up shutdown
                await self._pause(self._backoff.next_delay())
                continue
            self._backoff.reset()
            self.connected = True
            log.info("connected to log agent", extra={"addr": f"{self.host}:{self.port}"})
            try:
                await self._pump(reader, writer)
            finally:
                self.connected = False
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 0.2)
            if self._closing.is_set() and not self._queue:
                return

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The agent never talks back: a readable EOF means it closed the connection.
        eof = asyncio.ensure_future(reader.read(1))
        try:
            while not eof.done():
                if not self._queue:
                    if self._closing.is_set():
                        return
                    self._wake.clear()
                    wake = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({wake, eof}, return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                    continue
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH_LINES))
                ]
                try:
                    writer.write(b"".join(batch))
                    await writer.drain()
                except (OSError, ConnectionError):
                    self._queue.extendleft(reversed(batch))  # not written: keep for next time
                    return
                self.sent += len(batch)
        finally:
            eof.cancel()

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)
