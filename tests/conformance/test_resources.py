"""Resource limits, as in the documentation's "Assign Memory Resources" task."""

from __future__ import annotations

import textwrap

from podkit.runtime import cgroups

POD = """
    apiVersion: v1
    kind: Pod
    metadata: {name: memory-demo}
    spec:
      restartPolicy: Never
      containers:
      - name: memory-demo-ctr
        image: polinux/stress
        resources:
          requests: {memory: "50Mi"}
          limits: {memory: "100Mi"}
        command: ["python3", "-c"]
        args:
        - |
          import sys
          chunks = []
          for i in range(MB):
              chunks.append(bytearray(1024 * 1024))
          print("allocated", MB, "MiB", flush=True)
"""


def run_with(tmp_path, podkit, mb: int):
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(POD).replace("MB", str(mb)))
    run = podkit("run", str(path))
    code = run.wait(30)
    return run, code, run.status()["status"]["containerStatuses"][0]


def test_container_over_its_memory_limit_is_oom_killed(tmp_path, podkit):
    driver, why = cgroups.detect()
    assert driver is not None, f"this machine kind has cgroups; detect() said: {why}"
    run, code, status = run_with(tmp_path, podkit, 250)
    assert code == 1, run.text()
    terminated = status["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
    assert not run.stdout_lines("[memory-demo-ctr] allocated")


def test_container_within_its_memory_limit_completes(tmp_path, podkit):
    run, code, status = run_with(tmp_path, podkit, 20)
    assert code == 0, run.text()
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert run.stdout_lines("[memory-demo-ctr] ") == ["[memory-demo-ctr] allocated 20 MiB"]
