"""simple-webapp as a user meets it: a real process answering real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from log_agent_harness import ImageProcess, clean_environ

CLF = re.compile(
    r"(?P<remote>\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<bytes>\d+) '
    r"(?P<seconds>\d+\.\d{4})"
)
POD_ENV = {
    "PODKIT_POD_NAME": "web-7f9c",
    "PODKIT_POD_NAMESPACE": "shop",
    "PODKIT_CONTAINER_NAME": "simple-webapp",
    "HOSTNAME": "web-7f9c",
}


def image_env(**extra: str) -> dict[str, str]:
    return {**clean_environ(), **POD_ENV, **extra}


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `check` until truthy or the deadline passes (the interval is a poll, not a wait)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Webapp(ImageProcess):
    def __init__(
        self, tmp: Path, args: list[str], env: dict[str, str], python_args: list[str]
    ) -> None:
        super().__init__("podkit.images.webapp", args, env, tmp, python_args)
        self.port = 0

    def wait_line(self, match: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((ln for ln in self.lines if match(ln)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no matching line; exit={self.proc.poll()}\n"
                        + "\n".join(self.lines)
                        + self.stderr()
                    )
                self._cond.wait(remaining)

    def wait_serving(self) -> Webapp:
        line = self.wait_line(lambda ln: '"msg":"serving"' in ln)
        self.port = int(json.loads(line)["listen"][0].rsplit(":", 1)[1])
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


StartWebapp = Callable[..., Webapp]


@pytest.fixture
def start_webapp(tmp_path: Path) -> Iterator[StartWebapp]:
    started: list[Webapp] = []

    def start(*args: str, python_args: tuple[str, ...] = (), **env: str) -> Webapp:
        app = Webapp(tmp_path, list(args), image_env(**env), list(python_args))
        started.append(app)
        return app

    yield start
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait()


class LineServer:
    """A stand-in log agent: accepts TCP connections and keeps every line received."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for raw in stream:
                with self._lock:
                    self.lines.append(raw.decode().rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(line) for line in self.lines]

    def close(self) -> None:
        self.sock.close()


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_serves_pages_and_logs_every_request_three_ways(
    start_webapp: StartWebapp, tmp_path: Path
) -> None:
    agent = LineServer()
    log_dir = tmp_path / "logs"
    app = start_webapp(
        "--port", "0", "--access-log-dir", str(log_dir), LOG_AGENT_ADDR=f"127.0.0.1:{agent.port}"
    ).wait_serving()

    status, headers, body = request("GET", app.url("/"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    body_of_page, page = body, body.decode()
    assert "<title>simple-webapp</title>" in page and "web-7f9c" in page

    payload = json.dumps({"order": 42}).encode()
    status, _, body = request(
        "POST",
        app.url("/api/echo?x=1"),
        payload,
        {"Content-Type": "application/json", "X-Trace": "abc"},
    )
    echo = json.loads(body)
    assert status == 200
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/api/echo", {"x": ["1"]})
    assert echo["headers"]["X-Trace"] == "abc"
    assert echo["body"] == payload.decode() and echo["json"] == {"order": 42}

    log_file = log_dir / "access.log"
    wait_until(lambda: len(log_file.read_text().splitlines()) == 2, what="two requests logged")
    status, _, body = request("GET", app.url("/api/info"))
    info = json.loads(body)
    assert info["pod_name"] == "web-7f9c" and info["namespace"] == "shop"
    assert info["container"] == "simple-webapp" and info["hostname"] == "web-7f9c"
    assert info["requests_served"] == 2 and info["uptime_seconds"] >= 0
    assert request("GET", app.url("/healthz"))[0] == 200
    assert request("GET", app.url("/readyz"))[0] == 200
    assert request("GET", app.url("/nope"))[0] == 404

    # Access lines are written once the response is out, as nginx does: poll briefly for them.
    file_lines = wait_until(
        lambda: len(lines := log_file.read_text().splitlines()) >= 6 and lines, what="file lines"
    )
    # (a) stdout: one access line per request, in order.
    access_stdout = wait_until(
        lambda: len(ms := [m for ln in list(app.lines) if (m := CLF.fullmatch(ln))]) >= 6 and ms,
        what="stdout lines",
    )
    assert [(m["method"], m["target"], m["status"]) for m in access_stdout[:3]] == [
        ("GET", "/", "200"),
        ("POST", "/api/echo?x=1", "200"),
        ("GET", "/api/info", "200"),
    ]
    assert access_stdout[0]["remote"] == "127.0.0.1"
    assert int(access_stdout[0]["bytes"]) == len(body_of_page)
    assert [m.group(0) for m in access_stdout] == file_lines

    # (b) the file: the same lines, appended and flushed one by one.
    assert len(file_lines) == 6 and all(CLF.fullmatch(ln) for ln in file_lines)
    assert file_lines[-1].split('"')[1] == "GET /nope HTTP/1.1" and " 404 " in file_lines[-1]

    # (c) the log agent: the same lines as JSON, labelled with the sending container.
    records = wait_until(lambda: len(agent.records()) >= 6 and agent.records(), what="agent lines")
    assert [r["message"] for r in records] == file_lines
    assert {r["container"] for r in records} == {"simple-webapp"}
    assert {r["stream"] for r in records} == {"access"}
    assert all(r["time"].endswith("Z") for r in records)
    agent.close()


def test_lines_from_before_the_agent_was_up_are_delivered(start_webapp: StartWebapp) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens here yet: the agent "starts later"
    app = start_webapp(PORT="0", LOG_AGENT_ADDR=f"127.0.0.1:{port}").wait_serving()
    for i in range(3):
        assert request("GET", app.url(f"/early/{i}"))[0] == 404
    agent = LineServer(port)
    records = wait_until(lambda: len(agent.records()) >= 3 and agent.records(), what="backlog")
    assert [r["message"].split('"')[1] for r in records] == [
        f"GET /early/{i} HTTP/1.1" for i in range(3)
    ]
    agent.close()


def test_agent_off_and_sigterm_exits_0_fast(start_webapp: StartWebapp) -> None:
    app = start_webapp(PORT="0", LOG_AGENT_ADDR="off").wait_serving()
    assert request("GET", app.url("/"))[0] == 200
    start = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(2) == 0
    assert time.monotonic() - start < 1.0
    assert not any("connected to log agent" in ln for ln in app.lines)


def test_a_keep_alive_client_is_told_to_close_not_cut_off(start_webapp: StartWebapp) -> None:
    """On SIGTERM an idle keep-alive connection stays open for its next request, which is
    answered with `Connection: close`: a client behind a Service leaves a terminating pod
    without the reset a closed idle connection would give it."""
    app = start_webapp(PORT="0", LOG_AGENT_ADDR="off", SIMPLE_WEBAPP_SHUTDOWN_TIMEOUT="2")
    app.wait_serving()
    with socket.create_connection(("127.0.0.1", app.port)) as conn:
        ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        conn.sendall(ask)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        app.proc.send_signal(signal.SIGTERM)
        app.wait_line(lambda ln: '"msg":"shutting down"' in ln)
        conn.sendall(ask)  # on the idle connection, after the stop began
        last = conn.recv(4096)
        assert last.startswith(b"HTTP/1.1 200") and b"Connection: close" in last
        assert conn.recv(4096) == b""  # then it closes
    assert app.proc.wait(3) == 0


def test_bad_settings_exit_2_with_a_clear_message(
    start_webapp: StartWebapp, tmp_path: Path
) -> None:
    app = start_webapp(PORT="http")
    assert app.proc.wait(10) == 2
    assert "environment PORT" in app.stderr() and "port" in app.stderr()

    config = tmp_path / "webapp.yaml"
    config.write_text("port: 8080\nacces_log_dir: /tmp/x\n")
    app = start_webapp("--config", str(config))
    assert app.proc.wait(10) == 2
    assert str(config) in app.stderr() and "acces_log_dir" in app.stderr()


def test_help_lists_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "podkit.images.webapp", "--help"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    for flag in ("--port", "--access-log-dir", "--log-agent-addr", "--config"):
        assert flag in out


def raw_exchange(port: int, data: bytes, *, expect_responses: int = 1) -> bytes:
    """Send `data` as is on one connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    out = b"".join(chunks)
    assert out.count(b"HTTP/1.1 ") >= expect_responses, out
    return out


def access_lines(app: Webapp, count: int) -> list[re.Match[str]]:
    return wait_until(
        lambda: (
            len(ms := [m for ln in list(app.lines) if (m := CLF.fullmatch(ln))]) >= count and ms
        ),
        what=f"{count} access lines",
    )


def test_starts_without_aiohttp_pydantic_or_prometheus(start_webapp: StartWebapp) -> None:
    # The start-up budget of a pod (bench/pod_startup.py) has no room for these imports
    # (aiohttp ~0.3 s, pydantic ~0.15 s, prometheus_client ~0.15 s on a small machine).
    app = start_webapp(
        "--port", "0", LOG_AGENT_ADDR="off", python_args=("-X", "importtime")
    ).wait_serving()
    assert request("GET", app.url("/"))[0] == 200
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(5) == 0
    imported = {ln.split("|")[-1].strip() for ln in app.stderr().splitlines() if "|" in ln}
    assert "podkit.common.httpserver" in imported  # importtime really reported
    for heavy in ("aiohttp", "pydantic", "prometheus_client", "yaml"):
        assert heavy not in imported, f"{heavy} imported at start-up"


def test_head_405_404_and_byte_counts(start_webapp: StartWebapp) -> None:
    app = start_webapp("--port", "0", LOG_AGENT_ADDR="off").wait_serving()
    status, headers, page = request("GET", app.url("/"))
    assert status == 200 and int(headers["Content-Length"]) == len(page)
    assert headers["Date"].endswith(" GMT")

    status, headers, body = request("HEAD", app.url("/"))
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    assert request("HEAD", app.url("/api/info"))[0] == 200

    for method, path in [("POST", "/"), ("DELETE", "/api/info"), ("PUT", "/healthz")]:
        status, headers, _ = request(method, app.url(path), b"x" if method != "DELETE" else None)
        assert status == 405, (method, path)
        assert headers["Allow"] == "GET, HEAD"
    assert request("POST", app.url("/nope"), b"x")[0] == 404
    # The router matches the percent-decoded path, as before.
    assert request("GET", app.url("/api/%69nfo"))[0] == 200

    status, _, info = request("GET", app.url("/api/info"))
    lines = access_lines(app, 9)
    assert [(m["method"], m["target"], m["status"]) for m in lines[:3]] == [
        ("GET", "/", "200"),
        ("HEAD", "/", "200"),
        ("HEAD", "/api/info", "200"),
    ]
    # %b is the body sent: the page's length, nothing for HEAD, the JSON's length.
    assert [int(m["bytes"]) for m in lines[:2]] == [len(page), 0]
    assert lines[-1]["target"] == "/api/info" and int(lines[-1]["bytes"]) == len(info)
    assert lines[-2]["target"] == "/api/%69nfo"  # the target as sent
    # HEAD announces what GET would send (the page changes with uptime; /healthz does not).
    assert int(request("HEAD", app.url("/healthz"))[1]["Content-Length"]) == len(
        request("GET", app.url("/healthz"))[2]
    )


def test_echo_reports_the_request_as_sent(start_webapp: StartWebapp) -> None:
    app = start_webapp("--port", "0", LOG_AGENT_ADDR="off").wait_serving()
    status, headers, body = request(
        "PATCH", app.url("/api/echo?a=1&a=2&b=&c=%20x"), b"\xff\xfe", {"X-Tag": "t1"}
    )
    echo = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert echo["method"] == "PATCH" and echo["path"] == "/api/echo"
    assert echo["query"] == {"a": ["1", "2"], "b": [""], "c": [" x"]}
    assert echo["headers"]["X-Tag"] == "t1" and echo["remote"] == "127.0.0.1"
    assert echo["body"] is None and echo["body_base64"] == "//4="
    assert "json" not in echo

    # Repeated headers are joined; a chunked JSON body with a charset is still decoded as JSON.
    reply = raw_exchange(
        app.port,
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
        b"Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"k":\r\n3\r\n[1]\r\n1\r\n}\r\n0\r\n\r\n',
    )
    echo = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert echo["headers"]["X-Dup"] == "1, 2"
    assert echo["body"] == '{"k":[1]}' and echo["json"] == {"k": [1]}

    # A body that is not JSON although it says so is echoed raw, without "json".
    status, _, body = request(
        "POST", app.url("/api/echo"), b"{oops", {"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(body)["body"] == "{oops"
    assert "json" not in json.loads(body)


def test_keep_alive_pipelining_and_body_limits(start_webapp: StartWebapp) -> None:
    app = start_webapp("--port", "0", LOG_AGENT_ADDR="off").wait_serving()
    # Two requests in one write are answered in order on the same connection.
    reply = raw_exchange(
        app.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        expect_responses=2,
    )
    first, second = reply.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"\r\n\r\nok\n")
    assert second.startswith(b"404 ") and b"Connection: close" in second

    # Expect: 100-continue gets its interim answer before the client sends the body.
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ping")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ") and b'"body": "ping"' in rest

    # Bodies above 1 MiB get 413 (at once when announced with Expect), and are logged.
    big = b"x" * (1024 * 1024 + 1)
    assert request("POST", app.url("/api/echo"), big)[0] == 413
    reply = raw_exchange(
        app.port,
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
        b"Expect: 100-continue\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    statuses = [m["status"] for m in access_lines(app, 4)]
    assert statuses[:4] == ["200", "404", "200", "413"]


def test_metrics_count_requests_by_method_and_status(start_webapp: StartWebapp) -> None:
    agent = LineServer()
    app = start_webapp("--port", "0", LOG_AGENT_ADDR=f"127.0.0.1:{agent.port}").wait_serving()
    for path in ("/", "/", "/nope"):
        request("GET", app.url(path))
    request("POST", app.url("/api/echo"), b"hi")
    wait_until(lambda: len(agent.records()) >= 4, what="lines at the agent")
    status, headers, body = request("GET", app.url("/metrics"))
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    total = "simple_webapp_http_requests_total"
    assert samples[(total, (("method", "GET"), ("status", "200")))] == 2
    assert samples[(total, (("method", "GET"), ("status", "404")))] == 1
    assert samples[(total, (("method", "POST"), ("status", "200")))] == 1
    assert ("simple_webapp_http_requests_created", (("method", "GET"), ("status", "200"))) in (
        samples
    )
    assert samples[("simple_webapp_log_agent_lines_sent_total", ())] >= 4
    assert samples[("simple_webapp_log_agent_lines_dropped_total", ())] == 0
    # The scrape itself is counted by the next one.
    body = request("GET", app.url("/metrics"))[2].decode()
    assert 'simple_webapp_http_requests_total{method="GET",status="200"} 3.0' in body
    agent.close()


def test_settings_layers_and_errors(tmp_path: Path) -> None:
    from podkit.common.config import ConfigError
    from podkit.images.webapp.settings import WebappSettings, build_arg_parser, resolve

    def settings(argv: list[str], env: dict[str, str]) -> WebappSettings:
        return resolve(build_arg_parser().parse_args(argv), env)

    assert settings([], {}) == WebappSettings()
    config = tmp_path / "webapp.yaml"
    config.write_text("port: 9000\nhost: 127.0.0.1\nshutdown_timeout: 2\naccess_log_dir: ''\n")
    s = settings(["--config", str(config)], {})
    assert (s.port, s.host, s.shutdown_timeout, s.access_log_dir) == (9000, "127.0.0.1", 2.0, None)
    # defaults < file < SIMPLE_WEBAPP_* < plain env < flags
    env = {"SIMPLE_WEBAPP_PORT": "9001", "SIMPLE_WEBAPP_LOG_AGENT_QUEUE": "5"}
    s = settings(["--config", str(config)], env)
    assert (s.port, s.log_agent_queue) == (9001, 5)
    assert settings(["--config", str(config)], {**env, "PORT": "9002"}).port == 9002
    assert settings(["--port", "9003", "--config", str(config)], {**env, "PORT": "1"}).port == 9003
    assert settings([], {"LOG_AGENT_ADDR": "off"}).log_agent_addr == "off"

    with pytest.raises(ConfigError) as err:
        settings(
            [],
            {
                "SIMPLE_WEBAPP_SHUTDOWN_TIMEOUT": "-1",
                "SIMPLE_WEBAPP_PROT": "1",
                "LOG_AGENT_ADDR": "nowhere",
                "PORT": "70000",
            },
        )
    assert str(err.value).splitlines() == [
        "environment SIMPLE_WEBAPP_PROT: prot: unknown field (check the spelling)",
        "environment PORT: port: must be a whole number from 0 to 65535 (got '70000')",
        "environment LOG_AGENT_ADDR: log_agent_addr: invalid address 'nowhere': expected HOST:PORT",
        "environment SIMPLE_WEBAPP_SHUTDOWN_TIMEOUT: shutdown_timeout: must be a number of "
        "seconds, 0 or more (got -1)",
    ]
    config.write_text("host: [a]\n")
    with pytest.raises(ConfigError, match=r"webapp\.yaml: host: must be a string \(got \['a'\]\)"):
        settings(["--config", str(config)], {})


def test_port_in_use_exits_1_with_a_clear_message(start_webapp: StartWebapp) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    app = start_webapp("--host", "127.0.0.1", "--port", str(port), LOG_AGENT_ADDR="off")
    assert app.proc.wait(10) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in app.stderr()
    taken.close()
