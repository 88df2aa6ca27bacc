"""podkit's state directory: everything a pod leaves on the host lives under it.

<state>/pods/<namespace>_<name>_<uid>/
    owner              pid and start time of the podkit that runs the pod
    status.json        the Pod with its current PodStatus
    logs/<container>/<restartCount>.log   CRI format, as /var/log/pods
        volumes/ shm/ containers/ etc/ sandbox   removed when the pod stops
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podkit.common.userns import remove_tree

VOLATILE = ("volumes", "shm", "containers", "etc", "sandbox")
KEEP_FINISHED = 20
# In a pod's directory: podkit serve keeps it (its logs, for `kubectl logs`) until the pod's
# object is deleted, as the kubelet keeps a pod's; never pruned as one of the finished.
KEPT = "kept"


def pod_dir(state_dir: Path, namespace: str, name: str, uid: str) -> Path:
    """Where a pod's logs, status and volumes live (the module docstring's layout)."""
    return state_dir / "pods" / f"{namespace}_{name}_{uid}"


def default_state_dir() -> Path:
    env = os.environ.get("PODKIT_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/podkit")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "podkit"


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_record() -> str:
    return f"{os.getpid()} {_proc_start_time(os.getpid())}"


def owner_alive(record: str) -> bool:
    """True if the podkit that wrote `record` still runs (pid reuse is caught by start time)."""
    try:
        pid_s, start = record.split()
        return _proc_start_time(int(pid_s)) == start
    except ValueError:
        return False


def stop_owners(pod_dirs: list[Path], deadline: float) -> int:
    """SIGTERM to the live owner (a pod's supervisor) of each pod directory, then waits for
    them; those left after `deadline` seconds get SIGKILL. Returns how many were running."""
    pids = []
    for d in pod_dirs:
        try:
            record = (d / "owner").read_text()
        except OSError:
            continue
        if owner_alive(record):
            pid = int(record.split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                pids.append((pid, record))
    end = time.monotonic() + deadline
    while any(owner_alive(r) for _, r in pids) and time.monotonic() < end:
        time.sleep(0.1)  # another process's exit: no child to wait for, only to look at
    for pid, record in pids:
        if owner_alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_volatile(pod_dir: Path) -> None:
    for name in VOLATILE:
        path = pod_dir / name
        if path.is_dir():  # rootless, a container's files may belong to its image's ids
            remove_tree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def _pods_locked(state_dir: Path) -> Iterator[Path]:
    """The pods directory, locked: a pod's directory is made and claimed (its owner file)
    under this lock, and clean_stale looks under it, so it never takes a directory another
    podkit has just made for its not yet claimed."""
    pods = state_dir / "pods"
    pods.mkdir(parents=True, exist_ok=True)
    fd = os.open(pods / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield pods
    finally:
        os.close(fd)


def claim(pod_dir: Path) -> None:
    """Make a pod's directory, this podkit its owner."""
    with _pods_locked(pod_dir.parent.parent):
        pod_dir.mkdir(exist_ok=True)
        (pod_dir / "owner").write_text(owner_record())


def keep(pod_dir: Path) -> None:
    """Make a pod's directory, marked KEPT (under the lock: no clean-up sees it unmarked)."""
    with _pods_locked(pod_dir.parent.parent):
        pod_dir.mkdir(exist_ok=True)
        (pod_dir / KEPT).touch()


def forget(pod_dir: Path) -> None:
    """Remove a pod's directory, under the lock every podkit's clean-up takes (one listing
    the directories must not find this one gone halfway)."""
    with _pods_locked(pod_dir.parent.parent):
        remove_tree(pod_dir)


def clean_stale(state_dir: Path) -> list[str]:
    """Clean what killed runs left and keep only the newest finished pods; returns cleaned."""
    if not (state_dir / "pods").is_dir():
        return []
    with _pods_locked(state_dir) as pods:
        return _clean(pods)


def _clean(pods: Path) -> list[str]:
    cleaned, finished = [], []
    for d in pods.iterdir():
        if not d.is_dir():
            continue  # the lock
        owner = d / "owner"
        try:
            record = owner.read_text()
        except OSError:
            record = ""
        if record and owner_alive(record):
            continue
        if any((d / v).exists() for v in VOLATILE):
            remove_volatile(d)
            cleaned.append(d.name)
        if not (d / KEPT).exists():
            finished.append(d)
    finished.sort(key=_mtime, reverse=True)
    for d in finished[KEEP_FINISHED:]:
        remove_tree(d)
    return cleaned


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile by one that did not take the lock
        return 0.0


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    with contextlib.suppress(FileNotFoundError):
        os.replace(tmp, path)
