"""Launchers (runtime/launch.py): one started ahead and never used ends when podkit closes it;
one used leaves the container as podkit's own child and is gone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from podkit.runtime.launch import Launchers, parse_report
from podkit_harness import wait_for, write_manifest


def test_a_launcher_started_ahead_and_never_used_exits_when_closed() -> None:
    launchers = Launchers(ahead=1)
    spawned = launchers._ready[0]
    pid = spawned.popen.pid
    os.kill(pid, 0)  # it is running, waiting for a spec
    launchers.close()
    assert spawned.popen.returncode == 0
    assert not os.path.exists(f"/proc/{pid}")  # reaped, not a zombie


def test_take_spawns_another_once_the_ones_ahead_are_used() -> None:
    launchers = Launchers(ahead=1)
    first, second = launchers.take(), launchers.take()
    try:
        assert first.popen.pid != second.popen.pid
        assert not launchers._ready
    finally:
        first.discard()
        second.discard()
    assert first.popen.returncode == second.popen.returncode == 0


def test_parse_report_reads_started_error_and_a_dead_launcher() -> None:
    assert parse_report("started 42") == (True, 42, "")
    assert parse_report("error 42 exec: no such file") == (False, 42, "exec: no such file")
    assert parse_report("error 0 setns: Operation not permitted") == (
        False,
        0,
        "setns: Operation not permitted",
    )
    assert parse_report("") == (False, 0, "")


def test_a_running_container_is_podkits_child_with_default_signals(
    tmp_path: Path, podkit: Any
) -> None:
    """No launcher stays behind the container (it costs an interpreter per container), and
    no signal is ignored in the container (Python ignores SIGPIPE and SIGXFSZ, and `make`
    may pass others on), as runc gives them."""
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: lean}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: app
            image: busybox
            command: [sh, -c, "grep SigIgn /proc/self/status; exec sleep 60"]
        """,
    )
    run = podkit("run", m)
    line = wait_for(
        "the container's SigIgn line", lambda: next(iter(run.stdout_lines("[app]")), None)
    )
    ignored = int(line.split()[-1], 16)
    assert ignored & 0x7FFFFFFF == 0, line  # 1-31; 32 and 33 are the C library's own
    exec_files = list((run.state_dir / "pods").glob("*/containers/app/exec.json"))
    pid = json.loads(exec_files[0].read_text())["pid"]

    def children() -> list[str]:
        listed = Path(f"/proc/{run.proc.pid}/task/{run.proc.pid}/children").read_text().split()
        return [c for c in listed if Path(f"/proc/{c}").exists()]

    assert str(pid) in children()
    # The sandbox and PID 1, and no launcher: it exits once it has reported (a moment).
    wait_for(
        "the launcher gone",
        lambda: (
            sorted(Path(f"/proc/{c}/comm").read_text().strip() for c in children())
            == ["podkit-sandbox", "sleep"]
        ),
        5,
    )
    run.stop()
    assert not Path(f"/proc/{pid}").exists()  # reaped by podkit, not left a zombie
