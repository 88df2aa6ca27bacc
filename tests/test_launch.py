"""Launchers started ahead (runtime/launch.py): one never used ends when podkit closes it."""

from __future__ import annotations

import os

from podkit.runtime.launch import Launchers


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
