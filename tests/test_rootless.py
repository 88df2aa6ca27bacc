"""podkit as an ordinary user: user namespaces, loopback-only pod network, published ports."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit_harness import HOST_IMAGES, REPO, free_port, http_get, wait_for

USER = "podkit-rootless"
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, closed to users


@pytest.fixture
def user_dir() -> Iterator[Path]:
    # useradd (passwd), setpriv (util-linux) and python3 are in the Makefile's DEBS.
    for tool in ("useradd", "setpriv", SYSTEM_PYTHON):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs it"
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert version == str(sys.version_info[:2]), (
        f"{SYSTEM_PYTHON} is {version}, podkit's packages are for {sys.version_info[:2]}"
    )
    created = subprocess.run(["id", USER], capture_output=True).returncode != 0
    if created:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
    home = Path(tempfile.mkdtemp(prefix="podkit-rootless-"))
    user = pwd.getpwnam(USER)
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        yield home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        if created:  # userdel refuses while a killed process of the user lingers
            wait_for(
                "the test user removed",
                lambda: subprocess.run(["userdel", USER], capture_output=True).returncode in (0, 6),
                10,
            )


def as_user(user_dir: Path, *args: str) -> list[str]:
    """`podkit ARGS` as the test user; setpriv execs podkit itself, so signals reach it."""
    path = os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO / "src")])
    return [
        "setpriv",
        f"--reuid={USER}",
        f"--regid={USER}",
        "--clear-groups",
        "env",
        f"PYTHONPATH={path}",
        f"PODKIT_STATE_DIR={user_dir}/state",
        f"PODKIT_IMAGE_CATALOG={HOST_IMAGES}",
        SYSTEM_PYTHON,
        "-m",
        "podkit.cli.main",
        *args,
    ]


def test_seed_pod_runs_as_an_ordinary_user(user_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        as_user(
            user_dir,
            "run",
            str(REPO / "examples" / "pod-definition.yaml"),
            "-p",
            f"{port}:8080",
            "--no-color",
        ),
        cwd=user_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    # read_until reads a pipe: a pod that never gets there must not hang the suite.
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()

    def read_until(needle: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if needle in line:
                return
        raise AssertionError(f"{needle!r} never came:\n{''.join(lines)}")

    try:
        read_until("READY 2/2")
        assert "loopback only" in "".join(lines)  # no bridge without root, and podkit says so
        status, body = wait_for(
            "the webapp", lambda: http_get(f"http://127.0.0.1:{port}/api/info"), 15
        )
        assert status == 200 and json.loads(body)["pod_name"] == "simple-webapp"
        read_until('"path":"/api/info"')  # the log agent shipped the request
        owner = os.stat(next((user_dir / "state" / "pods").glob("*/status.json"))).st_uid
        assert owner == pwd.getpwnam(USER).pw_uid  # podkit ran as the user, not as root
        # port-forward works rootless too: into the unpublished log agent's admin port.
        fwd = subprocess.Popen(
            as_user(user_dir, "port-forward", "simple-webapp", ":2020"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert fwd.stdout is not None
            line = fwd.stdout.readline().strip()
            assert line.startswith("Forwarding from 127.0.0.1:"), fwd.stderr.read()
            admin = int(line.split()[2].rsplit(":", 1)[1])
            assert (
                wait_for(
                    "the admin port", lambda: http_get(f"http://127.0.0.1:{admin}/healthz"), 10
                )[0]
                == 200
            )
        finally:
            fwd.send_signal(signal.SIGINT)
            assert fwd.wait(10) == 0
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0, "".join(lines)


def test_exec_and_tcp_probes_work_rootless(user_dir: Path) -> None:
    manifest = user_dir / "probed.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probed}\nspec:\n  containers:\n"
        "  - name: c\n    image: x\n"
        '    command: ["sh", "-c", "touch /tmp/ok; exec python3 -m http.server 8000"]\n'
        "    readinessProbe: {exec: {command: [cat, /tmp/ok]}, periodSeconds: 1}\n"
        "    startupProbe: {tcpSocket: {port: 8000}, periodSeconds: 1, failureThreshold: 30}\n"
        "    resources: {limits: {memory: 64Mi}}\n"
    )
    manifest.chmod(0o644)
    proc = subprocess.Popen(
        as_user(user_dir, "run", str(manifest), "-o", "json", "--grace", "1"),
        cwd=user_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # one Pod document per status change
            status = json.loads(line)["status"]
            if status["containerStatuses"][0]["ready"]:
                break
        else:
            raise AssertionError(proc.stderr.read() if proc.stderr else "no output")
        # Ready needs both: the startup probe (tcp, through the sandbox's socket) gates the
        # readiness probe (exec, through nsenter into the user namespace).
        assert status["containerStatuses"][0]["started"] is True
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert proc.stderr is not None
        # No cgroups for an ordinary user here: podkit says once that limits are not enforced.
        assert proc.stderr.read().count("resource limits are not enforced") == 1
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0


def test_rootless_containers_are_confined_too(user_dir: Path) -> None:
    """What a user namespace allows: the default capabilities (inside it), seccomp, the masked
    and read-only /proc paths; with no cgroups for an ordinary user, no device allowlist."""
    manifest = user_dir / "confined.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: confined}\nspec:\n"
        "  restartPolicy: Never\n  containers:\n  - name: c\n    image: x\n"
        '    command: [sh, -c, \'grep -E "^(CapEff|Seccomp):" /proc/self/status; '
        "echo core > /proc/sys/kernel/core_pattern || echo refused']\n"
        "  - name: nnp\n    image: x\n"
        "    command: [sh, -c, 'grep -E \"^(CapEff|NoNewPrivs):\" /proc/self/status']\n"
        "    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n"
    )
    manifest.chmod(0o644)
    result = subprocess.run(
        as_user(user_dir, "run", str(manifest), "--no-color"),
        cwd=user_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[c] CapEff:\t00000000a80425fb" in lines
    assert "[c] Seccomp:\t2" in lines
    assert "[c] refused" in lines
    assert "[nnp] CapEff:\t0000000000000000" in lines
    assert "[nnp] NoNewPrivs:\t1" in lines
