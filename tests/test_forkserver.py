"""The fork server serve starts pod supervisors from (runtime/forkserver.py): each is `podkit
run` in a session of its own, its exit code is reported, and it outlives the server."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from podkit.runtime.forkserver import ForkServer
from podkit_harness import PODKIT_ENV, wait_for, write_manifest

POD = """
apiVersion: v1
kind: Pod
metadata: {name: forked}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: busybox, command: [sleep, "60"]}
"""


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_a_refused_pod_reports_its_exit_code_and_its_error(tmp_path: Path) -> None:
    server = ForkServer(tmp_path / "server.log", tmp_path)
    try:
        with open(tmp_path / "pod.log", "ab") as log:
            pid = server.spawn(["run", str(tmp_path / "missing.yaml")], log.fileno())
        code = wait_for("the supervisor's exit code", lambda: server.exit_code(pid), 30)
    finally:
        server.close()
    assert code == 2  # bad input, as `podkit run` exits for it
    assert "missing.yaml" in (tmp_path / "pod.log").read_text()
    assert not Path(f"/proc/{pid}").exists()  # reaped by the server


def test_a_supervisor_runs_in_its_own_session_and_outlives_the_server(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, POD)
    state = tmp_path / "state"
    server = ForkServer(tmp_path / "server.log", state)
    with open(tmp_path / "pod.log", "ab") as log:
        pid = server.spawn(
            [
                "run",
                manifest,
                "--state-dir",
                str(state),
                "--no-logs",
                "--no-publish",
                "--image-catalog",
                PODKIT_ENV["PODKIT_IMAGE_CATALOG"],
            ],  # fmt: skip
            log.fileno(),
        )
    try:
        wait_for("the pod's container", lambda: list(state.glob("pods/*/containers/app/exec.json")))
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "podkit-pod"
        assert int(_stat(pid)[3]) == pid  # session id: a session of its own, not serve's
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[-3:-1] == [b"--state-dir", str(state).encode()]  # whose it is
        server.close()  # serve stopping its fork server
        os.kill(pid, 0)  # still running
        assert list(state.glob("pods/*/containers/app/exec.json"))
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for("the supervisor stopping its pod", lambda: _gone(pid), 30)


def _gone(pid: int) -> bool:
    """Exited (a zombie until whichever process adopted it reaps it)."""
    try:
        return _stat(pid)[0] == "Z"
    except FileNotFoundError:
        return True
