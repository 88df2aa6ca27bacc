"""Active health checks: the asyncio shell around `health.HealthThresholds`.

One task per cluster probes every endpoint once per interval, all endpoints of a round at once.
A probe is an HTTP GET whose status line must show an expected status, or a TCP connect; any
error or timeout is a failure. The thresholds (rise/fall) decide when a host flips, and only a
flip is reported, through `on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from podkit.common.config import format_hostport
from podkit.proxy.config import HealthCheck, parse_status_range
from podkit.proxy.health import HealthThresholds

__all__ = ["USER_AGENT", "ActiveHealthChecker", "CheckTarget", "status_matches"]

log = logging.getLogger("podkit.proxy")

USER_AGENT = "podkit-health-check"
MAX_STATUS_LINE = 8192  # bytes; a longer first line is not HTTP and fails the check


class CheckTarget(Protocol):
    """What a check needs of an endpoint (cluster.UpstreamHost has it)."""

    @property
    def key(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def name(self) -> str: ...


def status_matches(status: int, ranges: Sequence[str]) -> bool:
    """Is `status` within one of `ranges` ("NNN" or "NNN-NNN", as in HealthCheck)?"""
    for item in ranges:
        low, high = parse_status_range(item)
        if low <= status <= high:
            return True
    return False


def parse_status_line(line: bytes) -> int:
    """b'HTTP/1.1 503 Service Unavailable\\r\\n' -> 503; ValueError if it is no status line."""
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    return int(parts[1])


T = TypeVar("T", bound=CheckTarget)


class ActiveHealthChecker(Generic[T]):
    """Checks `hosts()` every `config.interval` (the first round at once) and calls
    `on_change(host, healthy)` when a host's state flips. New hosts start healthy (HAProxy's
    default); hosts that leave `hosts()` are forgotten, so one that comes back starts afresh.

    With `ssl_context`, checks speak TLS; the SNI name (and the name the certificate is checked
    against) is `server_name`, or else the host's configured name.
    """

    def __init__(
        self,
        config: HealthCheck,
        hosts: Callable[[], Sequence[T]],
        on_change: Callable[[T, bool], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.config = config
        self._hosts = hosts
        self._on_change = on_change
        self._ssl = ssl_context
        self._server_name = server_name
        self._ranges = [parse_status_range(item) for item in config.expected_statuses]
        self._state: dict[str, HealthThresholds] = {}
        self._task: asyncio.Task[None] | None = None
        self.checks_total = 0  # metric: checks made
        self.failures_total = 0  # metric: checks failed

    def is_healthy(self, key: str) -> bool:
        """The host's state as of the last round (True for a host not checked yet)."""
        state = self._state.get(key)
        return state is None or state.healthy

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("health checker already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-check")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        while True:
            started = loop.time()
            await self.check_round()
            delay = config.interval + (random.uniform(0, config.jitter) if config.jitter else 0.0)
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    async def check_round(self) -> None:
        """Check every current host once, concurrently, and report the flips."""
        try:
            hosts = list(self._hosts())
        except Exception:
            log.exception("health check: could not list the hosts")
            return
        hosts = list({h.key: h for h in hosts}.values())  # one check per address
        config = self.config
        old = self._state
        self._state = {
            h.key: old.get(h.key)
            or HealthThresholds(config.healthy_threshold, config.unhealthy_threshold)
            for h in hosts
        }
        if not hosts:
            return
        results = await asyncio.gather(*(self._check(h) for h in hosts))
        for host, ok in zip(hosts, results, strict=True):
            self.checks_total += 1
            if not ok:
                self.failures_total += 1
            state = self._state.get(host.key)
            if state is None:  # forgotten meanwhile by an overlapping check_round call
                continue
            changed = state.record(ok)
            if changed is not None:
                try:
                    self._on_change(host, changed)
                except Exception:
                    log.exception("health check: on_change failed for %s", host.key)

    # -- one check --------------------------------------------------------------------------

    async def _check(self, host: CheckTarget) -> bool:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.config.timeout):
                reader, writer = await asyncio.open_connection(
                    host.ip,
                    host.port,
                    ssl=self._ssl,
                    server_hostname=(self._server_name or host.name) if self._ssl else None,
                    limit=MAX_STATUS_LINE,
                )
                if self.config.type == "tcp":
                    return True
                writer.write(self._request(host))
                await writer.drain()
                line = await reader.readuntil(b"\n")
            status = parse_status_line(line)
            if any(low <= status <= high for low, high in self._ranges):
                return True
            log.debug("health check %s: status %d not expected", host.key, status)
            return False
        except TimeoutError:
            log.debug("health check %s: timed out after %g s", host.key, self.config.timeout)
            return False
        except Exception as exc:  # anything at all is a failed check, never a dead loop
            log.debug("health check %s: %s: %s", host.key, type(exc).__name__, exc)
            return False
        finally:
            if writer is not None:
                writer.transport.abort()  # no TLS close_notify dance; the answer is in

    def _request(self, host: CheckTarget) -> bytes:
        config = self.config
        host_header = config.host or format_hostport(host.name, host.port)
        return (
            f"GET {config.path} HTTP/1.1\r\n"
            f"Host: {host_header}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
