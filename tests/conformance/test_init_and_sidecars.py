"""Init containers and native sidecars, as the Kubernetes documentation describes them.

Each manifest is written in the style of the documentation's examples; the asserts are what a
cluster shows for it (kubectl get pod -o yaml, the containers' output).
"""

from __future__ import annotations

import time

from podkit_harness import wait_for, write_manifest

write = write_manifest


def test_init_containers_run_in_order_to_completion_before_the_app(tmp_path, podkit):
    m = write(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: myapp-pod}
        spec:
          restartPolicy: Never
          initContainers:
          - name: init-myservice
            image: busybox
            command: ["sh", "-c", "echo first >> /work/order; sleep 0.3; echo first done"]
            volumeMounts: [{name: work, mountPath: /work}]
          - name: init-mydb
            image: busybox
            command: ["sh", "-c", "echo second >> /work/order"]
            volumeMounts: [{name: work, mountPath: /work}]
          containers:
          - name: myapp-container
            image: busybox
            command: ["sh", "-c", "echo app >> /work/order; cat /work/order"]
            volumeMounts: [{name: work, mountPath: /work}]
          volumes: [{name: work, emptyDir: {}}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[myapp-container] ") == [
        "[myapp-container] first",
        "[myapp-container] second",
        "[myapp-container] app",
    ]
    status = run.status()["status"]
    assert status["phase"] == "Succeeded"
    inits = status["initContainerStatuses"]
    assert [c["name"] for c in inits] == ["init-myservice", "init-mydb"]
    assert all(c["state"]["terminated"]["reason"] == "Completed" for c in inits)
    assert all(c["ready"] for c in inits)
    assert "Init:0/2" in run.text() and "Init:1/2" in run.text()


def test_failing_init_container_with_restart_never_fails_the_pod(tmp_path, podkit):
    m = write(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: init-fails}
        spec:
          restartPolicy: Never
          initContainers:
          - {name: check, image: busybox, command: ["sh", "-c", "echo no db; exit 1"]}
          containers:
          - {name: app, image: busybox, command: ["sh", "-c", "echo must not run"]}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 1, run.text()
    assert not run.stdout_lines("[app] ")
    status = run.status()["status"]
    assert status["phase"] == "Failed"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert "Init:Error" in run.text()


def test_failing_init_container_is_retried_under_on_failure(tmp_path, podkit):
    m = write(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: init-retries}
        spec:
          restartPolicy: OnFailure
          initContainers:
          - name: wait-for-it
            image: busybox
            command: ["sh", "-c", "n=$(cat /w/n 2>/dev/null || echo 0); echo $((n+1)) > /w/n;
                      [ $n -ge 2 ]"]
            volumeMounts: [{name: w, mountPath: /w}]
          containers:
          - {name: app, image: busybox, command: ["sh", "-c", "echo tries=$(cat /w/n)"],
             volumeMounts: [{name: w, mountPath: /w}]}
          volumes: [{name: w, emptyDir: {}}]
        """,
    )
    run = podkit("run", m, "--backoff-scale", "0.01")
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[app] ") == ["[app] tries=3"]
    init = run.status()["status"]["initContainerStatuses"][0]
    assert init["restartCount"] == 2
    assert "BackOff" in run.text()


SIDECAR_POD = """
    apiVersion: v1
    kind: Pod
    metadata: {{name: with-sidecar}}
    spec:
      restartPolicy: {policy}
      terminationGracePeriodSeconds: 5
      initContainers:
      - name: logshipper
        image: busybox
        restartPolicy: Always
        command: ["sh", "-c"]
        args:
        - |
          trap 'echo "sidecar got TERM after app: $(cat /out/app-exited 2>/dev/null)"; exit 7' TERM
          echo started > /out/sidecar-up
          while true; do sleep 0.05; done
        volumeMounts: [{{name: out, mountPath: /out}}]
      containers:
      - name: app
        image: busybox
        command: ["sh", "-c"]
        args:
        - |
          echo "sidecar was up before me: $(cat /out/sidecar-up)"
          trap 'echo yes > /out/app-exited; exit 0' TERM
          {app_body}
        volumeMounts: [{{name: out, mountPath: /out}}]
      volumes: [{{name: out, emptyDir: {{}}}}]
    """


def test_native_sidecar_starts_first_and_stops_last(tmp_path, podkit):
    m = write(
        tmp_path, SIDECAR_POD.format(policy="Always", app_body="while true; do sleep 0.05; done")
    )
    run = podkit("run", m)
    wait_for("the app", lambda: run.stdout_lines("[app] sidecar was up"), 20)
    assert run.stdout_lines("[app] ") == ["[app] sidecar was up before me: started"]
    assert "READY 2/2" in run.text()  # kubectl counts native sidecars in READY
    assert run.stop() == 0
    assert "[logshipper] sidecar got TERM after app: yes" in run.stdout_lines()
    status = run.status()["status"]
    assert status["phase"] == "Succeeded"  # the sidecar's exit 7 at termination is no failure
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 7


def test_sidecar_is_stopped_when_the_app_completes(tmp_path, podkit):
    m = write(tmp_path, SIDECAR_POD.format(policy="Never", app_body="echo job done"))
    run = podkit("run", m)
    started = time.monotonic()
    assert run.wait(30) == 0, run.text()
    assert time.monotonic() - started < 15
    assert run.status()["status"]["phase"] == "Succeeded"
    assert any("sidecar got TERM" in x for x in run.stdout_lines("[logshipper] "))


def test_sidecar_restarts_whenever_it_exits(tmp_path, podkit):
    m = write(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: flaky-sidecar}
        spec:
          initContainers:
          - {name: side, image: busybox, restartPolicy: Always,
             command: ["sh", "-c", "echo side up; sleep 0.2; exit 0"]}
          containers:
          - {name: app, image: busybox, command: ["sleep", "100"]}
        """,
    )
    run = podkit("run", m, "--backoff-scale", "0.01", "--grace", "1")
    wait_for("three sidecar starts", lambda: len(run.stdout_lines("[side] side up")) >= 3, 20)
    restarts = run.status()["status"]["initContainerStatuses"][0]["restartCount"]
    assert restarts >= 2
    assert run.stop() == 0
