"""Active health checks against real sockets on 127.0.0.1: backends written here with asyncio,
small intervals, and polling with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from podkit.proxy.config import HealthCheck, OutlierDetection, RetryBudgetConfig
from podkit.proxy.health import OutlierDetector, RetryBudget
from podkit.proxy.health_check import (
    USER_AGENT,
    ActiveHealthChecker,
    CheckTarget,
    parse_status_line,
    status_matches,
)


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


async def until(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Host:
    ip: str
    port: int
    name: str = "backend.test"

    @property
    def key(self) -> str:
        return f"{self.ip}:{self.port}"


class Backend:
    """A tiny HTTP server: answers every request with `status` (or the raw `reply`), or with
    nothing at all while `hang` is set. `events`, which several backends may share, logs
    ("request", port) and, for hung connections, ("closed", port) when the client gives up."""

    def __init__(
        self,
        status: int = 200,
        *,
        hang: bool = False,
        reply: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        events: list[tuple[str, int]] | None = None,
    ) -> None:
        self.status = status
        self.hang = hang
        self.reply = reply
        self.tls = tls
        self.events = events if events is not None else []
        self.requests: list[bytes] = []
        self.answered: list[int] = []
        self.port = 0

    async def __aenter__(self) -> Backend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def host(self, name: str = "backend.test") -> Host:
        return Host("127.0.0.1", self.port, name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            self.events.append(("request", self.port))
            if self.hang:
                await reader.read()  # until the checker gives up and closes
                self.events.append(("closed", self.port))
                return
            if self.reply is not None:
                writer.write(self.reply)
            else:
                self.answered.append(self.status)
                writer.write(
                    f"HTTP/1.1 {self.status} Whatever\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(**fields: Any) -> HealthCheck:
    return HealthCheck.model_validate(fields)


class Changes(list[tuple[str, bool]]):
    """on_change that remembers (key, healthy)."""

    def __call__(self, host: CheckTarget, healthy: bool) -> None:
        self.append((host.key, healthy))


# -- the loop: thresholds over real checks ------------------------------------------------------


@async_test
async def test_fall_after_unhealthy_threshold_failures_and_rise_after_healthy_threshold() -> None:
    async with Backend(200) as backend:
        host = backend.host()
        seen: list[tuple[bool, list[int]]] = []  # each flip, with what the backend had answered
        checker = ActiveHealthChecker(
            check(interval=0.05, timeout=0.05, unhealthy_threshold=3, healthy_threshold=2),
            lambda: [host],
            lambda h, ok: seen.append((ok, list(backend.answered))),
        )
        checker.start()
        try:
            await until(lambda: len(backend.answered) >= 3, "three passing checks")
            assert seen == []  # a new host starts healthy and passing keeps it so
            backend.status = 503
            await until(lambda: seen, "the host to go unhealthy")
            healthy, answered = seen[0]
            assert not healthy
            assert answered[-4:] == [200, 503, 503, 503]  # exactly three failures in a row
            assert not checker.is_healthy(host.key)

            backend.status = 200
            await until(lambda: len(seen) == 2, "the host to come back")
            healthy, answered = seen[1]
            assert healthy
            assert answered[-3:] == [503, 200, 200]  # exactly two passes in a row
            assert checker.is_healthy(host.key)
        finally:
            await checker.stop()
    assert checker.checks_total == len(backend.answered)
    assert checker.failures_total == backend.answered.count(503)


@async_test
async def test_one_failure_between_passes_does_not_take_the_host_out() -> None:
    async with Backend(200) as backend:
        host = backend.host()
        changes = Changes()
        checker = ActiveHealthChecker(check(unhealthy_threshold=2), lambda: [host], changes)
        for status in (503, 200, 503, 200, 503):
            backend.status = status
            await checker.check_round()
        assert changes == [] and checker.failures_total == 3
        await checker.check_round()  # the second 503 in a row
        assert changes == [(host.key, False)]


@async_test
async def test_tcp_check_marks_a_closed_port_unhealthy_and_an_open_one_healthy() -> None:
    async with Backend(hang=True) as listening:
        up = listening.host()
        down = Host("127.0.0.1", closed_port())
        changes = Changes()
        checker = ActiveHealthChecker(
            check(type="tcp", interval=0.05, timeout=0.05, unhealthy_threshold=2),
            lambda: [up, down],
            changes,
        )
        checker.start()
        try:
            await until(lambda: changes, "the closed port to go unhealthy")
            await until(lambda: checker.checks_total >= 10, "more rounds")
        finally:
            await checker.stop()
    assert changes == [(down.key, False)]
    assert checker.is_healthy(up.key) and not checker.is_healthy(down.key)
    assert checker.failures_total == checker.checks_total // 2  # only the closed port fails
    assert listening.requests == []  # a tcp check sends nothing


@async_test
async def test_a_server_that_never_answers_fails_by_timeout() -> None:
    async with Backend(hang=True) as backend:
        host = backend.host()
        changes = Changes()
        checker = ActiveHealthChecker(
            check(interval=0.05, timeout=0.05, unhealthy_threshold=3), lambda: [host], changes
        )
        checker.start()
        try:
            await until(lambda: changes, "the silent host to go unhealthy")
        finally:
            await checker.stop()
    assert changes == [(host.key, False)]
    assert checker.failures_total >= 3
    assert len(backend.requests) >= 3  # it was asked and said nothing
    assert backend.answered == []


@async_test
async def test_hosts_of_a_round_are_checked_at_once() -> None:
    events: list[tuple[str, int]] = []
    backends = [Backend(hang=True, events=events) for _ in range(3)]
    for b in backends:
        await b.__aenter__()
    try:
        checker = ActiveHealthChecker(
            check(interval=0.5, timeout=0.5), lambda: [b.host() for b in backends], Changes()
        )
        await checker.check_round()
        await until(lambda: len(events) == 6, "every hung connection to be closed")
    finally:
        for b in backends:
            await b.__aexit__()
    # One after another, the first connection would be closed before the second request came.
    assert [kind for kind, _ in events[:3]] == ["request"] * 3
    assert checker.failures_total == 3


@async_test
async def test_the_first_round_runs_at_once_and_stop_ends_the_task() -> None:
    async with Backend(200) as backend:
        host = backend.host()
        checker = ActiveHealthChecker(check(interval=3600, timeout=1), lambda: [host], Changes())
        checker.start()
        with pytest.raises(RuntimeError, match="already started"):
            checker.start()
        await until(lambda: checker.checks_total == 1, "the first round")
        await checker.stop()
        await checker.stop()  # a second stop is harmless
        assert len(backend.answered) == 1 and checker.failures_total == 0


@async_test
async def test_removed_hosts_are_forgotten_and_start_healthy_when_they_come_back() -> None:
    down = Host("127.0.0.1", closed_port())
    hosts: list[Host] = [down]
    changes = Changes()
    checker = ActiveHealthChecker(check(type="tcp", unhealthy_threshold=1), lambda: hosts, changes)
    await checker.check_round()
    assert changes == [(down.key, False)]
    hosts.clear()
    await checker.check_round()
    assert checker.is_healthy(down.key)  # forgotten
    hosts.append(down)
    await checker.check_round()  # back, healthy, and the one failure takes it out again
    assert changes == [(down.key, False), (down.key, False)]
    assert checker.checks_total == 2


@async_test
async def test_errors_in_the_callbacks_do_not_stop_the_checks() -> None:
    async with Backend(503) as backend:
        host = backend.host()
        calls = 0

        def hosts() -> list[Host]:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("hosts exploded")
            return [host]

        def on_change(h: CheckTarget, healthy: bool) -> None:
            raise RuntimeError("on_change exploded")

        checker = ActiveHealthChecker(
            check(interval=0.02, timeout=0.02, unhealthy_threshold=1), hosts, on_change
        )
        checker.start()
        try:
            await until(lambda: checker.checks_total >= 3, "checks after the errors")
        finally:
            await checker.stop()
        assert calls > 3 and not checker.is_healthy(host.key)


# -- the HTTP request and response ---------------------------------------------------------------


@async_test
async def test_http_request_uses_path_and_host_header() -> None:
    async with Backend(200) as backend:
        host = backend.host("api.internal")
        default = ActiveHealthChecker(check(), lambda: [host], Changes())
        custom = ActiveHealthChecker(
            check(path="/healthz?full=1", host="status.example"), lambda: [host], Changes()
        )
        await default.check_round()
        await custom.check_round()
    assert backend.requests == [
        f"GET / HTTP/1.1\r\nHost: api.internal:{backend.port}\r\n"
        f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n".encode(),
        b"GET /healthz?full=1 HTTP/1.1\r\nHost: status.example\r\n"
        b"User-Agent: podkit-health-check\r\nConnection: close\r\n\r\n",
    ]
    assert default.failures_total == custom.failures_total == 0


@pytest.mark.parametrize(
    ("status", "expected", "ok"),
    [
        (200, ["200-399"], True),
        (302, ["200-399"], True),
        (404, ["200-399"], False),
        (404, ["404", "500-503"], True),
        (503, ["404", "500-503"], True),
        (504, ["404", "500-503"], False),
        (200, ["404", "500-503"], False),
    ],
)
def test_expected_statuses_decide_over_real_responses(
    status: int, expected: list[str], ok: bool
) -> None:
    async def run() -> None:
        async with Backend(status) as backend:
            host = backend.host()
            checker = ActiveHealthChecker(
                check(expected_statuses=expected, unhealthy_threshold=1),
                lambda: [host],
                Changes(),
            )
            await checker.check_round()
            assert backend.answered == [status]
            assert checker.is_healthy(host.key) is ok

    asyncio.run(run())


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP
        b"HTTP/1.1 2000 OK\r\n\r\n",  # not a status
        b"HTTP/1.1 200",  # closed before the line ended
        b"",  # closed without a word
        b"HTTP/1.1 200 " + b"x" * 20000 + b"\r\n",  # an endless status line
    ],
)
def test_a_reply_that_is_not_an_http_status_line_fails(reply: bytes) -> None:
    async def run() -> None:
        async with Backend(reply=reply) as backend:
            host = backend.host()
            checker = ActiveHealthChecker(check(unhealthy_threshold=1), lambda: [host], Changes())
            await checker.check_round()
            assert checker.failures_total == 1 and not checker.is_healthy(host.key)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("status", "ranges", "ok"),
    [
        (200, ["200"], True),
        (201, ["200"], False),
        (200, ["200-399"], True),
        (399, ["200-399"], True),
        (400, ["200-399"], False),
        (199, ["200-399"], False),
        (503, ["200", "500-503"], True),
        (504, ["200", "500-503"], False),
        (204, ["100-199", "204"], True),
    ],
)
def test_status_matches(status: int, ranges: list[str], ok: bool) -> None:
    assert status_matches(status, ranges) is ok


def test_parse_status_line() -> None:
    assert parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\n") == 503
    assert parse_status_line(b"HTTP/1.0 200\r\n") == 200
    for bad in (b"HTTP/2 200 OK\r\n", b"HTTP/1.1 20 OK\r\n", b"HTTP/1.1 abc\r\n", b"200 OK\r\n"):
        with pytest.raises(ValueError, match="not an HTTP status line"):
            parse_status_line(bad)


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for backend.test: (cert, key)."""
    assert shutil.which("openssl"), "the Makefile installs openssl (DEBS)"
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=backend.test",
         "-addext", "subjectAltName=DNS:backend.test",
         "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


