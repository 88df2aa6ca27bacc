"""`podkit run -o json|yaml`, the status file and `podkit get pods`, in Kubernetes' shapes."""

from __future__ import annotations

import json
import textwrap

import yaml

from podkit_harness import REPO, free_port, run_podkit, wait_for


def test_run_output_json_streams_the_pod_through_its_phases(tmp_path, podkit):
    m = tmp_path / "pod.yaml"
    m.write_text(
        textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: job}
        spec:
          restartPolicy: Never
          initContainers: [{name: prepare, image: x, command: ["true"]}]
          containers: [{name: work, image: x, command: ["sh", "-c", "echo working; sleep 0.3"]}]
        """)
    )
    run = podkit("run", str(m), "-o", "json")
    assert run.wait(30) == 0, run.text()
    docs = [json.loads(line) for line in run.out]  # stdout holds nothing but the documents
    assert all(d["kind"] == "Pod" and d["metadata"]["name"] == "job" for d in docs)
    phases = [d["status"]["phase"] for d in docs]
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and "Running" in phases
    final = docs[-1]["status"]
    assert {c["type"] for c in final["conditions"]} == {
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    assert all(c["lastTransitionTime"] for c in final["conditions"])
    work = final["containerStatuses"][0]
    assert work["state"]["terminated"]["reason"] == "Completed"
    assert work["restartCount"] == 0 and work["ready"] is False and work["started"] is False
    assert final["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    # Events were recorded with timestamps, kubelet reasons and the container's field path.
    events = json.loads(next(run.state_dir.glob("pods/*/events.json")).read_text())["items"]
    reasons = [(e["reason"], e["involvedObject"].get("fieldPath")) for e in events]
    assert reasons[0] == ("Scheduled", None)
    for r in ("Pulled", "Created", "Started"):
        assert (r, "spec.initContainers{prepare}") in reasons
        assert (r, "spec.containers{work}") in reasons
    assert all(e["firstTimestamp"] for e in events)


def test_output_yaml_and_bad_output_value(tmp_path, state_dir):
    m = tmp_path / "pod.yaml"
    m.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec:\n  restartPolicy: Never\n"
        "  containers: [{name: c, image: x, command: ['true']}]\n"
    )
    result = run_podkit("run", str(m), "-o", "yaml", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs[-1]["status"]["phase"] == "Succeeded"
    bad = run_podkit("run", str(m), "-o", "xml", state_dir=state_dir)
    assert bad.returncode == 2 and "-o 'xml'" in bad.stderr


def test_get_pods_shows_what_kubectl_would(podkit, state_dir):
    run = podkit(
        "run",
        str(REPO / "examples" / "pod-definition.yaml"),
        "-p",
        f"{free_port()}:8080",
        "--no-logs",
    )
    run.wait_stderr("READY 2/2")

    def table() -> str | None:
        out = run_podkit("get", "pods", state_dir=state_dir).stdout
        return out if "2/2" in out else None

    out = wait_for("podkit get pods", table, 10)
    header, row = out.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["simple-webapp", "2/2", "Running", "0"]
    doc = json.loads(
        run_podkit("get", "pod", "simple-webapp", "-o", "json", state_dir=state_dir).stdout
    )
    assert doc["status"]["phase"] == "Running"
    missing = run_podkit("get", "pod", "nope", state_dir=state_dir)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr
    assert run.stop() == 0
    assert "No resources found" in run_podkit("get", "pods", state_dir=state_dir).stderr


def test_port_forward_into_a_running_pod(podkit, state_dir):
    import signal
    import subprocess
    import sys

    from podkit_harness import http_get

    run = podkit("run", str(REPO / "examples" / "pod-definition.yaml"), "--no-publish", "--no-logs")
    run.wait_stderr("READY 2/2")
    local = free_port()
    fwd = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podkit.cli.main",
            "port-forward",
            "simple-webapp",
            f"{local}:8080",
            "2020",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "PODKIT_STATE_DIR": str(state_dir)},
    )
    try:
        assert fwd.stdout is not None
        assert fwd.stdout.readline().strip() == f"Forwarding from 127.0.0.1:{local} -> 8080"
        second = fwd.stdout.readline().strip()  # ":2020": any free local port
        assert second.startswith("Forwarding from 127.0.0.1:") and second.endswith(" -> 2020")
        admin = int(second.split()[2].rsplit(":", 1)[1])
        status, body = wait_for(
            "the webapp through the forward",
            lambda: http_get(f"http://127.0.0.1:{local}/api/info"),
            10,
        )
        assert status == 200 and json.loads(body)["pod_name"] == "simple-webapp"
        # The log agent's admin port, which is not published, is reachable through it too.
        assert (
            wait_for(
                "the agent's admin port", lambda: http_get(f"http://127.0.0.1:{admin}/healthz"), 10
            )[0]
            == 200
        )
        # Inside the pod's network it is at most a container there: nobody, no capability,
        # no_new_privs, the RuntimeDefault seccomp filter.
        with open(f"/proc/{fwd.pid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        assert status["Uid"].split()[0] == status["Gid"].split()[0] == "65534"
        assert status["CapEff"] == status["CapBnd"] == "0000000000000000"
        assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
    finally:
        fwd.send_signal(signal.SIGINT)
        assert fwd.wait(10) == 0
    assert run.stop() == 0
    missing = run_podkit("port-forward", "simple-webapp", "8080", state_dir=state_dir)
    assert missing.returncode == 1 and "not found" in missing.stderr
