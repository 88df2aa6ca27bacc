"""The API's objects in one SQLite file, as k3s keeps its state in SQLite through kine.

Two tables:
- `revisions`: one row per write (create, update, delete), its id the global resourceVersion
  (one monotonic counter, as etcd's revision), with the object as written; watches replay it.
- `objects`: the current object of each key and its resourceVersion.

Keys are `<group>/<resource>/<namespace>/<name>` (group "core" for the legacy API, namespace
empty for cluster-scoped kinds), so a list or a watch is a key prefix. Each write is one
transaction: a revision row, then the object with metadata.resourceVersion set to the row's
id. Optimistic concurrency as the apiserver's: an update or delete that names a
resourceVersion other than the current one fails with Conflict.

The history is compacted to the newest HISTORY revisions; a watch from before them gets
Expired (410 Gone), as from an etcd compaction. Watchers in this process are told of each
write after its commit (`subscribe`). Sync calls: a write here takes well under a millisecond.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HISTORY = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    rv INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    rv INTEGER NOT NULL,
    value BLOB NOT NULL
);
"""


class StoreError(Exception):
    """A request the store refuses: `reason` is metav1.Status's (NotFound, AlreadyExists,
    Conflict, Expired)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    key: str
    rv: int
    object: dict[str, Any]


class ObjectStore:
    def __init__(self, path: Path, history: int = HISTORY) -> None:
        """Opens (or creates) the database; StoreError if it is not one, or is locked.
        `history`: how many revisions watches may start from."""
        self.path = path
        self.history = history
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError("Internal", f"{path}: not a usable SQLite database: {exc}") from None
        self._watchers: list[tuple[str, asyncio.Queue[Event]]] = []
        self._pending: list[Event] = []  # written in the open transaction, told at COMMIT

    def close(self) -> None:
        self._db.close()

    # --- reads ----------------------------------------------------------------------------

    def current_rv(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='revisions'").fetchone()
        return int(row[0]) if row else 0

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM objects WHERE key=?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def list_prefix(self, prefix: str) -> tuple[list[dict[str, Any]], int]:
        """The objects under `prefix`, in key order, and the resourceVersion they are as of."""
        with self._read():
            rows = self._db.execute(
                "SELECT value FROM objects WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, prefix + "\uffff"),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows], self.current_rv()

    def events_since(self, rv: int, prefix: str) -> list[Event]:
        """The writes after `rv` under `prefix`; Expired if the history no longer reaches it."""
        with self._read():
            oldest = self._db.execute("SELECT min(rv) FROM revisions").fetchone()[0]
            if oldest is not None and rv + 1 < oldest:
                raise StoreError("Expired", f"too old resource version: {rv} ({oldest - 1})")
            rows = self._db.execute(
                "SELECT rv, key, type, value FROM revisions "
                "WHERE rv > ? AND key >= ? AND key < ? ORDER BY rv",
                (rv, prefix, prefix + "\uffff"),
            ).fetchall()
        return [Event(t, k, r, orjson.loads(v)) for r, k, t, v in rows]

    # --- writes ---------------------------------------------------------------------------

    def create(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self._write():
            if self._db.execute("SELECT 1 FROM objects WHERE key=?", (key,)).fetchone():
                raise StoreError("AlreadyExists", f"{key} already exists")
            return self._put(key, "ADDED", obj)

    def update(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replaces the object; its metadata.resourceVersion, when set, must be the current."""
        with self._write():
            self._check_current(key, obj.get("metadata", {}).get("resourceVersion"))
            return self._put(key, "MODIFIED", obj)

    def delete(self, key: str, rv: str | None = None) -> dict[str, Any]:
        with self._write():
            current = self._check_current(key, rv)
            cur = self._db.execute(
                "INSERT INTO revisions (key, type, value) VALUES (?, 'DELETED', ?)",
                (key, orjson.dumps(current)),
            )
            new_rv = int(cur.lastrowid or 0)
            self._db.execute("DELETE FROM objects WHERE key=?", (key,))
            self._compact(new_rv)
            gone = {**current, "metadata": {**current["metadata"], "resourceVersion": str(new_rv)}}
        self._notify(Event("DELETED", key, new_rv, gone))
        return gone

    def subscribe(self, prefix: str) -> asyncio.Queue[Event]:
        """Events of every later write under `prefix`, until unsubscribe()."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._watchers.append((prefix, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._watchers = [(p, q) for p, q in self._watchers if q is not queue]

    # --- inside ---------------------------------------------------------------------------

    def _check_current(self, key: str, rv: str | None) -> dict[str, Any]:
        row = self._db.execute("SELECT rv, value FROM objects WHERE key=?", (key,)).fetchone()
        if row is None:
            raise StoreError("NotFound", f"{key} not found")
        if rv and rv != str(row[0]):
            raise StoreError(
                "Conflict",
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        return orjson.loads(row[1])  # type: ignore[no-any-return]

    def _put(self, key: str, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
        # The row's id is the new resourceVersion: insert, then write it into the object.
        cur = self._db.execute(
            "INSERT INTO revisions (key, type, value) VALUES (?, ?, x'')", (key, type_)
        )
        rv = int(cur.lastrowid or 0)
        stored = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": str(rv)}}
        value = orjson.dumps(stored)
        self._db.execute("UPDATE revisions SET value=? WHERE rv=?", (value, rv))
        self._db.execute(
            "INSERT INTO objects (key, rv, value) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET rv=excluded.rv, value=excluded.value",
            (key, rv, value),
        )
        self._compact(rv)
        self._pending.append(Event(type_, key, rv, stored))
        return stored

    def _compact(self, rv: int) -> None:
        if rv % min(1000, self.history) == 0:
            self._db.execute("DELETE FROM revisions WHERE rv <= ?", (rv - self.history,))

    def _write(self) -> _Transaction:
        return _Transaction(self)

    def _read(self) -> _Transaction:
        return _Transaction(self, read=True)

    def _notify(self, event: Event) -> None:
        for prefix, queue in self._watchers:
            if event.key.startswith(prefix):
                queue.put_nowait(event)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on an exception); events go out after COMMIT."""

    def __init__(self, store: ObjectStore, read: bool = False) -> None:
        self.store, self.read = store, read

    def __enter__(self) -> None:
        self.store._pending = []
        self.store._db.execute("BEGIN" if self.read else "BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.store._db.execute("COMMIT")
            pending, self.store._pending = self.store._pending, []
            for event in pending:
                self.store._notify(event)
        else:
            self.store._db.execute("ROLLBACK")
            self.store._pending = []


def key(group: str, resource: str, namespace: str, name: str) -> str:
    """An object's key; namespace is "" for cluster-scoped kinds."""
    return f"{group}/{resource}/{namespace}/{name}"


def prefix(group: str, resource: str, namespace: str | None) -> str:
    """The key prefix of a list: one namespace's, or (None) all of them."""
    return f"{group}/{resource}/" + ("" if namespace is None else f"{namespace}/")
