"""Deployments and ReplicaSets through podkit serve, driven by the real kubectl: rollouts
(rolling and Recreate), scaling and which pods go, a deleted pod replaced, history, undo,
pause and restart, cascading deletion in its three modes, and the apiserver's refusals.
Containers run host programs (tests/host-images.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from serve_harness import Served, serving

from podkit_harness import PODKIT_ENV, wait_for

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {strategy}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {image}
        command: ["sh", "-c", "touch /tmp/ready; trap 'exit 0' TERM; while sleep 0.2; do :; done"]
        readinessProbe:
          exec: {{command: [test, -f, /tmp/ready]}}
          periodSeconds: 1
          failureThreshold: 1
"""


def app(name: str, replicas: int = 3, image: str = "busybox", strategy: str = "{}") -> str:
    return APP.format(name=name, replicas=replicas, image=image, strategy=strategy)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("workloads"), env=PODKIT_ENV) as s:
        yield s


def get(served: Served, *what: str) -> dict:  # type: ignore[type-arg]
    got = served.kubectl("get", *what, "-o", "json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)  # type: ignore[no-any-return]


def pods(served: Served, name: str) -> list[dict]:  # type: ignore[type-arg]
    """The app's pods that are not being deleted."""
    items = get(served, "pods", "-l", f"app={name}")["items"]
    return [p for p in items if "deletionTimestamp" not in p["metadata"]]


def rolled_out(served: Served, name: str) -> None:
    done = served.kubectl("rollout", "status", f"deployment/{name}", "--timeout=60s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'deployment "{name}" successfully rolled out' in done.stdout


def test_a_deployment_runs_its_replicas_and_keeps_them(served: Served) -> None:
    assert served.kubectl("apply", "-f", "-", stdin=app("web")).returncode == 0
    rolled_out(served, "web")
    deployment = get(served, "deployment", "web")
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    status = deployment["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (3, 3, 3)
    (rs,) = get(served, "rs", "-l", "app=web")["items"]
    hash_ = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{hash_}"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    running = pods(served, "web")
    assert len(running) == 3, [
        (p["metadata"]["name"], p["status"].get("phase"), p["metadata"].get("ownerReferences"),
         served.kubectl("get", "events").stdout) for p in running]  # fmt: skip
    for p in running:
        assert p["metadata"]["name"].startswith(f"web-{hash_}-")
        assert p["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
    rows = [line.split() for line in served.kubectl("get", "deploy", "web").stdout.splitlines()]
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "3/3", "3", "3"]
    # A pod deleted is replaced.
    gone = running[0]["metadata"]["name"]
    assert served.kubectl("delete", "pod", gone).returncode == 0
    wait_for("a replacement", lambda: len(pods(served, "web")) == 3 and all(
        p["metadata"]["name"] != gone for p in pods(served, "web")), 20)  # fmt: skip
    rolled_out(served, "web")


def test_scaling_down_takes_the_not_ready_pod_first(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=app("scaled", replicas=2))
    rolled_out(served, "scaled")
    assert served.kubectl("scale", "deployment/scaled", "--replicas=4").returncode == 0
    rolled_out(served, "scaled")
    four = pods(served, "scaled")
    assert len(four) == 4, [(p["metadata"]["name"], p["status"].get("phase"),
                             p["status"].get("message")) for p in four]  # fmt: skip
    unready = pods(served, "scaled")[1]["metadata"]["name"]
    served.kubectl("exec", unready, "--", "rm", "/tmp/ready")

    def not_ready() -> bool:
        p = get(served, "pod", unready)
        return not p["status"]["containerStatuses"][0]["ready"]

    wait_for(f"{unready} not ready", not_ready, 15)
    assert served.kubectl("scale", "deployment/scaled", "--replicas=3").returncode == 0
    wait_for("3 pods", lambda: len(pods(served, "scaled")) == 3, 15)
    assert unready not in [p["metadata"]["name"] for p in pods(served, "scaled")]
    scale = json.loads(
        served.kubectl(
            "get", "--raw", "/apis/apps/v1/namespaces/default/deployments/scaled/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == "app=scaled"


def test_a_rolling_update_history_undo_pause_and_restart(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=app("rolled", replicas=2))
    rolled_out(served, "rolled")
    assert served.kubectl("set", "image", "deployment/rolled", "app=x").returncode == 0
    rolled_out(served, "rolled")
    images = {p["spec"]["containers"][0]["image"] for p in pods(served, "rolled")}
    assert images == {"x"}
    revision = "deployment.kubernetes.io/revision"
    found = get(served, "rs", "-l", "app=rolled")["items"]
    sets = {r["metadata"]["annotations"][revision]: r["spec"]["replicas"] for r in found}
    assert sets == {"1": 0, "2": 2}
    history = served.kubectl("rollout", "history", "deployment/rolled").stdout.split()
    assert history[history.index("CHANGE-CAUSE") + 1 :: 2] == ["1", "2"]
    assert served.kubectl("rollout", "undo", "deployment/rolled").returncode == 0
    rolled_out(served, "rolled")
    images = {p["spec"]["containers"][0]["image"] for p in pods(served, "rolled")}
    assert images == {"busybox"}
    annotations = get(served, "deployment", "rolled")["metadata"]["annotations"]
    assert annotations[revision] == "3"  # the old template, renumbered
    # Paused, a change waits; resumed, it rolls out.
    assert served.kubectl("rollout", "pause", "deployment/rolled").returncode == 0
    served.kubectl("set", "image", "deployment/rolled", "app=x")
    wait_for("the paused condition", lambda: any(
        c.get("reason") == "DeploymentPaused"
        for c in get(served, "deployment", "rolled")["status"]["conditions"]), 10)  # fmt: skip
    assert {p["spec"]["containers"][0]["image"] for p in pods(served, "rolled")} == {"busybox"}
    # Scaled while paused: the size changes, the new template still waits.
    assert served.kubectl("scale", "deployment/rolled", "--replicas=3").returncode == 0
    wait_for("3 pods of the paused template", lambda: sorted(
        p["spec"]["containers"][0]["image"] for p in pods(served, "rolled")) == ["busybox"] * 3,
        20)  # fmt: skip
    assert served.kubectl("rollout", "resume", "deployment/rolled").returncode == 0
    rolled_out(served, "rolled")
    assert {p["spec"]["containers"][0]["image"] for p in pods(served, "rolled")} == {"x"}
    before = {p["metadata"]["name"] for p in pods(served, "rolled")}
    assert served.kubectl("rollout", "restart", "deployment/rolled").returncode == 0
    rolled_out(served, "rolled")
    assert not before & {p["metadata"]["name"] for p in pods(served, "rolled")}


def test_recreate_stops_every_old_pod_before_the_new_ones(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=app("again", 2, strategy="{type: Recreate}"))
    rolled_out(served, "again")
    served.kubectl("set", "image", "deployment/again", "app=x")
    rolled_out(served, "again")
    events = get(served, "events", "--field-selector", "involvedObject.name=again")["items"]
    scaled = [e["message"] for e in events if e["reason"] == "ScalingReplicaSet"]
    down = next(i for i, m in enumerate(scaled) if "Scaled down" in m and "to 0 from 2" in m)
    up = max(i for i, m in enumerate(scaled) if "Scaled up" in m)
    assert down < up  # the old ReplicaSet went to 0 before the new one grew


@pytest.mark.parametrize("cascade", ["background", "foreground", "orphan"])
def test_deleting_a_deployment_cascades_as_asked(served: Served, cascade: str) -> None:
    name = f"cascade-{cascade}"
    served.kubectl("apply", "-f", "-", stdin=app(name, replicas=2))
    rolled_out(served, name)
    deleted = served.kubectl("delete", "deployment", name, f"--cascade={cascade}")
    assert deleted.returncode == 0, deleted.stderr
    assert served.kubectl("get", "deployment", name).returncode == 1
    sets = get(served, "rs", "-l", f"app={name}")["items"]
    if cascade == "foreground":  # kubectl waited until the dependents were gone
        assert sets == []
        assert pods(served, name) == []
    elif cascade == "orphan":
        assert len(sets) == 1 and "ownerReferences" not in sets[0]["metadata"]
        assert len(pods(served, name)) == 2  # still the ReplicaSet's
        served.kubectl("delete", "rs", "-l", f"app={name}")
    wait_for(
        "the ReplicaSets gone", lambda: not get(served, "rs", "-l", f"app={name}")["items"], 20
    )
    wait_for("the pods gone", lambda: not get(served, "pods", "-l", f"app={name}")["items"], 30)


def test_bad_deployments_get_the_apiservers_errors(served: Served) -> None:
    mismatched = app("bad").replace("labels: {app: bad}", "labels: {app: other}")
    refused = served.kubectl("apply", "-f", "-", stdin=mismatched)
    assert refused.returncode == 1
    assert (
        'The Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"other"}: `selector` does not match template `labels`'
    ) in refused.stderr
    negative = served.kubectl("apply", "-f", "-", stdin=app("bad", replicas=-1))
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in (
        negative.stderr
    )
    made = served.kubectl("create", "deployment", "quick", "--image=busybox", "--replicas=0")
    assert made.stdout.strip() == "deployment.apps/quick created", made.stderr  # protobuf
    quick = get(served, "deployment", "quick")
    assert quick["spec"]["replicas"] == 0 and quick["spec"]["strategy"]["type"] == "RollingUpdate"
    served.kubectl("apply", "-f", "-", stdin=app("fixed"))
    changed = served.kubectl(
        "patch", "deployment", "fixed", "--type=merge",
        "-p", '{"spec": {"selector": {"matchLabels": {"app": "x"}}}}',
    )  # fmt: skip
    assert "field is immutable" in changed.stderr


JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - name: sidecar
        image: busybox
        restartPolicy: Always
        command: ["sh", "-c", "trap 'exit 0' TERM; while sleep 0.2; do :; done"]
      containers:
      - name: work
        image: busybox
        command: ["sh", "-c", "echo done-$(hostname)"]
"""


def test_a_pod_the_api_refuses_is_a_replica_failure_until_it_is_accepted(served: Served) -> None:
    """The ServiceAccount admission refuses pods of a missing account; the ReplicaSet retries
    with a backoff, and the Deployment says ReplicaFailure until the account exists."""
    robot = app("robot", replicas=1).replace(
        "terminationGracePeriodSeconds: 2", "terminationGracePeriodSeconds: 2\n      "
        "serviceAccountName: robot"
    )  # fmt: skip
    assert served.kubectl("apply", "-f", "-", stdin=robot).returncode == 0

    def failure() -> dict | None:  # type: ignore[type-arg]
        conditions = get(served, "deployment/robot").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "ReplicaFailure"), None)

    cond = wait_for("the Deployment's ReplicaFailure", failure, 20)
    assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
    assert cond["message"].startswith('pods "robot-')
    assert cond["message"].endswith(
        "is forbidden: error looking up service account default/robot: "
        'serviceaccount "robot" not found'
    )
    assert pods(served, "robot") == []
    assert served.kubectl("create", "serviceaccount", "robot").returncode == 0
    rolled_out(served, "robot")
    assert failure() is None
    assert len(pods(served, "robot")) == 1
    served.kubectl("delete", "deployment/robot")


def test_a_job_with_a_sidecar_completes_and_counts_each_pod_once(served: Served) -> None:
    assert served.kubectl("apply", "-f", "-", stdin=JOB).returncode == 0
    done = served.kubectl("wait", "--for=condition=complete", "job/batch", "--timeout=60s")
    assert done.returncode == 0, done.stderr  # the sidecars did not keep it running
    rows = [line.split() for line in served.kubectl("get", "job", "batch").stdout.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert rows[1][:3] == ["batch", "Complete", "3/3"]
    finished = get(served, "pods", "-l", "job-name=batch")["items"]
    assert [p["status"]["phase"] for p in finished] == ["Succeeded"] * 3
    assert all("finalizers" not in p["metadata"] for p in finished)  # counted, then let go
    logs = served.kubectl("logs", "job/batch", "-c", "work").stdout
    assert logs.startswith("done-batch-")
    # A finished pod deleted is not run again: it was counted once, for good.
    served.kubectl("delete", "pod", finished[0]["metadata"]["name"])
    status = get(served, "job", "batch")["status"]
    assert status["succeeded"] == 3 and "active" not in status
    assert len(get(served, "pods", "-l", "job-name=batch")["items"]) == 2
    assert served.kubectl("delete", "job", "batch").returncode == 0
    wait_for("the job's pods gone", lambda: not get(served, "pods", "-l", "job-name=batch")[
        "items"], 20)  # fmt: skip


def test_a_failing_job_stops_at_its_backoff_limit(served: Served) -> None:
    made = served.kubectl("create", "job", "failing", "--image=busybox", "--", "sh", "-c", "exit 3")
    assert made.stdout.strip() == "job.batch/failing created", made.stderr  # protobuf
    served.kubectl("patch", "job", "failing", "--type=merge", "-p", '{"spec":{"backoffLimit":0}}')
    failed = served.kubectl("wait", "--for=condition=failed", "job/failing", "--timeout=60s")
    assert failed.returncode == 0, failed.stderr
    job = get(served, "job", "failing")
    reasons = {c["type"]: c["reason"] for c in job["status"]["conditions"]}
    assert reasons["Failed"] == "BackoffLimitExceeded" and job["status"]["failed"] == 1
    assert len(get(served, "pods", "-l", "job-name=failing")["items"]) == 1  # not retried
    always = JOB.replace("restartPolicy: Never", "restartPolicy: Always").replace(
        "{name: batch}", "{name: bad}"
    )
    refused = served.kubectl("apply", "-f", "-", stdin=always)
    assert (
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'
        in (refused.stderr)
    )
