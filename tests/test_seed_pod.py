"""The classic two-container pod, end to end, exactly as a user runs it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from podkit_harness import REPO, free_port, http_get, wait_for

SEED = str(REPO / "examples" / "pod-definition.yaml")
SHARED = str(REPO / "examples" / "sidecar-shared-volume.yaml")


def _request_event(run, path: str) -> dict | None:
    for e in run.events("log-agent"):
        if e.get("path") == path:
            return e
    return None


def test_seed_pod_serves_and_ships_its_access_log(podkit):
    port = free_port()
    run = podkit("run", SEED, "-p", f"{port}:8080")
    run.wait_stderr(f"published on localhost:{port}")
    status, body = wait_for(
        "the webapp answering", lambda: http_get(f"http://127.0.0.1:{port}/"), 15
    )
    assert status == 200 and "simple-webapp" in body
    http_get(f"http://127.0.0.1:{port}/seed-check")  # a 404 is a request like any other
    sent = time.monotonic()
    event = wait_for(
        "log-agent printing the request", lambda: _request_event(run, "/seed-check"), 5
    )
    assert time.monotonic() - sent < 1.0, "the event took more than a second"
    assert event["kubernetes"]["pod_name"] == "simple-webapp"
    assert event["kubernetes"]["namespace_name"] == "default"
    assert event["kubernetes"]["container_name"] == "simple-webapp"
    assert event["status"] == 404
    # The webapp's own access line is streamed with its prefix too.
    assert any("GET /seed-check" in x for x in run.stdout_lines("[simple-webapp] "))
    pod = run.status()
    assert pod["status"]["phase"] == "Running"
    assert [c["ready"] for c in pod["status"]["containerStatuses"]] == [True, True]
    assert "READY 2/2" in run.text()
    assert run.stop() == 0
    final = {c["name"]: c["state"] for c in run.status()["status"]["containerStatuses"]}
    assert final["simple-webapp"]["terminated"]["exitCode"] == 0
    assert final["log-agent"]["terminated"]["exitCode"] == 0


def test_two_copies_of_the_seed_pod_at_once(podkit, tmp_path):
    ports = [free_port(), free_port()]
    runs = [podkit("run", SEED, "-p", f"{p}:8080", "--no-logs") for p in ports]
    infos = []
    for p in ports:
        wait_for(f"pod on {p}", lambda p=p: http_get(f"http://127.0.0.1:{p}/api/info"), 15)
        infos.append(json.loads(http_get(f"http://127.0.0.1:{p}/api/info")[1]))
    # Both bound 8080 inside their own pods; each is a different process tree.
    assert infos[0]["pod_name"] == infos[1]["pod_name"] == "simple-webapp"
    assert infos[0]["pod_uid"] != infos[1]["pod_uid"]
    for run in runs:
        assert run.stop() == 0


def test_two_pods_in_one_file_both_bind_8080(podkit, tmp_path):
    seed = Path(SEED).read_text()
    both = seed + "---\n" + seed.replace("name: simple-webapp\n  labels", "name: second\n  labels")
    path = tmp_path / "two.yaml"
    path.write_text(both)
    port = free_port()
    run = podkit(
        "run",
        str(path),
        "-p",
        f"{port}:8080@second",
        "--no-logs",
        "-p",
        f"{free_port()}:8080@simple-webapp",
    )
    wait_for("second pod", lambda: http_get(f"http://127.0.0.1:{port}/api/info"), 15)
    assert json.loads(http_get(f"http://127.0.0.1:{port}/api/info")[1])["pod_name"] == "second"
    assert run.stop() == 0


def test_shared_emptydir_log_file_is_tailed(podkit):
    port = free_port()
    run = podkit("run", SHARED, "-p", f"{port}:8080")
    wait_for("the webapp answering", lambda: http_get(f"http://127.0.0.1:{port}/"), 15)
    http_get(f"http://127.0.0.1:{port}/api/info")

    def from_file():
        return next(
            (
                e
                for e in run.events("log-agent")
                if e.get("source") == "file" and e.get("path") == "/api/info"
            ),
            None,
        )

    event = wait_for("the file event", from_file, 5)
    assert event["file"] == "/var/log/webapp/access.log"
    assert event["kubernetes"]["pod_name"] == "webapp-with-log-sidecar"
    assert run.stop() == 0


def test_published_port_taken_names_the_holder(podkit, tmp_path):
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        run = podkit("run", SEED, "-p", f"{port}:8080")
        assert run.wait(20) == 1
        assert f"127.0.0.1:{port}" in run.text() and "already in use" in run.text()
        assert "python" in run.text()  # the holder: this test process
        assert not (run.state_dir / "pods").exists()  # nothing was started
    finally:
        holder.close()


def test_ctrl_c_while_the_containers_start_stops_them_at_once(podkit):
    # The containers' main processes are PID 1 of their namespaces: a SIGTERM they do not handle
    # yet would be dropped and the stop would sit out the 30 s grace period.
    run = podkit("run", SEED, "-p", f"{free_port()}:8080")
    run.wait_stderr("Started container log-agent")
    run.wait_stderr("Started container simple-webapp")
    started = time.monotonic()
    assert run.stop(timeout=20) == 0, run.text()
    assert time.monotonic() - started < 5, run.text()
    final = {c["name"]: c["state"] for c in run.status()["status"]["containerStatuses"]}
    assert final["simple-webapp"]["terminated"]["exitCode"] == 0
    assert final["log-agent"]["terminated"]["exitCode"] == 0


def test_one_container_port_published_twice(podkit):
    ports = [free_port(), free_port()]
    run = podkit("run", SEED, "-p", f"{ports[0]}:8080", "-p", f"{ports[1]}:8080", "--no-logs")
    for p in ports:
        status, _ = wait_for(
            f"the webapp on {p}", lambda p=p: http_get(f"http://127.0.0.1:{p}/"), 15
        )
        assert status == 200
    assert run.stop() == 0
