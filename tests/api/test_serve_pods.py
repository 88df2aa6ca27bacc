"""Pods through `podkit serve`, run on this machine by the node agent under their own
supervisors: the seed pod with the real kubectl (apply, wait, get, logs, delete), a kill -9
of serve that the pod does not notice, and serve's graceful stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_harness import Served, Terminal, serving, start

from podkit_harness import REPO, http_get, wait_for

SEED = REPO / "examples" / "pod-definition.yaml"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as s:
        yield s


def supervisors(served: Served) -> list[int]:
    return served.supervisors()


def no_supervisor(served: Served) -> None:
    """Every supervisor of this serve has exited. A pod's grace period is 30 s, so 60 s is the
    deadline."""
    wait_for("no pod supervisor left", lambda: supervisors(served) == [], 60)


def pod(served: Served, name: str = "simple-webapp") -> dict:  # type: ignore[type-arg]
    got = served.kubectl("get", "pod", name, "-o", "json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)  # type: ignore[no-any-return]


def apply_seed_and_wait(served: Served) -> str:
    applied = served.kubectl("apply", "-f", str(SEED))
    assert applied.stdout.strip() == "pod/simple-webapp created", applied.stderr
    ready = served.kubectl("wait", "--for=condition=Ready", "pod/simple-webapp", "--timeout=60s")
    assert ready.returncode == 0, ready.stderr
    ip = str(pod(served)["status"]["podIP"])
    # The webapp has no readiness probe, so Ready comes with its start, maybe before it
    # listens (in a cluster too): the tests talk to it once it answers.
    wait_for("the webapp answering", lambda: http_get(f"http://{ip}:8080/")[0] == 200, 20)
    return ip


def test_the_seed_pod_runs_logs_and_is_deleted_gracefully(served: Served) -> None:
    ip = apply_seed_and_wait(served)
    rows = [line.split() for line in served.kubectl("get", "pods").stdout.splitlines()]
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1][:4] == ["simple-webapp", "2/2", "Running", "0"]
    wide = served.kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"] and ip in wide[1]
    assert http_get(f"http://{ip}:8080/")[0] == 200
    doc = pod(served)
    assert doc["spec"]["nodeName"] == os.uname().nodename
    assert doc["spec"]["restartPolicy"] == "Always"  # defaulted, as the apiserver does
    assert doc["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # no tag
    # The log-agent sidecar ships the webapp's access line, enriched: kubectl logs shows it.
    enriched = wait_for(
        "the enriched access event in the log-agent's log",
        lambda: [
            line
            for line in served.kubectl(
                "logs", "simple-webapp", "-c", "log-agent"
            ).stdout.splitlines()
            if '"stream":"access"' in line
        ],
        20,
    )
    event = json.loads(enriched[0])
    assert event["kubernetes"]["pod_name"] == "simple-webapp" and event["status"] == 200
    # apply of an edited image: a strategic merge of the containers list by name.
    edited = SEED.read_text().replace("image: log-agent", "image: podkit/log-agent")
    assert edited != SEED.read_text()
    again = served.kubectl("apply", "-f", "-", stdin=edited)
    assert again.stdout.strip() == "pod/simple-webapp configured", again.stderr
    images = served.kubectl("get", "pod", "simple-webapp", "-o",
                            "jsonpath={.spec.containers[*].image}")  # fmt: skip
    assert images.stdout.split() == ["simple-webapp", "podkit/log-agent"]
    # The node's events, as kubectl describe and get events show them.
    described = served.kubectl("describe", "pod", "simple-webapp").stdout
    assert "Started container simple-webapp" in described
    assert "Started container log-agent" in described
    events = served.kubectl("get", "events").stdout
    assert "pod/simple-webapp" in events and "Scheduled" in events
    tail = served.kubectl("logs", "simple-webapp", "-c", "simple-webapp", "--tail=1")
    assert len(tail.stdout.splitlines()) == 1
    previous = served.kubectl("logs", "simple-webapp", "--previous")
    assert 'previous terminated container "simple-webapp" in pod "simple-webapp" not found' in (
        previous.stderr
    )
    # kubectl exec over WebSocket v5: output, stdin, and the command's exit code.
    both = served.kubectl(
        "exec", "simple-webapp", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (both.returncode, both.stdout) == (3, "out\n")
    assert "err\n" in both.stderr and "command terminated with exit code 3" in both.stderr
    piped = served.kubectl("exec", "-i", "simple-webapp", "-c", "log-agent", "--", "cat",
                           stdin="through stdin\n")  # fmt: skip
    assert (piped.returncode, piped.stdout) == (0, "through stdin\n")
    assert _exec_in_terminal(served) == (5, [b"33 101", b"42"])
    sent = served.home / "sent.txt"
    sent.write_text("copied in\n")
    copy_in = served.kubectl("cp", str(sent), "simple-webapp:/tmp/sent.txt", "-c", "simple-webapp")
    assert copy_in.returncode == 0, copy_in.stderr  # kubectl cp: tar through exec
    back = served.home / "back.txt"
    served.kubectl("cp", "simple-webapp:/tmp/sent.txt", str(back), "-c", "simple-webapp")
    assert back.read_text() == "copied in\n"
    missing = served.kubectl("exec", "simple-webapp", "--", "no-such-command")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    # kubectl port-forward (SPDY inside a WebSocket), to a port only the pod's loopback has.
    forward = served.kubectl_running("port-forward", "pod/simple-webapp", ":8080", ":2020")
    try:
        assert forward.stdout is not None
        ports = []
        while len(ports) < 2:
            line = forward.stdout.readline()
            assert line, forward.stderr.read() if forward.stderr else ""
            if line.startswith("Forwarding from 127.0.0.1:"):
                ports.append(int(line.split(":")[1].split()[0]))
        for _ in range(3):  # one connection after another, each a pair of SPDY streams
            assert http_get(f"http://127.0.0.1:{ports[0]}/api/info")[0] == 200
        assert http_get(f"http://127.0.0.1:{ports[1]}/healthz")[0] == 200  # the log-agent's
    finally:
        forward.kill()
        forward.wait()
    # kubectl attach: the container's output from now on (it has no `stdin: true`).
    attached = served.kubectl_running("attach", "simple-webapp", "-c", "simple-webapp")
    found = threading.Event()

    def ask() -> None:  # until the attach shows one: it only shows what comes after it
        deadline = time.monotonic() + 20
        while not found.is_set() and time.monotonic() < deadline:
            http_get(f"http://{ip}:8080/after-attach")
            time.sleep(0.2)
        attached.kill()  # no line in time: the read below ends, and the test fails

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        assert attached.stdout is not None
        lines = iter(attached.stdout.readline, "")
        line = next((x for x in lines if "/after-attach" in x), "")
        found.set()
        assert '"GET /after-attach HTTP/1.1" 404' in line
    finally:
        found.set()
        asker.join()
        attached.kill()
        attached.wait()
    refused = served.kubectl("attach", "-i", "simple-webapp")
    assert "stdin is not enabled for container simple-webapp" in refused.stderr
    deleted = served.kubectl("delete", "pod", "simple-webapp")  # waits until it is gone
    assert deleted.returncode == 0, deleted.stderr
    assert served.kubectl("get", "pod", "simple-webapp").returncode == 1
    no_supervisor(served)
    assert wait_for("the pod's IP unreachable", lambda: _unreachable(ip), 10)


def _unreachable(ip: str) -> bool:
    try:
        http_get(f"http://{ip}:8080/", timeout=0.5)
    except OSError:
        return True
    return False


def test_a_kill_9_of_serve_does_not_touch_the_pod(served: Served) -> None:
    ip = apply_seed_and_wait(served)
    before = pod(served)
    failures: list[str] = []
    done = threading.Event()

    def keep_asking() -> None:  # a slow answer on a loaded machine is no interruption
        while not done.is_set():
            try:
                if http_get(f"http://{ip}:8080/", timeout=10)[0] != 200:
                    failures.append("not 200")
            except OSError as exc:
                failures.append(str(exc))
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(10)
        assert len(supervisors(served)) >= 1  # the pod's supervisor lives on
        again = start(served.state.parent)  # the same state: it adopts the pod
        served.proc, served.port = again.proc, again.port
        after = wait_for(
            "the adopted pod's status",
            lambda: (d := pod(served))["status"].get("phase") == "Running" and d,
            20,
        )
    finally:
        done.set()
        asker.join()
    assert failures == []
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    restarts = [c["restartCount"] for c in after["status"]["containerStatuses"]]
    assert restarts == [0, 0]
    started = {
        c["name"]: c["state"]["running"]["startedAt"] for c in after["status"]["containerStatuses"]
    }
    assert started == {
        c["name"]: c["state"]["running"]["startedAt"] for c in before["status"]["containerStatuses"]
    }
    logs = served.kubectl("logs", "simple-webapp", "-c", "simple-webapp")
    assert '"msg":"serving"' in logs.stdout  # the lines from before the kill are still there


def test_serve_stops_its_pods_when_it_stops_unless_told_to_keep_them(served: Served) -> None:
    served.stop()
    keeping = start(served.state.parent, "--keep-pods")
    served.proc, served.port = keeping.proc, keeping.port
    apply_seed_and_wait(served)
    served.stop()  # SIGTERM, --keep-pods: the pod stays
    assert len(supervisors(served)) >= 1
    again = start(served.state.parent)
    served.proc, served.port = again.proc, again.port
    assert pod(served)["status"]["phase"] == "Running"
    served.stop()  # SIGTERM: every pod stopped gracefully
    no_supervisor(served)
    assert "stopping the pods" in (served.proc.stderr.read() if served.proc.stderr else "")


def test_reset_stops_the_pods_and_removes_serves_state(served: Served) -> None:
    served.stop()
    keeping = start(served.state.parent, "--keep-pods")
    served.proc, served.port = keeping.proc, keeping.port
    ip = apply_seed_and_wait(served)
    uid = pod(served)["metadata"]["uid"]
    run = [
        str(Path(sys.executable).parent / "podkit"),
        "serve",
        "--reset",
        "--state-dir",
        str(served.state),
    ]
    refused = subprocess.run(run, capture_output=True, text=True)
    assert refused.returncode == 1  # not while a serve runs on it
    assert "another podkit serve uses this state directory" in refused.stderr
    served.stop()  # --keep-pods: the pod runs on, with no serve
    assert supervisors(served) and http_get(f"http://{ip}:8080/")[0] == 200
    reset = subprocess.run(run, capture_output=True, text=True, timeout=90)
    assert reset.returncode == 0, reset.stderr
    assert "1 running pod(s) stopped" in reset.stderr
    no_supervisor(served)
    assert not (served.state / "serve").exists()
    assert not list((served.state / "pods").glob(f"*_{uid}"))
    assert wait_for("the pod's IP unreachable", lambda: _unreachable(ip), 10)
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to reset" in again.stderr


def _exec_in_terminal(served: Served) -> tuple[int, list[bytes]]:
    """`kubectl exec -it ... -- sh` from a terminal of 33x101: the shell sees that size, runs
    what is typed, and its exit status is kubectl's."""
    term = Terminal(served, "exec", "-it", "simple-webapp", "--", "sh", rows=33, cols=101)
    try:
        term.read_until(b"# ")  # the shell's prompt: it is reading the terminal
        term.type("stty size; echo $((6*7)); exit 5\r")
        code = term.exit_code()
    finally:
        term.kill()
    lines = [line.strip() for line in term.seen.splitlines()]
    return code, [x for x in lines if x in (b"33 101", b"42")]


