"""The agent's persistent state: one SQLite database (WAL) in the data directory.

Holds what must survive a restart: file offsets (committed only once every sink holds the lines
safely) and how far each sink's disk buffer was delivered. Values are JSON, keyed by
(scope, key): scope is a component id ("file", "buffer:loki"), key what it tracks.

Writes are coalesced: `set` marks a value dirty and a commit runs once the event loop is
idle for this turn (`loop.call_soon`), so a burst of acknowledgements costs one transaction, and
nothing acknowledged waits longer than one loop turn to be durable against a crash of the agent.
(synchronous=NORMAL: a commit survives kill -9 of the agent; a power cut may lose the last ones,
which at-least-once delivery then repeats.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from podkit.images.log_agent.throttle import Throttle

FILE_NAME = "state.db"
log = logging.getLogger("log-agent.state")


class StateStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS state ("
            "scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
            "PRIMARY KEY (scope, key))"
        )
        self._dirty: dict[tuple[str, str], bytes | None] = {}
        self._scheduled = False
        self.commits = 0
        self._failing = Throttle()  # a full disk fails every commit: one line a minute

    def load(self, scope: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM state WHERE scope = ?", (scope,))
        return {key: orjson.loads(value) for key, value in rows}

    def scopes(self) -> list[str]:
        """Every scope with saved values (not counting writes not yet committed)."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT scope FROM state")]

    def set(self, scope: str, key: str, value: Any) -> None:
        self._dirty[(scope, key)] = orjson.dumps(value)
        self._schedule()

    def delete(self, scope: str, key: str) -> None:
        self._dirty[(scope, key)] = None
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tests, shutdown): commit now
            self.commit()
            return
        self._scheduled = True
        loop.call_soon(self.commit)

    def commit(self) -> None:
        self._scheduled = False
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        db = self._db
        try:
            db.execute("BEGIN")  # one transaction for the whole burst
            db.executemany(
                "INSERT OR REPLACE INTO state (scope, key, value) VALUES (?, ?, ?)",
                [(s, k, v) for (s, k), v in dirty.items() if v is not None],
            )
            db.executemany(
                "DELETE FROM state WHERE scope = ? AND key = ?",
                [(s, k) for (s, k), v in dirty.items() if v is None],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # Keep what was not written (newer values win) and try again at the next change.
            self._dirty = {**dirty, **self._dirty}
            held = self._failing.due()
            if held is not None:
                log.error(
                    "cannot save state",
                    extra={"path": str(self.path), "error": str(exc), "failures_since": held},
                )
            return
        if self._failing.since:
            log.info("state saved again", extra={"after_s": round(self._failing.clear(), 1)})
        self.commits += 1

    def close(self) -> None:
        self.commit()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
