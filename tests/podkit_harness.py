"""Run `podkit` as a real process in tests and watch what it prints."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
# The names the runtime tests give host programs (`image: busybox` with a command): named in
# an image catalog, as a user must, so that no other name runs a host program.
HOST_IMAGES = Path(__file__).resolve().parent / "host-images.yaml"
PODKIT_ENV = {"PODKIT_IMAGE_CATALOG": str(HOST_IMAGES)}
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, closed to users


def require_system_python(*tools: str) -> None:
    """Tests that run podkit as another user run it on the system's python3: it and `tools`
    must be there, and that python3 must be the venv's version (its packages are used)."""
    for tool in (*tools, SYSTEM_PYTHON):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs it"
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert version == str(sys.version_info[:2]), (
        f"{SYSTEM_PYTHON} is {version}, podkit's packages are for {sys.version_info[:2]}"
    )


# The tests' pods get their IPs on a bridge of this test session's own (conftest.py makes and
# removes it), so two sessions at once, or a session beside a user's podkit0, never meet.
TEST_BRIDGE = f"pkt{os.getpid()}"
TEST_SUBNET = f"10.249.{os.getpid() % 250}.0/24"
TEST_GATEWAY = TEST_SUBNET.replace(".0/24", ".1")
T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the condition is not there yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})"
    )


def write_manifest(tmp_path: Path, text: str, name: str = "pod.yaml") -> str:
    """Write an indented manifest from a test into tmp_path; returns its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def free_port() -> int:
    """A port free now, not handed out before in this test run (two runs started one after
    the other must not be given the same one), and outside the kernel's ephemeral range: an
    outgoing connection made meanwhile could otherwise take it before the server binds it."""
    low, high = _ephemeral_range()
    candidates = range(10000, low) if low > 11000 else range(high + 1, 65536)
    while True:
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Podkit:
    """A running `podkit run ...` with its stdout and stderr collected line by line."""

    def __init__(self, *args: str, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "podkit.cli.main", *args, "--no-color"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **PODKIT_ENV, "PODKIT_STATE_DIR": str(state_dir), **(env or {})},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(s, buf), daemon=True)
            for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, buf: list[str]) -> None:
        for line in iter(stream.readline, b""):
            buf.append(line.decode(errors="replace").rstrip("\n"))

    def stdout_lines(self, prefix: str = "") -> list[str]:
        return [line for line in list(self.out) if line.startswith(prefix)]

    def events(self, container: str) -> list[dict[str, Any]]:
        """JSON objects printed by `container` (its lines after the `[container] ` prefix)."""
        out = []
        for line in self.stdout_lines(f"[{container}] "):
            try:
                obj = json.loads(line.split("] ", 1)[1])
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def text(self) -> str:
        return "\n".join(self.out + self.err)

    def wait_stderr(self, needle: str, timeout: float = 10.0) -> str:
        return wait_for(
            f"{needle!r} in podkit's stderr:\n{self.text()}",
            lambda: next((x for x in list(self.err) if needle in x), None),
            timeout,
        )

    def status(self) -> dict[str, Any]:
        files = list((self.state_dir / "pods").glob("*/status.json"))
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(2)
        return code

    def wait(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(2)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_podkit(
    *args: str, state_dir: Path, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["--no-color"] if args and args[0] == "run" else []
    return subprocess.run(
        [sys.executable, "-m", "podkit.cli.main", *args, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **PODKIT_ENV, "PODKIT_STATE_DIR": str(state_dir), **(env or {})},
    )
