"""Memory of processes as the benchmarks count it: PSS (proportional set size), so pages that
processes share (an interpreter's, a fork's) are counted once across them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# podkit's own processes below serve besides the supervisors: the fork server they come from,
# the pods' sandboxes and PID-namespace inits, and container launchers while they start.
PODKIT_HELPERS = ("podkit-sandbox", "pause")


def serve_processes(serve_pid: int, supervisors: Iterable[int]) -> list[int]:
    """serve's own processes for its pods, not the containers: the fork server (serve's child
    besides the pods' supervisors), each supervisor, and each supervisor's sandbox."""
    supervisors = list(supervisors)
    pids = [c for c in children(serve_pid) if c not in supervisors]  # the fork server
    for sup in supervisors:
        pids.append(sup)
        pids += [c for c in children(sup) if comm(c) in PODKIT_HELPERS]
    return pids


def pss_mb(pids: Iterable[int | str]) -> float:
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # gone meanwhile
            continue
        total += next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
    return total / 1024
