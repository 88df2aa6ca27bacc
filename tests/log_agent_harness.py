"""Running log-agent as a user meets it: a real process, its stdout, its admin endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ACCESS_LINE = '10.1.2.3 - - [25/Nov/2026:22:15:08 +0000] "GET /cart?id=7 HTTP/1.1" 404 153 0.0031'
# Variables that would leak this machine's identity into the images under test.
_SCRUB_PREFIXES = ("PODKIT_", "LOG_AGENT_", "SIMPLE_WEBAPP_")
_SCRUB = {"POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_LABELS", "NODE_NAME", "CONTAINER_NAME"}
_SCRUB |= {"PORT", "HOST", "ACCESS_LOG_DIR"}

POD_ENV = {
    "PODKIT_POD_NAME": "web-7f9c",
    "PODKIT_POD_NAMESPACE": "shop",
    "PODKIT_POD_UID": "0d5a6e4c-1111-2222-3333-444455556666",
    "PODKIT_NODE_NAME": "node-a",
    "PODKIT_CONTAINER_NAME": "log-agent",
    "PODKIT_POD_LABELS": '{"app": "shop", "tier": "web"}',
    "HOSTNAME": "web-7f9c",
}


def clean_environ() -> dict[str, str]:
    """This process's environment without what would tell an image about a pod."""
    return {
        k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)
    }


def image_env(**extra: str) -> dict[str, str]:
    env = clean_environ()
    env.update(extra)
    return env


class ImageProcess:
    """An image under test: stdout lines collected as they come, waitable with a deadline."""

    def __init__(
        self,
        module: str,
        args: list[str],
        env: dict[str, str],
        tmp: Path,
        python_args: list[str] | None = None,
    ) -> None:
        self.stderr_path = tmp / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *(python_args or []), "-m", module, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def records(self) -> list[dict[str, Any]]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def events(self) -> list[dict[str, Any]]:
        """What the stdout sink printed (the agent's own logs carry `logger` instead)."""
        return [r for r in self.records() if "kubernetes" in r and "logger" not in r]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 5.0
    ) -> Any:
        """Wait until predicate(all JSON records so far) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._cond.release()
                try:
                    result = predicate(self.records())
                finally:
                    self._cond.acquire()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._eof and self.proc.poll() is not None):
                    break
                self._cond.wait(remaining)
        raise AssertionError(
            f"timed out; exit={self.proc.poll()}\nstdout:\n"
            + "\n".join(self.lines[-40:])
            + f"\nstderr:\n{self.stderr()}"
        )

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> Any:
        return self.wait_for(lambda _: next((e for e in self.events() if match(e)), None), timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 2.0) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ready_listeners(agent: ImageProcess) -> dict[str, str]:
    ready = agent.wait_for(
        lambda recs: next((r for r in recs if r.get("msg") == "ready"), None), timeout=10
    )
    return ready["listening"]


def hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def http(
    method: str, url: str, body: bytes | None = None, ctype: str = "application/json"
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


EPHEMERAL = {
    "LOG_AGENT_SOURCES__0__LISTEN": "127.0.0.1:0",
    "LOG_AGENT_SOURCES__1__LISTEN": "127.0.0.1:0",
    "LOG_AGENT_ADMIN__LISTEN": "127.0.0.1:0",
}


StartAgent = Callable[..., ImageProcess]


def metric_samples(admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agent's /metrics as {(sample name, sorted labels): value}."""
    status, body = http("GET", f"http://{admin}/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


class _Handler(BaseHTTPRequestHandler):
    server: _RecordingHTTPServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        owner = self.server.owner
        status = owner.fail_status
        if status is None:
            events = [json.loads(line) for line in body.splitlines() if line.strip()]
            with owner.lock:
                owner.active += 1
            if owner.delay:
                time.sleep(owner.delay)  # a slow receiver: requests are in flight longer
            with owner.lock:
                owner.events.extend(events)
                owner.requests.append(len(events))
                owner.active -= 1
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _RecordingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: RecordingReceiver


class RecordingReceiver:
    """A real HTTP server that takes the http sink's JSON lines and keeps every event.

    `down()` closes its socket (connection refused, as when the receiver is gone) and `up()`
    opens it again on the same port; `fail_status` answers every request with that status."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[int] = []  # events per delivered request
        self.lock = threading.Lock()
        self.fail_status: int | None = None
        self.delay = 0.0
        self.active = 0  # requests read, not yet recorded
        self.port = 0
        self._server: _RecordingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def up(self) -> None:
        server = _RecordingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def messages(self) -> list[str]:
        with self.lock:
            return [e["message"] for e in self.events]

    def ids(self) -> list[str]:
        with self.lock:
            return [e["_id"] for e in self.events]
