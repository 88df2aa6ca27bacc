"""The pods' state directories (runtime/statedir.py): a run's clean-up keeps the newest
finished pods only, but never one podkit serve keeps until its object is deleted."""

from __future__ import annotations

import os
from pathlib import Path

from podkit.runtime import statedir


def test_clean_up_keeps_the_newest_finished_and_every_kept_pod(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    kept = pods / "default_job-abc_uid-kept"
    statedir.keep(kept)
    (kept / "logs").mkdir()
    finished = []
    for i in range(statedir.KEEP_FINISHED + 5):
        d = pods / f"default_p{i}_uid-{i}"
        d.mkdir()
        (d / "owner").write_text("999999999 1")  # a run that is gone
        os.utime(d, (1_000_000 + i, 1_000_000 + i))  # p0 the oldest
        finished.append(d)
    os.utime(kept, (1, 1))  # older than every other
    statedir.clean_stale(tmp_path)
    left = sorted(d.name for d in pods.iterdir() if d.is_dir())
    newest = sorted(d.name for d in finished[5:])
    assert left == sorted([*newest, kept.name])
    assert (kept / "logs").is_dir()
