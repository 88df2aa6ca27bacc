"""TCP source: newline-delimited text or JSON lines (Fluent Bit `tcp`, Vector `socket`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from podkit.common.clock import rfc3339
from podkit.images.log_agent.event import Batch
from podkit.images.log_agent.lines import LineReader
from podkit.images.log_agent.metrics import Counters
from podkit.images.log_agent.pipeline import Ingest

log = logging.getLogger("log-agent.tcp")
READ_SIZE = 64 * 1024


class TcpSource:
    def __init__(
        self,
        id: str,
        host: str,
        port: int,
        ingest: Ingest,
        counters: Counters,
        *,
        max_line_bytes: int,
        keep_empty: bool = False,
    ) -> None:
        self.id = id
        self._keep_empty = keep_empty
        self._host = host
        self._port = port
        self._ingest = ingest
        self._counters = counters
        self._max_line = max_line_bytes
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    def describe(self) -> str:
        return f"{self._host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_address=True
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        # the file source's splitter; offsets unused
        splitter = LineReader(self._max_line, keep_empty=self._keep_empty)
        counters = self._counters
        try:
            while True:
                try:
                    data = await reader.read(READ_SIZE)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                _, lines = splitter.feed(data)
                counters.lines(self.id, splitter.counts.take())
                await self._ingest(self._batch(lines, len(data)))
        finally:
            # The sender closed the connection: its last line needs no newline to count.
            _, rest = splitter.flush()
            counters.lines(self.id, splitter.counts.take())
            if rest:
                await self._ingest(self._batch(rest, 0))
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    def _batch(self, lines: list[str], nbytes: int) -> Batch:
        now = rfc3339(time.time())
        events = [{"time": now, "message": line} for line in lines]
        # Not replayable: a TCP sender cannot be asked again, so buffers keep it on disk.
        return Batch(self.id, events, {"source": "tcp"}, nbytes, replayable=False)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing each connection ends its read loop, which flushes its partial line.
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._handlers, return_exceptions=True), timeout=0.5
                )
