"""The Deployment and ReplicaSet controllers' decisions, pure, against the numbers the
Kubernetes controllers give (pkg/controller/deployment, replicaset, controller_utils)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from podkit.controllers import replicas, rollout

NOW = datetime.datetime(2026, 12, 5, 12, 0, 0, tzinfo=datetime.UTC)


def deployment(desired: int, surge: Any = "25%", unavailable: Any = "25%", **spec: Any) -> dict:
    strategy = {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 1},
        "spec": {"replicas": desired, "strategy": strategy, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
                 "progressDeadlineSeconds": 600, **spec},
    }  # fmt: skip


def rs(name: str, count: int, available: int, created: str = "2026-12-05T11:00:00Z") -> dict:
    return {
        "metadata": {"name": name, "uid": name, "creationTimestamp": created},
        "spec": {"replicas": count},
        "status": {"replicas": count, "availableReplicas": available, "readyReplicas": available},
    }


@pytest.mark.parametrize(
    ("desired", "surge", "unavailable", "expected"),
    [
        (10, "25%", "25%", (3, 2)),  # surge rounds up, unavailable down
        (4, "25%", "25%", (1, 1)),
        (1, "25%", "25%", (1, 0)),
        (3, "0%", "10%", (0, 1)),  # both 0 after rounding: one may be unavailable
        (5, 2, 0, (2, 0)),
    ],
)
def test_fenceposts_round_as_kubernetes_does(
    desired: int, surge: Any, unavailable: Any, expected: tuple[int, int]
) -> None:
    assert rollout.fenceposts(deployment(desired, surge, unavailable)) == expected


def test_a_rolling_update_steps_within_surge_and_unavailability() -> None:
    """10 replicas, 25%/25%: at most 13 pods at once, at least 8 available, until done."""
    d = deployment(10)
    old, new = rs("old", 10, 10), rs("new", 0, 0, "2026-12-05T11:30:00Z")
    steps = 0
    while not (new["spec"]["replicas"] == 10 and old["spec"]["replicas"] == 0):
        steps += 1
        assert steps < 30
        new["spec"]["replicas"] = rollout.new_count(d, [old, new], new)
        assert old["spec"]["replicas"] + new["spec"]["replicas"] <= 13
        new["status"]["availableReplicas"] = new["spec"]["replicas"]  # its pods become ready
        down = rollout.old_scale_down(d, new, [old])
        old["spec"]["replicas"] = down.get("old", old["spec"]["replicas"])
        old["status"]["availableReplicas"] = old["spec"]["replicas"]
        assert old["status"]["availableReplicas"] + new["status"]["availableReplicas"] >= 8
    assert steps <= 5


def test_unavailable_old_pods_go_first_and_a_stuck_rollout_keeps_the_minimum() -> None:
    d = deployment(4, surge=1, unavailable=1)
    old = rs("old", 4, 2)  # two of its pods are not available
    new = rs("new", 1, 0, "2026-12-05T11:30:00Z")  # its pod not available (a bad image)
    # 5 pods, 3 must stay available, the new one is not: one may go, an unavailable one.
    assert rollout.old_scale_down(d, new, [old]) == {"old": 3}
    old["spec"]["replicas"] = 3  # done: 2 available of 4 pods, below the minimum of 3
    assert rollout.old_scale_down(d, new, [old]) == {}  # stuck: nothing more goes
    healthy = rs("old", 4, 4)
    assert rollout.old_scale_down(d, new, [healthy]) == {"old": 3}  # 4 available: one spare


def test_recreate_and_the_history_limit() -> None:
    d = deployment(3)
    d["spec"]["strategy"] = {"type": "Recreate"}
    assert rollout.new_count(d, [rs("old", 3, 3)], rs("new", 0, 0)) == 3
    assert rollout.max_unavailable(d) == 0
    d = deployment(1, revisionHistoryLimit=1)
    old = [rs(f"r{i}", 0, 0) for i in range(3)]
    for i, r in enumerate(old):
        r["metadata"]["annotations"] = {rollout.REVISION: str(i + 1)}
        r["status"]["replicas"] = 0
    assert [r["metadata"]["name"] for r in rollout.to_clean(d, old)] == ["r0", "r1"]


def test_the_new_replica_set_carries_the_hash_and_the_next_revision() -> None:
    d = deployment(2)
    old = rs("web-old", 2, 2)
    old["metadata"]["annotations"] = {rollout.REVISION: "4"}
    made = rollout.new_replica_set(d, [old], 1)
    h = made["spec"]["template"]["metadata"]["labels"][rollout.HASH_LABEL]
    assert made["metadata"]["name"] == f"web-{h}"
    assert made["spec"]["selector"]["matchLabels"] == {"a": "b", rollout.HASH_LABEL: h}
    assert made["metadata"]["annotations"][rollout.REVISION] == "5"
    assert made["metadata"]["annotations"][rollout.MAX] == "3"  # 2 + 25% surge, rounded up
    assert made["metadata"]["ownerReferences"][0]["uid"] == "d-1"
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert rollout.find_new(d, [old, made]) is made  # the same template, the hash aside
    assert rollout.template_hash(d["spec"]["template"], 1) != h  # a collision gives another


def test_status_and_its_conditions_follow_the_rollout() -> None:
    d = deployment(2)
    new, old = rs("web-new", 2, 1), rs("web-old", 1, 1)
    d["status"] = {"updatedReplicas": 1, "replicas": 3, "availableReplicas": 1}
    s = rollout.status(d, [new, old], new, NOW)
    assert (s["replicas"], s["updatedReplicas"], s["availableReplicas"]) == (3, 2, 2)
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"
    assert conditions["Progressing"]["message"] == 'ReplicaSet "web-new" is progressing.'
    d["status"] = s
    done = rollout.status(d, [rs("web-new", 2, 2)], rs("web-new", 2, 2), NOW)
    progressing = next(c for c in done["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"
    # No progress for longer than progressDeadlineSeconds: the rollout has failed.
    later = NOW + datetime.timedelta(seconds=601)
    d["status"] = s
    stuck = rollout.status(d, [new, old], new, later)
    progressing = next(c for c in stuck["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")


def pod(name: str, created: str, ready: str | None = None, **extra: Any) -> dict:
    conditions = [{"type": "Ready", "status": "True" if ready else "False",
                   "lastTransitionTime": ready or created}]  # fmt: skip
    status = {"phase": extra.pop("phase", "Running"), "conditions": conditions, **extra}
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": "vm"}, "status": status}  # fmt: skip


def sized(name: str, count: int, created: str, desired: int, most: int) -> dict:
    made = rs(name, count, 0, created)
    made["metadata"]["annotations"] = {rollout.DESIRED: str(desired), rollout.MAX: str(most)}
    return made


def test_scaling_mid_rollout_shares_the_change_in_proportion() -> None:
    """The example of Kubernetes' documentation (Deployments, proportional scaling): 10
    replicas, maxSurge 3, maxUnavailable 2, a rollout stuck at 8 old and 5 new; scaled to 15,
    3 of the 5 new replicas go to the old ReplicaSet and 2 to the new one."""
    old = sized("web-old", 8, "2026-12-05T10:00:00Z", 10, 13)
    new = sized("web-new", 5, "2026-12-05T11:00:00Z", 10, 13)
    d = deployment(15, surge=3, unavailable=2)
    assert rollout.is_scaling_event(d, [old, new])
    assert rollout.scaled(d, new, [old]) == {"web-old": 11, "web-new": 7}
    down = deployment(5, surge=3, unavailable=2)  # 8 in all: 5 + the surge
    assert rollout.scaled(down, new, [old]) == {"web-old": 5, "web-new": 3}
    assert rollout.scaled(deployment(0), new, [old]) == {"web-old": 0, "web-new": 0}
    assert not rollout.is_scaling_event(deployment(10, surge=3, unavailable=2), [old, new])


def test_scaling_one_active_replica_set_or_past_a_saturated_new_one() -> None:
    only = sized("web-new", 3, "2026-12-05T11:00:00Z", 3, 4)
    gone = sized("web-old", 0, "2026-12-05T10:00:00Z", 3, 4)
    assert rollout.scaled(deployment(5), only, [gone]) == {"web-new": 5}
    saturated = sized("web-new", 5, "2026-12-05T11:00:00Z", 5, 7)
    saturated["status"]["availableReplicas"] = 5
    left = sized("web-old", 1, "2026-12-05T10:00:00Z", 5, 7)
    assert rollout.scaled(deployment(5), saturated, [left]) == {"web-old": 0}


def test_scale_down_deletes_in_the_controllers_order() -> None:
    pods = [
        pod("old-ready", "2026-12-05T10:00:00Z", "2026-12-05T10:00:05Z"),
        pod("new-ready", "2026-12-05T11:00:00Z", "2026-12-05T11:00:05Z"),
        pod("not-ready", "2026-12-05T09:00:00Z"),
        pod("pending", "2026-12-05T09:00:00Z", phase="Pending"),
        pod("crashy", "2026-12-05T10:00:00Z", "2026-12-05T10:00:05Z",
            containerStatuses=[{"restartCount": 3}]),
    ]  # fmt: skip
    order = [p["metadata"]["name"] for p in replicas.deletion_order(pods)]
    assert order == ["pending", "not-ready", "new-ready", "crashy", "old-ready"]


def test_a_replica_sets_pods_and_status() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": "web-x", "namespace": "ns", "uid": "rs-1", "generation": 2},
             "spec": {"replicas": 3, "minReadySeconds": 10, "selector": {"matchLabels": {"a": "b"}},
                      "template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}}  # fmt: skip
    mine = pod("p1", "2026-12-05T11:00:00Z", "2026-12-05T11:59:55Z")
    mine["metadata"].update(labels={"a": "b"}, ownerReferences=[replicas.owner_ref(owner)])
    orphan = pod("p2", "2026-12-05T11:00:00Z", "2026-12-05T11:00:00Z")
    orphan["metadata"]["labels"] = {"a": "b"}
    strayed = pod("p3", "2026-12-05T11:00:00Z")
    strayed["metadata"].update(labels={"a": "c"}, ownerReferences=[replicas.owner_ref(owner)])
    others = pod("p4", "2026-12-05T11:00:00Z")
    others["metadata"].update(labels={"a": "b"}, ownerReferences=[{"uid": "x", "controller": True}])
    claimed, released = replicas.claim(owner, [mine, orphan, strayed, others])
    assert ([p["metadata"]["name"] for p in claimed], released) == (["p1", "p2"], [strayed])
    assert replicas.diff(owner, claimed) == 1
    status = replicas.status(owner, claimed, NOW)
    assert status == {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                      "availableReplicas": 1, "observedGeneration": 2}  # fmt: skip
    assert replicas.next_availability(claimed, 10, NOW) == 5.0  # p1 ready 5 s ago
    made = replicas.new_pod(owner)
    assert made["metadata"]["generateName"] == "web-x-"
    assert made["metadata"]["labels"] == {"a": "b"}


def test_a_failed_create_is_a_replica_failure_until_a_sync_succeeds() -> None:
    """ReplicaFailure, as calculateStatus keeps it on the ReplicaSet and getReplicaFailures
    copies it to the Deployment (the new ReplicaSet's first)."""
    owner = {"metadata": {"name": "web-x", "generation": 1}, "spec": {"replicas": 2},
             "status": {}}  # fmt: skip
    why = 'pods "web-x-" is forbidden: error looking up service account ns/robot: ...'
    failed = replicas.status(owner, [], NOW, why)
    (cond,) = failed["conditions"]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        "ReplicaFailure", "True", "FailedCreate", why,
    )  # fmt: skip
    owner["status"] = failed
    later = NOW + datetime.timedelta(seconds=30)
    assert replicas.status(owner, [], later, "another error")["conditions"] == [cond]  # kept
    assert "conditions" not in replicas.status(owner, [], later)  # a sync that worked
    d = deployment(2)
    new, old = rs("web-new", 2, 0), rs("web-old", 1, 1)
    new["status"]["conditions"] = [cond]
    copied = {c["type"]: c for c in rollout.status(d, [new, old], new, NOW)["conditions"]}
    assert copied["ReplicaFailure"]["reason"] == "FailedCreate"
    assert copied["ReplicaFailure"]["message"] == why
    assert copied["ReplicaFailure"]["lastUpdateTime"] == cond["lastTransitionTime"]
    d["status"] = {"conditions": list(copied.values())}
    new["status"].pop("conditions")
    healed = rollout.status(d, [new, old], new, NOW)
    assert "ReplicaFailure" not in {c["type"] for c in healed["conditions"]}


