"""Launcher processes (runtime/launcher.py runs in them), started ahead and adopted by the loop.

A launcher is a fresh interpreter: about 20 ms before it can read its spec. `Launchers` starts
the first ones while podkit still sets up the pods' network, cgroups and sandboxes (before the
event loop exists), so that start overlaps that work instead of delaying the containers; later
starts spawn one when needed. A launcher waits for its spec on a pipe, and one never given a
spec exits when the pipe closes.

The spawn is subprocess.Popen's, outside asyncio, so `Launched` gives the event loop what
asyncio.subprocess.Process gave: stdout and stderr as streams, wait(), send_signal() and kill(),
with the exit seen through a pidfd (the loop's own child watcher knows only its own children).
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


class Launched:
    """A spawned launcher as the event loop sees it (asyncio.subprocess.Process's interface)."""

    def __init__(self, spawned: Spawned) -> None:
        self._popen = spawned.popen
        self.pid = spawned.popen.pid
        self.returncode: int | None = None
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd = os.pidfd_open(self.pid)

    async def adopt(self) -> None:
        """Reads its output and watches for its exit; the loop owns its pipes from here."""
        out, err = self._popen.stdout, self._popen.stderr
        self._popen.stdout = self._popen.stderr = None
        assert out is not None and err is not None
        await _read_into(self.stdout, out)
        await _read_into(self.stderr, err)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        # As asyncio reports it: -N for a signal; Popen must not wait for it again.
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        self._exit.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # not reaped yet, so the pid cannot have been reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def _read_into(reader: asyncio.StreamReader, pipe: IO[bytes]) -> None:
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