def test_a_pods_finalizer_keeps_its_object_after_the_containers_stopped(served: Served) -> None:
    held = SEED.read_text().replace(
        "  name: simple-webapp\n", "  name: simple-webapp\n  finalizers: [example.com/keep]\n", 1
    )
    assert "finalizers" in held
    assert served.kubectl("apply", "-f", "-", stdin=held).returncode == 0
    served.kubectl("wait", "--for=condition=Ready", "pod/simple-webapp", "--timeout=60s")
    assert served.kubectl("delete", "pod", "simple-webapp", "--wait=false").returncode == 0
    stopped = wait_for(
        "the pod stopped by the node, its object kept",
        lambda: (
            (d := pod(served))["status"]["phase"] in ("Succeeded", "Failed")
            and not supervisors(served)
            and d
        ),
        30,
    )
    assert stopped["metadata"]["deletionTimestamp"]
    uid = stopped["metadata"]["uid"]
    logs = served.kubectl("logs", "simple-webapp", "-c", "simple-webapp")
    assert '"msg":"serving"' in logs.stdout  # its logs, while its object stays
    released = served.kubectl(
        "patch", "pod", "simple-webapp", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    assert released.returncode == 0, released.stderr
    assert served.kubectl("get", "pod", "simple-webapp").returncode == 1
    # Its files stayed while the object did (its logs: `kubectl logs`), and go with it.
    wait_for("the pod's directory gone", lambda: not list(served.state.glob(f"pods/*_{uid}")), 10)


def test_a_namespace_terminates_once_its_contents_are_gone(served: Served) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
    assert served.kubectl("apply", "-f", "-", stdin=ns).returncode == 0
    assert served.kubectl("apply", "-n", "team", "-f", str(SEED)).returncode == 0
    held = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/x]}\n"
    assert served.kubectl("apply", "-n", "team", "-f", "-", stdin=held).returncode == 0
    ready = served.kubectl(
        "wait", "-n", "team", "--for=condition=Ready", "pod/simple-webapp", "--timeout=60s"
    )
    assert ready.returncode == 0, ready.stderr
    assert served.kubectl("delete", "namespace", "team", "--wait=false").returncode == 0
    refused = served.kubectl("create", "configmap", "late", "-n", "team")
    assert "because it is being terminated" in refused.stderr
    no_supervisor(served)  # the namespace's pod stopped
    wait_for(  # and, once the node saw it stop, gone from the API
        "the pod's object gone",
        lambda: served.kubectl("get", "pods", "-n", "team", "-o", "name").stdout == "",
        10,
    )
    phase = served.kubectl("get", "ns", "team", "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Terminating"  # the ConfigMap's finalizer still holds it
    released = served.kubectl("patch", "cm", "held", "-n", "team", "--type=merge",
                              "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
    assert released.returncode == 0, released.stderr
    assert served.kubectl("get", "ns", "team").returncode == 1  # gone with its last object


def test_a_forced_deletion_removes_the_pod_at_once_and_kills_it(served: Served) -> None:
    apply_seed_and_wait(served)
    forced = served.kubectl("delete", "pod", "simple-webapp", "--force", "--grace-period=0")
    assert forced.returncode == 0, forced.stderr
    assert "force deleted" in forced.stdout
    assert served.kubectl("get", "pod", "simple-webapp").returncode == 1  # gone at once
    no_supervisor(served)  # and killed by the node


READER = """apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: simple-webapp
    volumeMounts: [{name: cfg, mountPath: /etc/cfg}]
  volumes:
  - {name: cfg, configMap: {name: greeting}}
"""
GREETING = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting}\ndata: {greeting: %s}\n"


def test_a_pod_waits_for_its_configmap_then_follows_it_and_its_image(served: Served) -> None:
    assert served.kubectl("apply", "-f", "-", stdin=READER).returncode == 0

    def held() -> bool:
        state = (pod(served, "reader")["status"].get("containerStatuses") or [{}])[0].get("state")
        events = served.kubectl("get", "events", "--field-selector=reason=FailedMount").stdout
        return state == {"waiting": {"reason": "ContainerCreating"}} and (
            'MountVolume.SetUp failed for volume "cfg" : configmap "greeting" not found' in events
        )

    wait_for("the pod held in ContainerCreating for its ConfigMap", held, 10)
    assert not supervisors(served)  # nothing started
    assert served.kubectl("apply", "-f", "-", stdin=GREETING % "hello").returncode == 0
    ready = served.kubectl("wait", "--for=condition=Ready", "pod/reader", "--timeout=30s")
    assert ready.returncode == 0, ready.stderr

    def read() -> str:
        return served.kubectl("exec", "reader", "--", "cat", "/etc/cfg/greeting").stdout

    assert read() == "hello"
    link = served.kubectl("exec", "reader", "--", "readlink", "/etc/cfg/greeting").stdout
    assert link.strip() == "..data/greeting"  # the kubelet's layout, swapped all at once
    assert served.kubectl("apply", "-f", "-", stdin=GREETING % "bonjour").returncode == 0
    wait_for("the volume following the ConfigMap", lambda: read() == "bonjour", 10)

    pid_before = pod(served, "reader")["status"]["containerStatuses"][0]["containerID"]
    changed = served.kubectl("set", "image", "pod/reader", "app=podkit/simple-webapp")
    assert changed.returncode == 0, changed.stderr

    def restarted() -> dict | None:  # type: ignore[type-arg]
        status = pod(served, "reader")["status"]["containerStatuses"][0]
        return status if status["restartCount"] == 1 and "running" in status["state"] else None

    status = wait_for("the container restarted with its new image", restarted, 15)
    assert status["image"] == "podkit/simple-webapp" and status["containerID"] != pid_before
    events = served.kubectl("get", "events", "--field-selector=reason=Killing").stdout
    assert "Container app definition changed, will be restarted" in events
    assert read() == "bonjour"  # the new container mounts the volume as it is now
