"""Pod supervisors for `podkit serve`, forked from one process that has imported them already.

A supervisor is `podkit run` of one pod (node_agent.py). Started as a fresh interpreter, each
one imported the runtime on its own: about 20 MB of heap per pod, and 0.2 s of CPU per start.
Forked from this server after those imports, and after gc.freeze() (so the collector does
not write to the objects it would otherwise walk), supervisors share those pages
copy-on-write, as Android's zygote and multiprocessing's forkserver share theirs.

The server is single-threaded (a fork is only safe then) and has no event loop. serve talks
to it over a SOCK_SEQPACKET pair: a request is the supervisor's arguments (JSON) with its
stderr passed over SCM_RIGHTS, the reply `pid PID`. The server reaps its children and sends
`exit PID CODE` when one ends. A supervisor starts a session of its own, as before, and
nothing else ties it to this server or to serve: when they go, it goes on, and the next serve
adopts it through its pod directory's owner file.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

from podkit.common.helpers import helper_argv
from podkit.runtime.node import RELOAD_SIGNAL, STOP_SIGNALS

# What `podkit run` imports (cli/main.py imports these inside run(), to keep --help fast).
PRELOAD = (
    "podkit.cli.main",
    "podkit.images.catalog",
    "podkit.manifest.load",
    "podkit.runtime.forward",
    "podkit.runtime.node",
    "podkit.runtime.hostpath",
    "podkit.runtime.image_pull",
    "podkit.runtime.security",
    "uvloop",
)
# A supervisor starts with these held, as `podkit run` holds them until it can take them
# (runtime/node.py): a stop or reload that comes while it starts waits instead of killing it.
HELD = {*STOP_SIGNALS, RELOAD_SIGNAL}


def _child(request: bytes, stderr: int, server: socket.socket, wake: tuple[int, int]) -> None:
    """The supervisor, in the fork; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        server.close()
        for fd in wake:
            os.close(fd)
        os.setsid()  # not serve's session: a Ctrl-C or kill of serve spares it
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(stderr, 2)
        os.close(null)
        os.close(stderr)
        with open("/proc/self/comm", "w") as f:
            f.write("podkit-pod")  # ps shows the server's command line; this tells them apart
        from podkit.cli.main import main

        argv = json.loads(request)
        sys.argv = ["podkit", *argv]
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - say what broke, as a fresh interpreter would
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap(server: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):  # serve is gone: nobody to tell
            server.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())


def serve(server: socket.socket) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd hears it
    while True:
        ready = select.select([server.fileno(), wake[0]], [], [])[0]
        if wake[0] in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake[0], 4096)
            _reap(server)
        if server.fileno() not in ready:
            continue
        try:
            request, fds, _, _ = socket.recv_fds(server, 1 << 16, 1)
        except ConnectionResetError:
            request = b""
        if not request:  # serve closed its end: the supervisors go on without us
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, fds[0], server, wake)
        os.close(fds[0])
        server.send(f"pid {pid}".encode())


class ForkServer:
    """serve's end: start supervisors, learn their exit codes."""

    def __init__(self, log: Path, state_dir: Path) -> None:
        """`state_dir` is only shown: the server's command line, which its supervisors keep,
        says whose they are (as `podkit run ... --state-dir` said)."""
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*helper_argv("podkit.runtime.forkserver", site=True), str(theirs.fileno())]
        with theirs, open(log, "ab") as err:
            self._proc = subprocess.Popen(
                [*argv, "--state-dir", str(state_dir)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self._exits: dict[int, int] = {}

    def spawn(self, argv: list[str], stderr: int) -> int:
        """Start a supervisor `podkit ARGV`, its stderr `stderr`; its pid. Raises OSError if
        the server is gone."""
        socket.send_fds(self._sock, [json.dumps(argv).encode()], [stderr])
        while True:
            reply = self._sock.recv(256).split()
            if not reply:
                raise OSError("podkit's fork server exited")
            if reply[0] == b"pid":
                return int(reply[1])
            self._exits[int(reply[1])] = int(reply[2])

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a supervisor this server started, once it has exited."""
        while True:
            try:
                reply = self._sock.recv(256, socket.MSG_DONTWAIT).split()
            except BlockingIOError:
                break
            if not reply:
                break
            self._exits[int(reply[1])] = int(reply[2])
        return self._exits.get(pid)

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        self._sock.close()  # the server returns; its supervisors go on
        self._proc.wait()


def main() -> int:
    serve(socket.socket(fileno=int(sys.argv[1])))
    return 0
