"""Pod start-up: `podkit run examples/pod-definition.yaml` until port 8080 answers.

Runs podkit RUNS times (median and max of the time from exec to the first HTTP 200 through the
published port), reads podkit's own resident memory while the pod runs, and, as the floor to
compare with, starts the same simple-webapp image directly as a host process (no podkit, no
namespaces) the same number of times. The last line is one JSON object.
Targets (issue 2): ready_s_median < 1.0, podkit_rss_mb < 80.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("RUNS", "10"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.005)
    return False


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def podkit_once(state: str) -> tuple[float, float]:
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podkit.cli.main",
            "run",
            "examples/pod-definition.yaml",
            "-p",
            f"{port}:8080",
            "--no-logs",
            "--grace",
            "5",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PODKIT_STATE_DIR": state},
    )
    try:
        if not wait_http(f"http://127.0.0.1:{port}/", t0 + 20):
            raise SystemExit("podkit: the pod did not answer within 20 s")
        ready = time.monotonic() - t0
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return ready, rss


def bare_once() -> float:
    """The same webapp started directly as a host process: the floor podkit adds to."""
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podkit.images.webapp", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LOG_AGENT_ADDR": "off"},
    )
    try:
        if not wait_http(f"http://127.0.0.1:{port}/", t0 + 20):
            raise SystemExit("bare webapp did not answer within 20 s")
        return time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    with tempfile.TemporaryDirectory() as state:
        results = [podkit_once(state) for _ in range(RUNS)]
    readies = [r for r, _ in results]
    bare = [bare_once() for _ in range(RUNS)]
    figures = {
        "ready_s_median": round(statistics.median(readies), 3),
        "ready_s_max": round(max(readies), 3),
        "podkit_rss_mb": round(max(m for _, m in results), 1),
        "bare_webapp_s_median": round(statistics.median(bare), 3),
        "ratio_podkit_to_bare": round(statistics.median(readies) / statistics.median(bare), 2),
        "runs": RUNS,
    }
    print(
        f"podkit seed pod ready: median {figures['ready_s_median']} s, max "
        f"{figures['ready_s_max']} s (target < 1.0 s); podkit RSS {figures['podkit_rss_mb']} MB "
        f"(target < 80 MB)"
    )
    print(
        f"bare webapp process: median {figures['bare_webapp_s_median']} s; podkit/bare = "
        f"{figures['ratio_podkit_to_bare']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
