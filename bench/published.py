"""podkit's built-in images as published OCI images (issue 19), in one run:

1. `podkit image build-builtins` twice into the same cache: the second build is the one from a
   warm mmdebstrap cache (the Debian base is packed again, pip installs again).
2. The images' sizes: each layer, the shared total (compressed), from the OCI layout.
3. Cold start of the log-agent: a one-container pod whose image is present, from the command
   until the agent's /readyz answers on 127.0.0.1:2020. `podkit run` of the built-in image
   against `podman kube play` of the published image, pulled from a local registry first.
   podman's pod is on the host's network (no bridge rules left behind), so its manifest has no
   ports (podman 4.3 refuses them there): podman is spared publishing the port. Median of RUNS.

The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the registry and podman harnesses

from podkit import __version__  # noqa: E402
from podman_peer import Podman  # noqa: E402
from registry_harness import Registry  # noqa: E402

RUNS = int(os.environ.get("RUNS", "5"))
CACHE = Path(os.environ.get("PODKIT_BENCH_CACHE", "/var/cache/podkit-bench"))
PODKIT = str(Path(sys.executable).parent / "podkit")
READY = "http://127.0.0.1:2020/readyz"
POD = """apiVersion: v1
kind: Pod
metadata: {{name: agent}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: log-agent
    image: {image}
"""
PORTS = "    ports: [{containerPort: 2020}]\n"


def build(layout: Path, *args: str) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [PODKIT, "image", "build-builtins", "--output", str(layout), "--state-dir",
         str(CACHE / "build-state"), *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.monotonic() - t0


def ready(deadline: float = 60) -> float:
    """Poll until the agent answers; the seconds it took from now."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        try:
            with urllib.request.urlopen(READY, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.01)  # not listening yet: poll again
    raise SystemExit("the log-agent did not become ready in 60 s")


def podkit_start(manifest: Path, state: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [PODKIT, "run", str(manifest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PODKIT_STATE_DIR": str(state)},
    )  # fmt: skip
    try:
        ready()
        return time.monotonic() - t0
    finally:
        proc.send_signal(2)
        proc.wait(30)


def podman_start(peer: Podman, manifest: Path) -> float:
    t0 = time.monotonic()
    peer.run("kube", "play", "--network", "host", "--tls-verify=false", str(manifest))
    try:
        ready()
        return time.monotonic() - t0
    finally:
        peer.run("kube", "down", str(manifest))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir, Registry(Path(tmp_dir) / "registry") as reg:
        tmp = Path(tmp_dir)
        first = build(tmp / "layout")
        warm = build(tmp / "layout", "--push", reg.ref("podkit"))
        index = json.loads((tmp / "layout" / "index.json").read_text())
        blobs = tmp / "layout" / "blobs" / "sha256"
        manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
        layers = [layer["size"] for layer in manifest["layers"]]
        ours, theirs = tmp / "ours.yaml", tmp / "theirs.yaml"
        ours.write_text(POD.format(image="log-agent") + PORTS)
        image = reg.ref(f"podkit/log-agent:{__version__}")
        theirs.write_text(POD.format(image=image))
        peer = Podman(tmp / "podman")
        try:
            peer.run("pull", "--quiet", "--tls-verify=false", image)
            podkit_start(ours, tmp / "state")  # the first start compiles the seccomp filter
            podkit_starts = [podkit_start(ours, tmp / "state") for _ in range(RUNS)]
            podman_starts = [podman_start(peer, theirs) for _ in range(RUNS)]
        finally:
            peer.close()
    figures = {
        "build_first_s": round(first, 1),
        "build_warm_s": round(warm, 1),
        "layers_mb": [round(size / 1e6, 2) for size in layers],
        "shared_total_mb": round(sum(layers) / 1e6, 1),
        "own_layer_mb": round(layers[-1] / 1e6, 2),
        "podkit_log_agent_start_s": round(statistics.median(podkit_starts), 3),
        "podman_log_agent_start_s": round(statistics.median(podman_starts), 3),
    }
    figures["start_ratio"] = round(
        figures["podkit_log_agent_start_s"] / figures["podman_log_agent_start_s"], 2
    )
    print(
        f"build-builtins: {figures['build_first_s']} s, then {figures['build_warm_s']} s from "
        f"the warm cache (with push); layers {figures['layers_mb']} MB, shared total "
        f"{figures['shared_total_mb']} MB (target < 150), podkit's own {figures['own_layer_mb']} "
        "MB (target < 1)"
    )
    print(
        f"log-agent cold start to /readyz, median of {RUNS}: podkit run (built-in) "
        f"{figures['podkit_log_agent_start_s']} s, podman kube play (published image) "
        f"{figures['podman_log_agent_start_s']} s, ratio {figures['start_ratio']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