def job(**spec: Any) -> dict:
    base = {"completions": 3, "parallelism": 2, "backoffLimit": 1,
            "template": {"spec": {"restartPolicy": "Never"}}}  # fmt: skip
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "j-1"}, "spec": {**base, **spec},
            "status": {}}  # fmt: skip


def test_a_job_runs_parallelism_pods_until_its_completions() -> None:
    from podkit.controllers import jobs

    first = jobs.plan(job(), [], NOW)
    assert (first.create, first.status["startTime"]) == (2, "2026-12-05T12:00:00Z")
    running = [pod("a", "2026-12-05T11:59:00Z"), pod("b", "2026-12-05T11:59:00Z")]
    j = job()
    j["status"] = {"succeeded": 2, "startTime": "2026-12-05T11:59:00Z"}
    last = jobs.plan(j, running[:1], NOW)  # one more to succeed, one running: nothing new
    assert (last.create, last.delete) == (0, [])
    j["status"]["succeeded"] = 3
    done = jobs.plan(j, [], NOW)
    assert [c["type"] for c in done.status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert done.status["completionTime"] == "2026-12-05T12:00:00Z"


def test_a_job_fails_past_its_backoff_limit_and_waits_between_failures() -> None:
    from podkit.controllers import jobs

    j = job()
    j["status"] = {"failed": 1, "startTime": "2026-12-05T11:59:00Z"}
    failed = pod("f", "2026-12-05T11:59:00Z", phase="Failed", containerStatuses=[
        {"state": {"terminated": {"finishedAt": "2026-12-05T11:59:55Z"}}}])  # fmt: skip
    waiting = jobs.plan(j, [failed], NOW)
    assert waiting.create == 0 and waiting.again == 5.0  # 10 s after the failure
    j["status"]["failed"] = 2  # past backoffLimit 1
    over = jobs.plan(j, [failed, pod("r", "2026-12-05T11:59:00Z")], NOW)
    assert [p["metadata"]["name"] for p in over.delete] == ["r"]
    assert [c["type"] for c in over.status["conditions"]] == ["FailureTarget"]  # "r" still runs
    gone = jobs.plan(j, [failed], NOW)
    assert gone.status["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    late = job(activeDeadlineSeconds=30)
    late["status"] = {"startTime": "2026-12-05T11:59:00Z"}
    assert jobs.plan(late, [], NOW).status["conditions"][-1]["reason"] == "DeadlineExceeded"
