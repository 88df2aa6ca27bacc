"""Memory of processes as the benchmarks count it: PSS (proportional set size), so pages that
processes share (an interpreter's, a fork's) are counted once across them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def pss_mb(pids: Iterable[int | str]) -> float:
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # gone meanwhile
            continue
        total += next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
    return total / 1024
