"""simple-webapp as a user meets it: a real process answering real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
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

CLF = re.compile(
    r"(?P<remote>\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<bytes>\d+) '
    r"(?P<seconds>\d+\.\d{4})"
)
_SCRUB_PREFIXES = ("PODKIT_", "LOG_AGENT_", "SIMPLE_WEBAPP_")
_SCRUB = {"POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_LABELS", "NODE_NAME", "CONTAINER_NAME"}
_SCRUB |= {"PORT", "HOST", "ACCESS_LOG_DIR"}
POD_ENV = {
    "PODKIT_POD_NAME": "web-7f9c",
    "PODKIT_POD_NAMESPACE": "shop",
    "PODKIT_CONTAINER_NAME": "simple-webapp",
    "HOSTNAME": "web-7f9c",
}


def image_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)
    }
    return {**env, **POD_ENV, **extra}


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


class Webapp:
    def __init__(self, tmp: Path, args: list[str], env: dict[str, str]) -> None:
        self.stderr_path = tmp / f"webapp-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podkit.images.webapp", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

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

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


StartWebapp = Callable[..., Webapp]


@pytest.fixture
def start_webapp(tmp_path: Path) -> Iterator[StartWebapp]:
    started: list[Webapp] = []

    def start(*args: str, **env: str) -> Webapp:
        app = Webapp(tmp_path, list(args), image_env(**env))
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
