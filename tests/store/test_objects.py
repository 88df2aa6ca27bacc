"""The API's object store (store/objects.py) on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podkit.store import objects
from podkit.store.objects import ObjectStore, StoreError


def cm(name: str, data: str = "1", rv: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "namespace": "default"}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": data}}


KEY = objects.key("core", "configmaps", "default", "a")


def test_every_write_gets_the_next_resource_version_and_survives_a_reopen(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "state.db")
    a = store.create(KEY, cm("a"))
    b = store.create(objects.key("core", "configmaps", "other", "b"), cm("b"))
    assert (a["metadata"]["resourceVersion"], b["metadata"]["resourceVersion"]) == ("1", "2")
    updated = store.update(KEY, cm("a", "2", rv="1"))
    assert updated["metadata"]["resourceVersion"] == "3"
    store.close()
    again = ObjectStore(tmp_path / "state.db")
    assert again.get(KEY) == updated
    items, rv = again.list_prefix(objects.prefix("core", "configmaps", "default"))
    assert [i["metadata"]["name"] for i in items] == ["a"] and rv == 3
    items, _ = again.list_prefix(objects.prefix("core", "configmaps", None))
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]


def test_stale_resource_versions_conflict_and_missing_or_taken_keys_are_refused(
    tmp_path: Path,
) -> None:
    store = ObjectStore(tmp_path / "state.db")
    store.create(KEY, cm("a"))
    with pytest.raises(StoreError) as taken:
        store.create(KEY, cm("a"))
    assert taken.value.reason == "AlreadyExists"
    store.update(KEY, cm("a", "2", rv="1"))
    with pytest.raises(StoreError) as stale:
        store.update(KEY, cm("a", "3", rv="1"))
    assert stale.value.reason == "Conflict"
    assert store.get(KEY)["data"] == {"k": "2"}  # type: ignore[index]
    with pytest.raises(StoreError) as missing:
        store.delete(objects.key("core", "configmaps", "default", "nope"))
    assert missing.value.reason == "NotFound"
    gone = store.delete(KEY)
    assert gone["metadata"]["resourceVersion"] == "3" and store.get(KEY) is None


def test_history_replays_writes_and_expires_past_its_window(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "state.db", history=5)
    store.create(KEY, cm("a"))
    store.update(KEY, cm("a", "2"))
    store.delete(KEY)
    events = store.events_since(1, objects.prefix("core", "configmaps", "default"))
    assert [(e.type, e.rv) for e in events] == [("MODIFIED", 2), ("DELETED", 3)]
    for i in range(10):  # compaction runs every `history` revisions
        store.create(objects.key("core", "configmaps", "default", f"n{i}"), cm(f"n{i}"))
    with pytest.raises(StoreError) as old:
        store.events_since(1, "core/")
    assert old.value.reason == "Expired"
    assert len(store.events_since(store.current_rv() - 3, "core/")) == 3


def test_watchers_hear_each_committed_write_under_their_prefix_only(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, str]]:
        store = ObjectStore(tmp_path / "state.db")
        queue = store.subscribe(objects.prefix("core", "configmaps", "default"))
        store.create(KEY, cm("a"))
        store.create(objects.key("core", "configmaps", "other", "b"), cm("b"))
        with pytest.raises(StoreError):
            store.update(KEY, cm("a", "x", rv="99"))  # rolled back: nothing told
        store.delete(KEY)
        store.unsubscribe(queue)
        store.create(KEY, cm("a"))
        heard = []
        while not queue.empty():
            e = queue.get_nowait()
            heard.append((e.type, e.object["metadata"]["resourceVersion"]))
        return heard

    assert asyncio.run(scenario()) == [("ADDED", "1"), ("DELETED", "3")]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="state.db: not a usable SQLite database"):
        ObjectStore(bad)
