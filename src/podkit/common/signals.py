"""Run an image's asyncio main under uvloop; SIGTERM/SIGINT ask it to shut down gracefully.

    async def serve(stop: asyncio.Event) -> int:
        ...start listeners...
        await stop.wait()
        ...drain and close...
        return 0

    sys.exit(run(serve))

A second signal while shutting down exits at once (exit code 128 + signal number), as a user
pressing Ctrl-C twice expects.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import uvloop

Main = Callable[[asyncio.Event], Awaitable[int | None]]


def run(main: Main) -> int:
    return uvloop.run(_with_signals(main)) or 0


async def _with_signals(main: Main) -> int | None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            os._exit(128 + signum)  # second signal: the user wants out now
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await main(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
