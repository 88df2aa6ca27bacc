"""Pod sandbox semantics with plain host programs: namespaces, no host trace, no orphans."""

from __future__ import annotations

import os
import signal

from podkit_harness import wait_for, write_manifest

manifest = write_manifest


def test_containers_share_localhost_and_hostname_but_not_the_host(tmp_path, podkit):
    m = manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: netpod}
        spec:
          restartPolicy: Never
          containers:
          - name: server
            image: busybox
            command: ["python3", "-c"]
            args:
            - |
              import socket
              s = socket.socket(); s.bind(("127.0.0.1", 7000)); s.listen()
              c, _ = s.accept(); c.sendall(b"hello from server"); c.close()
          - name: client
            image: busybox
            command: ["python3", "-c"]
            args:
            - |
              import socket, time, os
              for _ in range(200):
                  try:
                      c = socket.create_connection(("127.0.0.1", 7000)); break
                  except OSError: time.sleep(0.02)
              print("got:", c.recv(100).decode())
              print("hostname:", socket.gethostname())
              print("ipc:", os.readlink("/proc/self/ns/ipc"))
              print("pid:", os.getpid())
        """,
    )
    run = podkit("run", m, "--grace", "2")
    assert run.wait(20) == 0, run.text()
    lines = run.stdout_lines("[client] ")
    assert "[client] got: hello from server" in lines
    assert "[client] hostname: netpod" in lines
    assert f"[client] ipc: {os.readlink('/proc/self/ns/ipc')}" not in lines
    assert "[client] pid: 1" in lines  # its own PID namespace: the container is PID 1
    assert run.status()["status"]["phase"] == "Succeeded"


def test_spec_hostname_is_used(tmp_path, podkit):
    m = manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: named}
        spec:
          hostname: custom-host
          restartPolicy: Never
          containers:
          - {name: c, image: x, command: ["hostname"]}
        """,
    )
    run = podkit("run", m)
    assert run.wait(20) == 0, run.text()
    assert "[c] custom-host" in run.stdout_lines()


def test_writes_to_etc_var_log_and_dev_leave_no_trace_on_the_host(tmp_path, podkit, state_dir):
    marker = f"podkit-test-{os.getpid()}"
    m = manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: writer}}
        spec:
          restartPolicy: Never
          containers:
          - name: w
            image: x
            command: ["sh", "-c"]
            args: ["echo x > /etc/{marker} && mkdir -p /var/log/{marker} &&
                    echo y > /var/log/{marker}/f && cat /etc/{marker} /var/log/{marker}/f &&
                    touch /dev/{marker} && echo devices: $(ls /dev | tr '\\n' ' ') &&
                    echo state: $(ls -A {state_dir} | wc -l)"]
        """,
    )
    run = podkit("run", m)
    assert run.wait(20) == 0, run.text()
    lines = run.stdout_lines("[w] ")
    assert lines[:2] == ["[w] x", "[w] y"]  # the writes worked inside
    devices = lines[2].removeprefix("[w] devices: ").split()
    assert {"null", "zero", "urandom", "tty", "pts", "shm"} <= set(devices)
    assert not [d for d in devices if d.startswith(("vd", "sd", "nvme", "loop"))]  # no disks
    assert lines[3] == "[w] state: 0"  # podkit's state directory is hidden from containers
    assert not os.path.exists(f"/etc/{marker}")
    assert not os.path.exists(f"/var/log/{marker}")
    assert not os.path.exists(f"/dev/{marker}")


def _pids_with(marker: str) -> list[int]:
    """Processes whose environment carries `marker`: every process of the containers."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"MARKER={marker}".encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def test_sigkill_of_podkit_leaves_no_container_process(tmp_path, podkit, state_dir):
    marker = f"podkit-orphan-{os.getpid()}"
    # The container forks a background grandchild too: it must die as well.
    m = manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: orphans}}
        spec:
          containers:
          - name: a
            image: x
            command: ["sh", "-c", "sleep 1000 & exec sleep 1001"]
            env: [{{name: MARKER, value: "{marker}"}}]
          - name: b
            image: x
            command: ["sleep", "1002"]
            env: [{{name: MARKER, value: "{marker}"}}]
        """,
    )
    run = podkit("run", m)
    wait_for("three container processes", lambda: len(_pids_with(marker)) == 3, 15)
    # The pod sandbox and the containers' PID 1s (a launcher, a moment after it reported,
    # may not be gone yet: it dies with podkit as well).
    podkit_children = _children(run.proc.pid)
    tree = set(_pids_with(marker)) | set(podkit_children)
    assert len(set(_pids_with(marker)) & set(podkit_children)) == 2  # a's and b's PID 1
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(5)
    # Dead within two seconds (a zombie runs nothing), then reaped: the orphans go to the
    # machine's init, whose reaping podkit does not control (here it takes about a second).
    wait_for("every container process dead", lambda: not [p for p in tree if _alive(p)], 2.0)
    wait_for("no zombie left", lambda: not [p for p in tree if os.path.exists(f"/proc/{p}")], 10)
    # The next start cleans what the killed run left behind.
    again = podkit(
        "run",
        manifest(
            tmp_path,
            """
        apiVersion: v1
        kind: Pod
        metadata: {name: next}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: x, command: ["true"]}]
        """,
            "next.yaml",
        ),
    )
    assert again.wait(20) == 0, again.text()
    assert "cleaned state left by a killed run" in again.text()
    left = [p for p in (state_dir / "pods").iterdir() if p.name.startswith("default_orphans")]
    assert left and not (left[0] / "volumes").exists()


def test_restart_policy_and_exit_status(tmp_path, podkit):
    m = manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: flaky}
        spec:
          restartPolicy: OnFailure
          containers:
          - name: c
            image: x
            command: ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1));
                      echo $n > /data/n; echo run $n; [ $n -ge 3 ]"]
            volumeMounts: [{name: data, mountPath: /data}]
          volumes: [{name: data, emptyDir: {}}]
        """,
    )
    run = podkit("run", m, "--backoff-scale", "0.01")
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[c] ") == ["[c] run 1", "[c] run 2", "[c] run 3"]
    status = run.status()["status"]
    assert status["phase"] == "Succeeded"
    c = status["containerStatuses"][0]
    assert c["restartCount"] == 2
    assert c["state"]["terminated"]["reason"] == "Completed"
    assert c["lastState"]["terminated"]["exitCode"] == 1


