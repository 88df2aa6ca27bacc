"""Probes and lifecycle hooks, as in the documentation's "Configure Liveness, Readiness and
Startup Probes" and "Attach Handlers to Container Lifecycle Events" tasks."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from podkit_harness import wait_for


def start(tmp_path: Path, podkit, text: str, *args: str):
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(text))
    return podkit("run", str(path), *args)


def container(run, name: str) -> dict:
    doc = run.status()["status"]
    every = doc.get("initContainerStatuses", []) + doc["containerStatuses"]
    return next(c for c in every if c["name"] == name)


def events(run) -> list[tuple[str, str]]:
    items = json.loads(next(run.state_dir.glob("pods/*/events.json")).read_text())["items"]
    return [(e["reason"], e["message"]) for e in items]


def test_readiness_probe_gates_ready_and_liveness_restarts(tmp_path, podkit):
    run = start(
        tmp_path,
        podkit,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: liveness-exec}
        spec:
          containers:
          - name: liveness
            image: registry.k8s.io/busybox
            command: ["sh", "-c", "sleep 1; touch /tmp/healthy; sleep 1.5; rm -f /tmp/healthy;
                       sleep 600"]
            readinessProbe:
              exec: {command: [cat, /tmp/healthy]}
              periodSeconds: 1
            livenessProbe:
              exec: {command: [cat, /tmp/healthy]}
              initialDelaySeconds: 1
              periodSeconds: 1
              failureThreshold: 2
        """,
        "--grace",
        "1",
        "--backoff-scale",
        "0.01",
    )
    first = wait_for("running", lambda: container(run, "liveness")["state"].get("running"), 10)
    assert first and container(run, "liveness")["ready"] is False  # none before a success
    wait_for("ready", lambda: container(run, "liveness")["ready"], 10)
    conditions = {c["type"]: c["status"] for c in run.status()["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["ContainersReady"] == "True"
    wait_for("restart by liveness", lambda: container(run, "liveness")["restartCount"] >= 1, 15)
    seen = events(run)
    assert (
        "Unhealthy",
        "Readiness probe failed: cat: /tmp/healthy: No such file or directory\n",
    ) in seen or any(r == "Unhealthy" and m.startswith("Liveness probe failed") for r, m in seen)
    assert ("Killing", "Container liveness failed liveness probe, will be restarted") in seen
    assert run.stop() == 0


def test_http_and_tcp_probes_with_named_port_and_startup_gating(tmp_path, podkit):
    run = start(
        tmp_path,
        podkit,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: http-probes}
        spec:
          containers:
          - name: web
            image: x
            command: ["sh", "-c", "sleep 1.2; exec python3 -m http.server --bind 0.0.0.0 8000"]
            workingDir: /etc
            ports: [{name: http, containerPort: 8000}]
            startupProbe:
              tcpSocket: {port: 8000}
              periodSeconds: 1
              failureThreshold: 10
            readinessProbe:
              httpGet: {path: /hostname, port: http, httpHeaders: [{name: X-Probe, value: "yes"}]}
              periodSeconds: 1
        """,
        "--grace",
        "1",
    )
    wait_for("started", lambda: container(run, "web")["state"].get("running"), 10)
    assert container(run, "web")["started"] is False  # the startup probe has not passed yet
    wait_for("ready", lambda: container(run, "web")["ready"], 15)
    assert container(run, "web")["started"] is True
    # The server saw the kubelet's probe request, with our header and kube-probe's agent.
    wait_for(
        "probe in the access log",
        lambda: any('"GET /hostname HTTP/1.1" 200' in x for x in run.err + run.out),
        5,
    )
    assert run.stop() == 0


def test_sidecar_with_startup_probe_holds_back_the_app(tmp_path, podkit):
    run = start(
        tmp_path,
        podkit,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: gated}
        spec:
          initContainers:
          - name: proxy
            image: x
            restartPolicy: Always
            command: ["sh", "-c", "sleep 1; touch /tmp/up; sleep 600"]
            startupProbe:
              exec: {command: [test, -f, /tmp/up]}
              periodSeconds: 1
          containers:
          - {name: app, image: x, command: ["sh", "-c", "echo app started; sleep 600"]}
        """,
        "--grace",
        "1",
    )
    t0 = time.monotonic()
    wait_for("app", lambda: run.stdout_lines("[app] app started"), 15)
    assert time.monotonic() - t0 >= 1.0  # not before the sidecar's startup probe passed
    assert container(run, "proxy")["started"] is True
    assert run.stop() == 0


def test_post_start_and_pre_stop_hooks(tmp_path, podkit):
    out = tmp_path / "out"
    out.mkdir()
    run = start(
        tmp_path,
        podkit,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: lifecycle-demo}}
        spec:
          terminationGracePeriodSeconds: 10
          containers:
          - name: lifecycle-demo-container
            image: nginx
            command: ["sh", "-c", "while [ ! -f /usr/share/message ]; do sleep 0.05; done;
                       cat /usr/share/message; trap 'echo TERM; exit 0' TERM;
                       while true; do sleep 0.05; done"]
            lifecycle:
              postStart:
                exec: {{command: ["/bin/sh", "-c", "echo Hello from the postStart handler >
                                  /usr/share/message"]}}
              preStop:
                exec: {{command: ["/bin/sh", "-c", "echo stopping gracefully > /out/prestop"]}}
            volumeMounts: [{{name: out, mountPath: /out}}]
          volumes: [{{name: out, hostPath: {{path: {out}}}}}]
        """,
    )
    wait_for(
        "postStart output",
        lambda: run.stdout_lines("[lifecycle-demo-container] Hello from the postStart"),
        15,
    )
    assert run.stop() == 0
    assert (out / "prestop").read_text() == "stopping gracefully\n"
    assert "[lifecycle-demo-container] TERM" in run.stdout_lines()  # SIGTERM came after preStop


def test_failing_post_start_kills_the_container_and_pre_stop_sleep_delays_term(tmp_path, podkit):
    run = start(
        tmp_path,
        podkit,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: hooks}
        spec:
          restartPolicy: Never
          containers:
          - name: bad
            image: x
            command: ["sleep", "600"]
            lifecycle:
              postStart: {exec: {command: ["sh", "-c", "exit 3"]}}
          - name: slow-stop
            image: x
            command: ["sleep", "600"]
            lifecycle:
              preStop: {sleep: {seconds: 1}}
        """,
        "--grace",
        "5",
    )
    wait_for("bad killed", lambda: "terminated" in container(run, "bad")["state"], 15)
    assert any(r == "FailedPostStartHook" for r, _ in events(run))
    wait_for("slow-stop running", lambda: container(run, "slow-stop")["state"].get("running"))
    t0 = time.monotonic()
    assert run.stop() == 0
    assert time.monotonic() - t0 >= 1.0  # the preStop sleep ran before SIGTERM


def test_pre_stop_http_get_reaches_the_container_before_sigterm(tmp_path, podkit):
    run = start(
        tmp_path,
        podkit,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: http-hook}
        spec:
          containers:
          - name: web
            image: x
            command: ["python3", "-m", "http.server", "8000"]
            ports: [{name: web, containerPort: 8000}]
            readinessProbe: {tcpSocket: {port: web}, periodSeconds: 1}
            lifecycle:
              preStop:
                httpGet: {path: /prestop, port: web}
        """,
        "--grace",
        "1",
    )
    wait_for("ready", lambda: container(run, "web")["ready"], 15)
    assert run.stop() == 0
    assert any('"GET /prestop HTTP/1.1"' in x for x in run.stdout_lines("[web] "))
