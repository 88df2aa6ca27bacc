"""Pod lifecycle: start to Ready, and SIGTERM to every process gone.

The pod has one native sidecar and two app containers (HTTP servers) with readiness probes
(periodSeconds: 1). `podkit run -o json` reports each status change; the time to Ready is when
the Ready condition turns True. The stop time runs from SIGTERM to podkit's exit, after which no
process of the pod may be left (checked through a marker in their environment). Median of RUNS
runs. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("RUNS", "10"))
MARKER = f"podkit-bench-{os.getpid()}"

POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: lifecycle-bench}}
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: sidecar
    image: x
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    env: [{{name: MARKER, value: {MARKER}}}]
  containers:
""" + "".join(
    f"""
  - name: app{i}
    image: x
    command: ["sh", "-c", "trap 'exit 0' TERM; python3 -m http.server --bind 0.0.0.0 {port} &
              wait"]
    env: [{{name: MARKER, value: {MARKER}}}]
    readinessProbe:
      httpGet: {{path: /, port: {port}}}
      periodSeconds: 1
"""
    for i, port in ((1, 8101), (2, 8102))
)


def pod_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"MARKER={MARKER}".encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def once(manifest: str, state: str, catalog: str) -> tuple[float, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podkit.cli.main", "run", manifest, "-o", "json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        # `x` runs host programs (sh, python3): named so in an image catalog, as podkit asks
        env={**os.environ, "PODKIT_STATE_DIR": state, "PODKIT_IMAGE_CATALOG": catalog},
    )
    assert proc.stdout is not None
    ready = None
    for line in proc.stdout:
        conditions = {c["type"]: c["status"] for c in json.loads(line)["status"]["conditions"]}
        if conditions.get("Ready") == "True":
            ready = time.monotonic() - t0
            break
    if ready is None:
        raise SystemExit("the pod never became Ready")
    t1 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    proc.wait(30)
    stop = time.monotonic() - t1
    left = pod_processes()
    if left:
        raise SystemExit(f"processes left after podkit exited: {left}")
    return ready, stop


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = os.path.join(tmp, "pod.yaml")
        catalog = os.path.join(tmp, "images.yaml")
        Path(catalog).write_text("images:\n  x: {}\n")
        Path(manifest).write_text(POD)
        results = [once(manifest, os.path.join(tmp, "state"), catalog) for _ in range(RUNS)]
    ready = statistics.median(r for r, _ in results)
    stop = statistics.median(s for _, s in results)
    print(
        f"1 sidecar + 2 apps with readiness probes (period 1 s), {RUNS} runs: start to Ready "
        f"median {ready:.3f} s, SIGTERM to all processes gone median {stop:.3f} s"
    )
    print(
        json.dumps(
            {"ready_s_median": round(ready, 3), "stop_s_median": round(stop, 3), "runs": RUNS}
        )
    )


if __name__ == "__main__":
    main()
