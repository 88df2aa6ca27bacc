"""`podkit get pods`: the pods' status files read back, printed as kubectl prints them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podkit.runtime import statedir
from podkit.runtime.status import display_status, ready_summary, trackers_from_document


def load(state_dir: Path, finished: bool) -> list[dict[str, Any]]:
    """Pod documents of running pods (and of finished runs when asked), oldest first."""
    docs = []
    for status in sorted(
        (state_dir / "pods").glob("*/status.json"), key=lambda p: p.stat().st_mtime
    ):
        try:
            record = (status.parent / "owner").read_text()
        except OSError:
            record = ""
        running = bool(record) and statedir.owner_alive(record)
        if not running and not finished:
            continue
        try:
            docs.append(json.loads(status.read_text()))
        except (OSError, ValueError):
            continue  # being replaced right now, or a run killed mid-write
    return docs


def age(start: str | None, now: datetime | None = None) -> str:
    """kubectl's AGE: 45s, 3m12s, 2h5m, 3d."""
    if not start:
        return "<unknown>"
    then = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    return f"{seconds // 86400}d"


def table(docs: list[dict[str, Any]], namespaces: bool, wide: bool = False) -> list[list[str]]:
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if namespaces:
        header.insert(0, "NAMESPACE")
    if wide:
        header += ["IP", "NODE"]
    rows = [header]
    for d in docs:
        apps, init = trackers_from_document(d)
        status = d.get("status", {})
        row = [
            d["metadata"]["name"],
            ready_summary(apps, init),
            display_status(status.get("phase", "Pending"), apps, init),
            str(sum(t.restart_count for t in apps + init)),
            age(status.get("startTime")),
        ]
        if namespaces:
            row.insert(0, d["metadata"]["namespace"])
        if wide:
            row += [status.get("podIP", ""), d.get("spec", {}).get("nodeName", "")]
        rows.append(row)
    return rows


def find_running(state_dir: Path, namespace: str, name: str) -> tuple[dict[str, Any], int]:
    """The Pod document and sandbox pid of a pod some podkit runs now; LookupError if none."""
    for doc in load(state_dir, finished=False):
        meta = doc["metadata"]
        if meta["name"] == name and meta["namespace"] == namespace:
            pod_dir = statedir.pod_dir(state_dir, namespace, name, meta["uid"])
            try:
                return doc, int((pod_dir / "sandbox").read_text())
            except (OSError, ValueError):
                break
    raise LookupError(
        f'pods "{name}" not found in namespace {namespace} (is `podkit run` running?)'
    )