@async_test
async def test_https_check_sends_sni_and_verifies_the_certificate(
    certificate: tuple[Path, Path],
) -> None:
    server_names: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certificate)
    server_ctx.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with Backend(204, tls=server_ctx) as backend:
        host = backend.host("backend.test")
        good = ActiveHealthChecker(check(), lambda: [host], Changes(), ssl_context=trusting)
        await good.check_round()
        assert good.failures_total == 0
        assert server_names == ["backend.test"]
        assert backend.requests[0].startswith(
            f"GET / HTTP/1.1\r\nHost: backend.test:{backend.port}\r\n".encode()
        )

        # A name the certificate does not carry, or a CA the client does not trust, fails.
        for ctx, name in ((trusting, "other.test"), (ssl.create_default_context(), None)):
            changes = Changes()
            bad = ActiveHealthChecker(
                check(unhealthy_threshold=1),
                lambda: [host],
                changes,
                ssl_context=ctx,
                server_name=name,
            )
            await bad.check_round()
            assert changes == [(host.key, False)]
    assert backend.answered == [204]


# -- config --------------------------------------------------------------------------------------


def test_health_check_defaults_and_units() -> None:
    hc = HealthCheck()
    assert (hc.type, hc.path, hc.host, hc.expected_statuses) == ("http", "/", None, ["200-399"])
    assert (hc.interval, hc.timeout, hc.jitter) == (5.0, 1.0, 0.0)
    assert (hc.healthy_threshold, hc.unhealthy_threshold) == (2, 3)
    hc = check(interval="2s", timeout="250ms", jitter="100ms", expected_statuses=[200, "301-302"])
    assert (hc.interval, hc.timeout, hc.jitter) == (2.0, 0.25, 0.1)
    assert hc.expected_statuses == ["200", "301-302"]


