"""The pure parts of the pod lifecycle: the kubelet's restart backoff and kubectl's STATUS."""

from __future__ import annotations

from podkit.runtime.backoff import Backoff
from podkit.runtime.status import ContainerTracker, display_status, pod_phase


def test_crash_loop_backoff_has_the_kubelets_timing() -> None:
    b = Backoff()
    delays = [b.next_delay(ran_for=1) for _ in range(9)]
    # Immediate first restart, then 10 s doubling, capped at 300 s (5 minutes).
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    # Ten minutes of clean running forgive everything.
    assert b.next_delay(ran_for=600) == 0
    assert b.next_delay(ran_for=1) == 10


def test_backoff_scale_shrinks_every_duration() -> None:
    b = Backoff(scale=0.01)
    assert [b.next_delay(ran_for=0.1) for _ in range(3)] == [0, 0.1, 0.2]
    assert b.next_delay(ran_for=6) == 0  # 600 s * 0.01 of clean running


def _terminated(name: str, code: int) -> ContainerTracker:
    t = ContainerTracker(name, "x")
    t.run(1)
    t.terminate(code)
    return t


def test_phase_and_kubectl_status_column() -> None:
    running = ContainerTracker("a", "x")
    running.run(1)
    done, failed = _terminated("b", 0), _terminated("c", 2)
    assert pod_phase([running, done], "Never") == "Running"
    assert pod_phase([done], "Never") == "Succeeded"
    assert pod_phase([done, failed], "Never") == "Failed"
    assert pod_phase([done, failed], "OnFailure") == "Running"  # c is about to restart
    assert pod_phase([failed], "Always") == "Running"
    # kubectl: a completed container beside a running, ready one reads Running.
    assert display_status("Running", [running, done], []) == "Running"
    assert display_status("Failed", [failed], []) == "Error"
    waiting = ContainerTracker("w", "x")
    waiting.waiting("CrashLoopBackOff", "back-off 10s")
    assert display_status("Running", [running, waiting], []) == "CrashLoopBackOff"
    init = ContainerTracker("i", "x")
    init.waiting("PodInitializing")
    assert display_status("Pending", [waiting], [_terminated("i0", 0), init]) == "Init:1/2"
    assert display_status("Running", [running], [], stopping=True) == "Terminating"
