"""shareProcessNamespace, as in the documentation's "Share Process Namespace" task."""

from __future__ import annotations

import textwrap

import pytest

from podkit_harness import wait_for

POD = """
    apiVersion: v1
    kind: Pod
    metadata: {{name: nginx}}
    spec:
      shareProcessNamespace: {share}
      containers:
      - name: nginx
        image: nginx-like
        command: ["sleep", "1000"]
      - name: shell
        image: busybox
        command: ["sh", "-c", "sleep 0.5; ps -e -o pid=,comm= | sed 's/^ *//'; sleep 1000"]
    """


@pytest.mark.parametrize("share", [True, False])
def test_containers_see_each_others_processes_only_when_shared(share, tmp_path, podkit):
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(POD.format(share=str(share).lower())))
    run = podkit("run", str(path), "--grace", "1")
    lines = wait_for("ps output", lambda: run.stdout_lines("[shell] ") or None, 20)
    wait_for("ps done", lambda: any("ps" in x for x in run.stdout_lines("[shell] ")), 5)
    processes = [x.removeprefix("[shell] ") for x in run.stdout_lines("[shell] ")]
    commands = [p.split()[-1] for p in processes]
    if share:
        assert processes[0] == "1 pause"  # the pod's init, as in a cluster
        assert "sleep" in commands, lines  # the nginx container's process
    else:
        assert processes[0] == "1 sh"  # the container is PID 1 of its own namespace
        assert "sleep" not in commands, lines
    assert run.stop() == 0