@pytest.mark.parametrize(
    ("fields", "field", "error"),
    [
        ({"expected_statuses": ["2xx"]}, "expected_statuses", "'2xx'"),
        ({"expected_statuses": ["200", "500-400"]}, "expected_statuses", "'500-400'"),
        ({"expected_statuses": ["99"]}, "expected_statuses", "'99'"),
        ({"expected_statuses": ["600"]}, "expected_statuses", "'600'"),
        ({"expected_statuses": []}, "expected_statuses", "at least 1 item"),
        ({"timeout": 2, "interval": 1}, "", "timeout (2 s) must not exceed interval (1 s)"),
        ({"timeout": "1500ms", "interval": "1s"}, "", "timeout (1.5 s) must not exceed"),
        ({"interval": 0}, "interval", "greater than 0"),
        ({"interval": "soon"}, "interval", "invalid duration 'soon'"),
        ({"path": "healthz"}, "path", "must start with /"),
        ({"path": "/a b"}, "path", "no spaces"),
        ({"host": "a b"}, "host", "Host header"),
        ({"healthy_threshold": 0}, "healthy_threshold", "greater than or equal to 1"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold", "greater than or equal to 1"),
        ({"type": "udp"}, "type", "'http' or 'tcp'"),
        ({"type": "tcp", "path": "/x"}, "", "path: only used by type http"),
        ({"intervall": 1}, "intervall", "Extra inputs are not permitted"),
    ],
)
def test_health_check_errors_name_the_field(fields: dict[str, Any], field: str, error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HealthCheck.model_validate(fields)
    [problem] = caught.value.errors()
    assert ".".join(str(p) for p in problem["loc"]) == field
    assert error in problem["msg"]


def test_outlier_detection_and_retry_budget_map_onto_the_pure_classes() -> None:
    od = OutlierDetection.model_validate({"base_ejection": "10s", "max_ejection": "1m"})
    detector = OutlierDetector(
        od.consecutive_5xx,
        od.consecutive_connect_failures,
        od.base_ejection,
        od.max_ejection,
        od.max_ejection_percent,
    )
    assert (detector.consecutive_5xx, detector.base_ejection_s, detector.max_ejection_s) == (
        5,
        10.0,
        60.0,
    )
    rb = RetryBudgetConfig()
    budget = RetryBudget(rb.percent, rb.min_concurrency)
    assert (budget.budget_percent, budget.min_retry_concurrency) == (20.0, 3)


@pytest.mark.parametrize(
    ("model", "fields", "field", "error"),
    [
        (OutlierDetection, {"consecutive_5xx": -1}, "consecutive_5xx", "greater than or equal"),
        (OutlierDetection, {"max_ejection_percent": 101}, "max_ejection_percent", "less than"),
        (OutlierDetection, {"base_ejection": 0}, "base_ejection", "greater than 0"),
        (OutlierDetection, {"base_ejection": "10m"}, "", "base_ejection (600 s) must not exceed"),
        (RetryBudgetConfig, {"percent": 150}, "percent", "less than or equal to 100"),
        (RetryBudgetConfig, {"min_concurrency": -1}, "min_concurrency", "greater than or equal"),
    ],
)
def test_outlier_and_budget_errors_name_the_field(
    model: type[OutlierDetection | RetryBudgetConfig],
    fields: dict[str, Any],
    field: str,
    error: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(fields)
    [problem] = caught.value.errors()
    assert ".".join(str(p) for p in problem["loc"]) == field
    assert error in problem["msg"]