def test_failed_pod_exits_1_with_error_state(tmp_path, podkit):
    m = manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: failing}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: x, command: ["sh", "-c", "echo oops >&2; exit 3"]}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(20) == 1, run.text()
    c = run.status()["status"]["containerStatuses"][0]
    assert c["state"]["terminated"]["exitCode"] == 3
    assert c["state"]["terminated"]["reason"] == "Error"
    logs = list(run.state_dir.glob("pods/*failing*/logs/c/0.log"))
    record = logs[0].read_text().splitlines()[0].split(" ", 3)
    assert record[1:] == ["stderr", "F", "oops"]  # CRI log format


def test_stop_sends_sigterm_then_sigkill_after_grace(tmp_path, podkit):
    m = manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: stopper}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: polite
            image: x
            command: ["python3", "-c", "import signal, sys, time; print('up', flush=True);
              signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(100)"]
          - name: stubborn
            image: x
            command: ["sh", "-c", "trap '' TERM; echo up; while true; do sleep 0.1; done"]
        """,
    )
    run = podkit("run", m)
    wait_for("both up", lambda: len([x for x in run.out if x.endswith("] up")]) == 2, 15)
    assert run.stop(signal.SIGTERM) == 0
    statuses = {c["name"]: c for c in run.status()["status"]["containerStatuses"]}
    assert statuses["polite"]["state"]["terminated"]["exitCode"] == 0
    assert statuses["stubborn"]["state"]["terminated"]["exitCode"] == 137
    assert "still running after the grace period (1s), SIGKILL" in run.text()


def test_an_unreachable_registry_is_err_image_pull_then_backoff_never_a_host_program(
    tmp_path, podkit
):
    """A name that is neither built in nor in the catalog is a registry image, even with a
    command: it is pulled (here from a port where nothing listens), never run from the host."""
    marker = tmp_path / "ran-on-the-host"
    m = manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: pull}}
        spec:
          containers:
          - name: c
            image: 127.0.0.1:1/team/app:1.0
            command: [sh, -c, "touch {marker}"]
        """,
    )
    run = podkit("run", m, "--backoff-scale", "0.1")
    run.wait_stderr('Failed to pull image "127.0.0.1:1/team/app:1.0"')

    def reason() -> str:
        return run.status()["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]

    wait_for("ErrImagePull", lambda: reason() == "ErrImagePull")
    wait_for("ImagePullBackOff", lambda: reason() == "ImagePullBackOff")
    run.wait_stderr('Back-off pulling image "127.0.0.1:1/team/app:1.0"')
    assert run.text().count('Pulling image "127.0.0.1:1/team/app:1.0"') >= 1
    assert not marker.exists()
    assert run.stop() == 0


def test_image_catalog_host_port_and_no_publish(tmp_path, podkit):
    from podkit_harness import free_port, http_get

    catalog = tmp_path / "images.yaml"
    catalog.write_text(
        'images:\n  static-server:\n    command: ["python3", "-m", "http.server"]\n'
        '    args: ["--bind", "127.0.0.1", "9000"]\n'
    )
    host_port = free_port()
    m = manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: cataloged}}
        spec:
          containers:
          - name: web
            image: static-server
            workingDir: /etc
            ports: [{{containerPort: 9000, hostPort: {host_port}}}]
          - name: other
            image: static-server
            args: ["--bind", "127.0.0.1", "9001"]
            ports: [{{containerPort: 9001}}]
        """,
    )
    run = podkit("run", m, "--image-catalog", str(catalog), "--no-publish", "--grace", "2")
    status, body = wait_for(
        "the catalog image answering on its hostPort",
        lambda: http_get(f"http://127.0.0.1:{host_port}/hostname"),
        15,
    )
    assert status == 200 and body.strip() == "cataloged"  # /etc/hostname of the pod
    assert f"published on localhost:{host_port}" in run.text()
    assert "9001" not in " ".join(x for x in run.err if "published" in x)  # --no-publish
    assert run.stop() == 0
