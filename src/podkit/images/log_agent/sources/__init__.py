"""Sources: where events enter the agent.

Each source has an `id`, `async start()` (returns once it is listening / has done its first scan,
which is what readiness waits for) and `async stop()` (stop taking input, hand over what it holds).
"""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> str:
        """Where it listens or what it watches, for the start-up log line."""
        ...
