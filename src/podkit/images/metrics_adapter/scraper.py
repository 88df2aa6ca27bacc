"""The thin asyncio shell: GET the app's status, decode, map, record (cache.py decides the rest).

One scrape at a time: page requests that arrive while one runs wait for it (single flight), and
every scrape ends within `timeout`, so the page never waits longer than that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from podkit import __version__
from podkit.images.metrics_adapter.cache import Outcome, ScrapeCache, View
from podkit.images.metrics_adapter.decode import DecodeError, Format, decode
from podkit.images.metrics_adapter.mapping import (
    Family,
    Problem,
    Rule,
    auto_families,
    map_document,
)

log = logging.getLogger("metrics-adapter")


class ScrapeError(Exception):
    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Reply:
    content_type: str
    body: bytes


class _ResponseParser:
    """httptools callbacks: status, Content-Type and the body (within max_bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            raise ScrapeError("too_large", f"status body larger than {self.max_bytes} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ScrapeError):
                raise cause from None
            raise ScrapeError("http_error", f"not an HTTP response: {exc}") from None
        except httptools.HttpParserError as exc:
            raise ScrapeError("http_error", f"not an HTTP response: {exc}") from None


async def fetch(url: str, headers: dict[str, str], max_bytes: int) -> Reply:
    """GET `url` (http://) with Connection: close; raises ScrapeError with the result kind."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise ScrapeError("connect_error", f"cannot connect to {host}:{port}: {exc}") from None
    try:
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc.rsplit('@', 1)[-1]}",
            f"User-Agent: podkit-metrics-adapter/{__version__}",
            "Accept: application/json, text/plain;q=0.9, */*;q=0.5",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = _ResponseParser(max_bytes)
        while not response.complete:
            try:
                chunk = await reader.read(65536)
            except OSError as exc:
                raise ScrapeError("http_error", f"connection broken: {exc}") from None
            if not chunk:
                break
            response.feed(chunk)
        if not response.complete:
            # Only a body without Content-Length or chunking ends at EOF.
            framed = "content-length" in response.headers or "transfer-encoding" in response.headers
            if not response.headers_done or framed:
                raise ScrapeError("http_error", "the app closed the connection mid-response")
        status = response.parser.get_status_code()
        body = b"".join(response.body)
    finally:
        writer.close()
    if not 200 <= status < 300:
        raise ScrapeError("http_error", f"the app answered {status}")
    return Reply(response.headers.get("content-type", ""), body)


class Scraper:
    def __init__(
        self,
        *,
        url: str,
        headers: dict[str, str],
        fmt: Format,
        timeout: float,
        max_bytes: int,
        rules: Sequence[Rule],
        cache: ScrapeCache,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.headers = headers
        self.fmt = fmt
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.rules = list(rules)
        self.cache = cache
        self.clock = clock
        self._running: asyncio.Task[None] | None = None
        self._reported: set[tuple[str, str]] = set()  # mapping problems already logged

    async def view(self) -> View:
        """The page's state now, scraping first unless the last result is fresh enough."""
        if not self.cache.fresh(self.clock()):
            if self._running is None or self._running.done():
                self._running = asyncio.get_running_loop().create_task(self._scrape())
            # shield: a page request that goes away must not cancel the others' scrape
            await asyncio.shield(self._running)
        return self.cache.view(self.clock())

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()

    async def _scrape(self) -> None:
        started = self.clock()
        was_up = self.cache.last is None or self.cache.last.result == "ok"
        try:
            async with asyncio.timeout(self.timeout):
                reply = await fetch(self.url, self.headers, self.max_bytes)
            data = decode(reply.body, reply.content_type, self.fmt)
            families, problems = self._map(data)
        except TimeoutError:
            outcome = self._outcome("timeout", started, error=f"no answer within {self.timeout}s")
        except ScrapeError as exc:
            outcome = self._outcome(exc.result, started, error=str(exc))
        except DecodeError as exc:
            outcome = self._outcome("bad_body", started, error=str(exc))
        except Exception as exc:  # a bug here must still leave a page (up 0), not a 500
            log.exception("scrape crashed", extra={"url": self.url})
            outcome = self._outcome("bad_body", started, error=f"internal error: {exc!r}")
        else:
            outcome = self._outcome(
                "ok", started, families=tuple(families), problems=tuple(problems)
            )
            if not was_up:
                log.info("scrape recovered", extra={"url": self.url})
            self._log_problems(problems)
        self.cache.record(outcome)
        if outcome.result != "ok" and (was_up or log.isEnabledFor(logging.DEBUG)):
            # Once per outage at warning level: a dead app must not flood the log.
            log.log(
                logging.WARNING if was_up else logging.DEBUG,
                "scrape failed",
                extra={"url": self.url, "result": outcome.result, "error": outcome.error},
            )

    def _map(self, data: Any) -> tuple[list[Family], list[Problem]]:
        if not self.rules:
            return auto_families(data), []
        return map_document(self.rules, data)

    def _outcome(self, result: str, started: float, **fields: Any) -> Outcome:
        now = self.clock()
        return Outcome(result, now - started, now, time.time(), **fields)

    def _log_problems(self, problems: Sequence[Problem]) -> None:
        if len(self._reported) > 10_000:  # reasons quote values: keep the memory bounded
            self._reported.clear()
        for problem in problems:
            key = (problem.metric, problem.reason)
            if key not in self._reported:
                self._reported.add(key)
                log.warning(
                    "cannot read a metric from the app's status",
                    extra={"metric": problem.metric, "reason": problem.reason},
                )
