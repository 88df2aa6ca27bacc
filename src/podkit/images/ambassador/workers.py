"""Several worker processes on the same ports (SO_REUSEPORT: the kernel spreads connections over
them), as HAProxy's nbproc or nginx's worker_processes do, for more than one core.

The first process is worker 0: it serves the admin port and starts, watches and restarts the
others. Every other worker writes its /stats to a file once a second; worker 0's /stats and
/metrics add them up, so a scrape sees the whole pod's proxy. Each worker dies with worker 0
(PR_SET_PDEATHSIG), reloads on its own when the config file changes, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("ambassador")

SNAPSHOT_EVERY = 1.0  # seconds between a worker's stats files
RESTART_AFTER = 1.0  # seconds before a worker that died is started again
STALE_AFTER = 5.0  # a stats file older than this is from a worker that is gone
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def write_snapshot(stats_dir: Path, worker: int, ready: bool, stats: dict[str, Any]) -> None:
    path = stats_dir / f"worker-{worker}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"ready": ready, "stats": stats, "time": time.time()}))
    tmp.replace(path)  # atomic: a reader never sees half a file


async def keep_writing(stats_dir: Path, worker: int, state: Callable[[], Any]) -> None:
    """A worker's loop: its stats file, once a second."""
    while True:
        proxy = state()
        with contextlib.suppress(OSError):
            write_snapshot(stats_dir, worker, proxy.ready, proxy.stats())
        await asyncio.sleep(SNAPSHOT_EVERY)


class Workers:
    """Worker 0's view of workers 1..count-1."""

    def __init__(self, config_path: str | None, count: int) -> None:
        self.config_path = config_path
        self.count = count
        self.dir = Path(tempfile.mkdtemp(prefix="ambassador-workers-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for worker in range(1, self.count):
            self._spawn(worker)
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    def _spawn(self, worker: int) -> None:
        # The same config: the same file (if any) and the same environment, inherited.
        config = ["--config", self.config_path] if self.config_path else []
        self.procs[worker] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "podkit.images.ambassador",
                *config,
                "--worker",
                str(worker),
                "--stats-dir",
                str(self.dir),
            ]  # fmt: skip
        )

    async def _supervise(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RESTART_AFTER)
            for worker, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None and not self.stopping:
                    log.warning(
                        "worker exited, starting it again",
                        extra={"worker": worker, "exit_code": code},
                    )
                    with contextlib.suppress(OSError):
                        (self.dir / f"worker-{worker}.json").unlink()
                    self._spawn(worker)

    def signal(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def snapshots(self) -> list[dict[str, Any]]:
        out = []
        now = time.time()
        for worker in self.procs:
            try:
                data = orjson.loads((self.dir / f"worker-{worker}.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if now - data.get("time", 0) <= STALE_AFTER:
                out.append(data)
        return out

    def all_ready(self) -> bool:
        snaps = self.snapshots()
        return len(snaps) == len(self.procs) and all(s["ready"] for s in snaps)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each drains), wait up to `timeout`, then SIGKILL the rest."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            await asyncio.sleep(0.05)
        self.signal(signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        shutil.rmtree(self.dir, ignore_errors=True)
