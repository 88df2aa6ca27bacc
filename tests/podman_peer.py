"""podman, the peer, configured as it works on this machine: runc (crun refuses the hybrid
cgroups and rlimits here), `cgroup_manager = "cgroupfs"`, `default_ulimits = []`, and its storage
and config under a directory of the caller's (its run state in a short /tmp directory: podman
refuses one longer than 50 characters), so nothing of the host's podman is used or changed.
Containers use the host's network or none: podman's bridge (netavark) would add iptables rules
to the host that outlive the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CONTAINERS_CONF = """[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""


class Podman:
    def __init__(self, workdir: Path) -> None:
        for tool in ("podman", "runc"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing: `make debs` installs it")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.conf = workdir / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        # podman refuses a run root longer than 50 characters: a short one of its own in /tmp
        self.runroot = tempfile.mkdtemp(prefix="podman-")

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.workdir / "root"),
            "--runroot",
            self.runroot,
            "--storage-driver",
            "overlay",
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def reset(self) -> None:
        """Remove every container and image, and unmount podman's storage."""
        self.run("system", "reset", "--force", check=False, timeout=120)
        os.makedirs(self.runroot, exist_ok=True)  # reset removes it; a next use needs it

    def close(self) -> None:
        self.reset()
        shutil.rmtree(self.runroot, ignore_errors=True)
