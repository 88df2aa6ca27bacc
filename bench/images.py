"""Registry images against podman (issue 16), same run, same local registry, same images.

1. Pull into an empty store: Debian bookworm with nginx-light (mmdebstrap, about 180 MB unpacked,
   three gzip layers; tests/debian_images.py), `podkit pull` against `podman pull`, MB/s of
   compressed bytes each (median of PULLS runs, each into an empty store).
2. A two-container busybox pod whose image is present: `podkit run` until both containers run
   (its -o json output) against `podman kube play` (which returns once they run); median of RUNS.
   podman's pod gets `--network none` (its bridge would leave iptables rules on the host); the
   podkit pod gets its network as usual, so podman is spared that work.
3. Peak RSS of `podkit pull` (ru_maxrss of the process, from wait4).

Targets: pull_ratio >= 1.0, start_ratio <= 0.8, pull_peak_rss_mb < 100.
The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the registry, image and podman harnesses

from debian_images import NGINX_CONFIG, debian_rootfs, layout_from_rootfs  # noqa: E402
from podman_peer import Podman  # noqa: E402
from registry_harness import PushedImage, Registry, TestImages  # noqa: E402

PULLS = int(os.environ.get("PULLS", "3"))
RUNS = int(os.environ.get("RUNS", "10"))
CACHE = Path(os.environ.get("PODKIT_BENCH_CACHE", "/var/cache/podkit-bench"))

POD = """apiVersion: v1
kind: Pod
metadata: {{name: two-boxes}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: a, image: {image}, command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]}}
  - {{name: b, image: {image}, command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]}}
"""


def podkit(*args: str, state: Path) -> subprocess.Popen[str]:
    """The `podkit` command as a user runs it: the virtualenv's console script."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "podkit"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PODKIT_STATE_DIR": str(state)},
    )


def podkit_pull(ref: str, state: Path) -> tuple[float, float]:
    """Seconds, and the process's peak RSS in MB."""
    shutil.rmtree(state, ignore_errors=True)
    t0 = time.monotonic()
    proc = podkit("pull", ref, state=state)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"podkit pull failed: {proc.stderr.read() if proc.stderr else ''}")
    return took, usage.ru_maxrss / 1024


def podman_pull(peer: Podman, ref: str) -> float:
    peer.reset()
    t0 = time.monotonic()
    peer.run("pull", "--quiet", "--tls-verify=false", ref)
    return time.monotonic() - t0


def podkit_start(manifest: Path, state: Path) -> float:
    """Seconds from exec to both containers running."""
    t0 = time.monotonic()
    proc = podkit("run", str(manifest), "-o", "json", state=state)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            statuses = json.loads(line)["status"].get("containerStatuses", [])
            if len(statuses) == 2 and all("running" in s["state"] for s in statuses):
                return time.monotonic() - t0
        raise SystemExit(f"podkit run ended early: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        proc.send_signal(2)
        proc.wait(30)


def podman_start(peer: Podman, manifest: Path) -> float:
    t0 = time.monotonic()
    peer.run("kube", "play", "--network", "none", "--tls-verify=false", str(manifest))
    took = time.monotonic() - t0
    peer.run("kube", "down", str(manifest))
    return took


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir, Registry(Path(tmp_dir) / "registry") as reg:
        tmp = Path(tmp_dir)
        rootfs = debian_rootfs("nginx-light", CACHE)
        nginx: PushedImage = reg.push(
            layout_from_rootfs(rootfs, tmp / "nginx", "nginx", NGINX_CONFIG), "bench/nginx:1"
        )
        busybox = reg.push(TestImages(tmp / "images").busybox(), "bench/busybox:1")
        compressed = sum(layer["size"] for layer in nginx.manifest["layers"])
        peer = Podman(tmp / "podman")
        try:
            ours = [podkit_pull(nginx.reference, tmp / "pull-state") for _ in range(PULLS)]
            theirs = [podman_pull(peer, nginx.reference) for _ in range(PULLS)]
            state = tmp / "run-state"
            manifest = tmp / "pod.yaml"
            manifest.write_text(POD.format(image=busybox.reference))
            podkit_pull(busybox.reference, state)
            peer.reset()
            peer.run("pull", "--quiet", "--tls-verify=false", busybox.reference)
            podkit_start(manifest, state)  # the first start compiles the seccomp filter
            starts = [podkit_start(manifest, state) for _ in range(RUNS)]
            podman_starts = [podman_start(peer, manifest) for _ in range(RUNS)]
        finally:
            peer.close()
    mb = compressed / 1e6
    pull_s = statistics.median(t for t, _ in ours)
    podman_pull_s = statistics.median(theirs)
    figures = {
        "image_mb_compressed": round(mb, 1),
        "pull_mb_s": round(mb / pull_s, 1),
        "podman_pull_mb_s": round(mb / podman_pull_s, 1),
        "pull_ratio": round(podman_pull_s / pull_s, 2),
        "pod_start_s": round(statistics.median(starts), 3),
        "podman_pod_start_s": round(statistics.median(podman_starts), 3),
        "start_ratio": round(statistics.median(starts) / statistics.median(podman_starts), 2),
        "pull_peak_rss_mb": round(max(r for _, r in ours), 1),
    }
    print(
        f"pull {figures['image_mb_compressed']} MB (nginx-light, 3 layers): podkit "
        f"{figures['pull_mb_s']} MB/s, podman {figures['podman_pull_mb_s']} MB/s, ratio "
        f"{figures['pull_ratio']} (target >= 1.0); podkit pull peak RSS "
        f"{figures['pull_peak_rss_mb']} MB (target < 100)"
    )
    print(
        f"two-container busybox pod, image present, median of {RUNS}: podkit run "
        f"{figures['pod_start_s']} s, podman kube play {figures['podman_pod_start_s']} s, ratio "
        f"{figures['start_ratio']} (target <= 0.8)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
