"""podkit serve against its targets (issue 17), in one run. No cluster can run here to compare
side by side. k3s publishes 1596 MB as the minimum RAM of a k3s server with a workload on
Kine/SQLite (docs.k3s.io/reference/resource-profiling, k3s v1.26.5).

1. Start: exec of `podkit serve` (fresh state: certificates made) until /readyz answers;
   median of STARTS.
2. The seed pod: `kubectl apply -f examples/pod-definition.yaml` until `kubectl wait
   --for=condition=Ready` returns, with the real kubectl; median of RUNS (each deleted after).
3. 1,000 ConfigMap creates, then 1,000 gets, with the official Python client (requests/s).
4. Watch latency: a create until its ADDED event reaches a watching client; median of 50.
5. Idle RSS with the seed pod running: podkit's own processes (serve, the pod's supervisor
   and its sandbox, the launchers), summed as PSS so shared pages count once; not the
   containers.

Targets: serve_start_s < 1, apply_to_ready_s < 1.5, idle_rss_mb < 120.
The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "api")]

from serve_harness import Served, start  # noqa: E402

from memory import pss_mb, serve_processes  # noqa: E402

STARTS = int(os.environ.get("STARTS", "5"))
RUNS = int(os.environ.get("RUNS", "10"))
SEED = REPO / "examples" / "pod-definition.yaml"


def serve_start(base: Path) -> float:
    t0 = time.monotonic()
    served = start(base)
    took = time.monotonic() - t0
    served.stop()
    return took


def apply_to_ready(served: Served) -> float:
    t0 = time.monotonic()
    wait = ("wait", "--for=condition=Ready", "pod/simple-webapp", "--timeout=60s")
    for args in (("apply", "-f", str(SEED)), wait):
        got = served.kubectl(*args)
        if got.returncode != 0:
            raise SystemExit(f"kubectl {args[0]}: {got.stderr}")
    took = time.monotonic() - t0
    served.kubectl("delete", "pod", "simple-webapp")
    return took


def client_rates(served: Served) -> tuple[float, float, float]:
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(served.kubeconfig)))
    t0 = time.monotonic()
    for i in range(1000):
        api.create_namespaced_config_map(
            "default", {"metadata": {"name": f"bench-{i}"}, "data": {"i": str(i)}}
        )
    creates = 1000 / (time.monotonic() - t0)
    t0 = time.monotonic()
    for i in range(1000):
        api.read_namespaced_config_map(f"bench-{i}", "default")
    gets = 1000 / (time.monotonic() - t0)
    latencies: list[float] = []
    sent: dict[str, float] = {}
    start_rv = api.list_namespaced_config_map("default", limit=1).metadata.resource_version

    def watching() -> None:
        for event in watch.Watch().stream(
            api.list_namespaced_config_map, "default", resource_version=start_rv, timeout_seconds=30
        ):
            name = event["object"].metadata.name
            if name in sent:
                latencies.append(time.monotonic() - sent[name])
                if len(latencies) == 50:
                    return

    watcher = threading.Thread(target=watching)
    watcher.start()
    for i in range(50):
        name = f"watched-{i}"
        sent[name] = time.monotonic()
        api.create_namespaced_config_map("default", {"metadata": {"name": name}})
        time.sleep(0.02)
    watcher.join(60)
    return creates, gets, statistics.median(latencies) * 1000


def podkit_pss_mb(served: Served) -> float:
    """PSS of serve and of every process of the pods' supervisor trees that is podkit's own."""
    return pss_mb([served.proc.pid, *serve_processes(served.proc.pid, served.supervisors())])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        starts = [serve_start(tmp / f"start-{i}") for i in range(STARTS)]
        served = start(tmp / "bench")
        try:
            readies = [apply_to_ready(served) for _ in range(RUNS)]
            creates, gets, watch_ms = client_rates(served)
            served.kubectl("apply", "-f", str(SEED))
            served.kubectl("wait", "--for=condition=Ready", "pod/simple-webapp", "--timeout=60s")
            time.sleep(5)  # a quiet interval: idle is what it holds after the start-up work
            rss = podkit_pss_mb(served)
            served.kubectl("delete", "pod", "simple-webapp")
        finally:
            served.stop()
    figures = {
        "serve_start_s": round(statistics.median(starts), 3),
        "apply_to_ready_s": round(statistics.median(readies), 3),
        "configmap_creates_per_s": round(creates),
        "configmap_gets_per_s": round(gets),
        "watch_latency_ms": round(watch_ms, 2),
        "idle_rss_mb": round(rss, 1),
    }
    print(
        f"podkit serve: ready in {figures['serve_start_s']} s (target < 1); seed pod apply to "
        f"Ready {figures['apply_to_ready_s']} s, median of {RUNS} (target < 1.5); "
        f"{figures['configmap_creates_per_s']} creates/s, {figures['configmap_gets_per_s']} "
        f"gets/s; watch latency {figures['watch_latency_ms']} ms; idle PSS of podkit's "
        f"processes with the seed pod {figures['idle_rss_mb']} MB (target < 120; k3s's "
        "published minimum for a server with a workload, Kine/SQLite: 1596 MB)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
