"""Launcher processes (runtime/launcher.py runs in them), started ahead and adopted by the loop.

A launcher is a fresh interpreter: about 20 ms before it can read its spec. `Launchers` starts
the first ones while podkit still sets up the pods' network, cgroups and sandboxes (before the
event loop exists), so that start overlaps that work instead of delaying the containers; later
starts spawn one when needed. A launcher waits for its spec on a pipe, and one never given a
spec exits when the pipe closes.

The spawn is subprocess.Popen's, outside asyncio, so `Launched` gives the event loop what
asyncio.subprocess.Process gave: stdout and stderr as streams, wait(), send_signal() and kill(),
with exits seen through pidfds (the loop's own child watcher knows only its own children).
Once the launcher reports, `Launched` is the container's PID 1 (podkit's child: launcher.py),
and the launcher is only reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections import deque
from typing import IO

from podkit.common.helpers import helper_argv

LAUNCHER = helper_argv("podkit.runtime.launcher")


class Spawned:
    """A launcher waiting for its spec: write it to spec_w, read `started PID` from status_r."""

    def __init__(self) -> None:
        spec_r, self.spec_w = os.pipe()
        self.status_r, status_w = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [*LAUNCHER, str(spec_r), str(status_w)],
                pass_fds=[spec_r, status_w],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            os.close(self.spec_w)
            os.close(self.status_r)
            raise
        finally:
            os.close(spec_r)
            os.close(status_w)

    def discard(self) -> None:
        """A launcher never used: closing its spec pipe ends it."""
        os.close(self.spec_w)
        os.close(self.status_r)
        self.popen.wait()
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


class Launchers:
    """Launchers spawned ahead for the first container starts, and spawned on demand after."""

    def __init__(self, ahead: int = 0) -> None:
        self._ready: deque[Spawned] = deque(Spawned() for _ in range(ahead))

    def take(self) -> Spawned:
        return self._ready.popleft() if self._ready else Spawned()

    def close(self) -> None:
        while self._ready:
            self._ready.popleft().discard()


def parse_report(reply: str) -> tuple[bool, int, str]:
    """A launcher's report: `started PID` or `error PID message` (PID 0: none was made; an
    empty report: the launcher died) -> (started, PID, message)."""
    parts = reply.split(None, 2)
    pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return parts[:1] == ["started"], pid, parts[2] if len(parts) > 2 else ""


class Launched:
    """A spawned launcher, then the container it made, as the event loop sees them
    (asyncio.subprocess.Process's interface)."""

    def __init__(self, spawned: Spawned) -> None:
        self._popen = spawned.popen
        self.pid = spawned.popen.pid  # the launcher's until follow(), then PID 1's
        self.returncode: int | None = None
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        self._launcher_exit: asyncio.Future[int] = loop.create_future()
        self._exit: asyncio.Future[int] = loop.create_future()

    async def adopt(self) -> None:
        """Reads its output and watches for its exit; the loop owns its pipes from here."""
        out, err = self._popen.stdout, self._popen.stderr
        self._popen.stdout = self._popen.stderr = None
        assert out is not None and err is not None
        await _read_into(self.stdout, out)
        await _read_into(self.stderr, err)
        _watch(self.pid, self._launcher_exit)
        # Popen must not wait for it again.
        self._launcher_exit.add_done_callback(lambda f: setattr(self._popen, "returncode", 0))

    def follow(self, pid: int) -> None:
        """The launcher reported: from now on this is the container's PID 1 (0: none was made,
        and the launcher's exit is the container's)."""
        if not pid:
            self._launcher_exit.add_done_callback(lambda f: self._exited(f.result()))
            return
        self.pid = pid
        _watch(pid, self._exit)
        self._exit.add_done_callback(lambda f: setattr(self, "returncode", f.result()))

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._exit.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # not reaped yet, so the pid cannot have been reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _watch(pid: int, exit_code: asyncio.Future[int]) -> None:
    """Reap the child `pid` when it exits, its code into `exit_code` (as asyncio gives it: -N
    for a signal)."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)

    def reap() -> None:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        exit_code.set_result(os.waitstatus_to_exitcode(status))

    loop.add_reader(pidfd, reap)


async def _read_into(reader: asyncio.StreamReader, pipe: IO[bytes]) -> None:
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
