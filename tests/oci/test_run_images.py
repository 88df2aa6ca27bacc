"""Pods that run registry images: `podkit run` pulls them from a registry the test starts, and
runs each container from an overlay of the image's layers, as containerd and the kubelet would:
the image's own files, its ENTRYPOINT/CMD/Env/WorkingDir/User under the container's command,
args, env and securityContext, a fresh writable layer at each start, the pull policy, and the
kubelet's events and waiting reasons."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from podkit_harness import REPO, Podkit, run_podkit, wait_for, write_manifest
from registry_harness import PushedImage, Registry, TestImages

pytestmark = pytest.mark.skipif(
    __import__("os").geteuid() != 0, reason="registry images run as root here; rootless later"
)


@pytest.fixture(scope="module")
def busybox(registry: Registry, oci_images: TestImages) -> PushedImage:
    return registry.push(oci_images.busybox(), "run/busybox:1.0")


@pytest.fixture(scope="module")
def layered(registry: Registry, oci_images: TestImages) -> PushedImage:
    return registry.push(oci_images.layered(), "run/layered:1.0")


def lines(run: Podkit, container: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in run.stdout_lines(f"[{container}] ")]


def statuses(run: Podkit) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run.status()["status"]["containerStatuses"]}


def wait_exit(run: Podkit) -> int:
    return run.wait(60)


def test_a_busybox_pod_runs_the_images_files_not_the_hosts(
    tmp_path: Path, podkit: Any, busybox: PushedImage
) -> None:
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: box}}
        spec:
          restartPolicy: Never
          hostAliases: [{{ip: 10.1.2.3, hostnames: [db.local, cache.local]}}]
          dnsPolicy: None
          dnsConfig:
            nameservers: [10.9.9.9]
            searches: [svc.example]
            options: [{{name: ndots, value: "2"}}]
          containers:
          - name: c
            image: {busybox.reference}
            command: [sh, -c]
            args:
            - >-
              echo $(ls /); busybox | head -1; test -e /usr/bin/python3 && echo HOST-FILES;
              hostname; echo $(cat /etc/resolv.conf);
              grep cache.local /etc/hosts; echo $(ls /dev); id
        """,
    )
    run = podkit("run", m)
    assert wait_exit(run) == 0, run.text()
    out = lines(run, "c")
    assert sorted(out[0].split()) == [
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "root",
        "sys",
        "tmp",
        "usr",
    ]
    assert out[1].startswith("BusyBox v")
    assert "HOST-FILES" not in out  # the host has python3; the image has not
    assert out[2:4] == ["box", "nameserver 10.9.9.9 search svc.example options ndots:2"]
    assert out[4].split() == ["10.1.2.3", "db.local", "cache.local"]
    devices = set(out[5].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= devices
    assert "sda" not in devices and "vda" not in devices
    assert out[6].startswith("uid=0(root) gid=0(root)")
    err = run.text()
    assert f'Pulling image "{busybox.reference}"' in err
    pulled = re.search(
        rf'Successfully pulled image "{re.escape(busybox.reference)}" in (\S+) '
        rf"\((\S+) including waiting\)\. Image size: (\d+) bytes\.",
        err,
    )
    assert pulled, err
    assert int(pulled.group(3)) > 1_000_000  # busybox-static, compressed
    status = statuses(run)["c"]
    host, path = busybox.reference.split("/", 1)
    assert status["image"] == busybox.reference
    assert status["imageID"] == f"{host}/{path.split(':')[0]}@{busybox.digest}"


def test_entrypoint_cmd_args_env_workdir_and_user_as_kubernetes_defines_them(
    tmp_path: Path, podkit: Any, layered: PushedImage
) -> None:
    """The image: ENTRYPOINT [/bin/sh, -c], CMD ['echo "$GREETING"; id; pwd'], Env GREETING,
    WorkingDir /app, User 1000:1000 (tests/registry_harness.py: LAYERED_CONFIG)."""
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: precedence}}
        spec:
          restartPolicy: Never
          containers:
          - name: image-defaults
            image: {layered.reference}
          - name: args-replace-cmd
            image: {layered.reference}
            args: ['echo "args $GREETING"']
          - name: command-drops-cmd
            image: {layered.reference}
            command: [echo, only-the-command]
          - name: env-and-workdir
            image: {layered.reference}
            env: [{{name: GREETING, value: from the pod}}]
            workingDir: /tmp
          - name: run-as-root
            image: {layered.reference}
            args: ["id -u; echo $PATH"]
            securityContext: {{runAsUser: 0}}
          - name: run-as-group
            image: {layered.reference}
            args: ["id -u; id -g"]
            securityContext: {{runAsGroup: 50}}
        """,
    )
    run = podkit("run", m)
    assert wait_exit(run) == 0, run.text()
    assert lines(run, "image-defaults") == [
        "hello from layered",
        "uid=1000(app) gid=1000(app) groups=1000(app)",
        "/app",
    ]
    assert lines(run, "args-replace-cmd") == ["args hello from layered"]
    assert lines(run, "command-drops-cmd") == ["only-the-command"]
    assert lines(run, "env-and-workdir")[0::2] == ["from the pod", "/tmp"]
    assert lines(run, "run-as-root") == ["0", "/usr/local/bin:/usr/bin:/bin"]  # the image's PATH
    assert lines(run, "run-as-group") == ["1000", "50"]


def test_a_named_image_user_is_resolved_in_the_image_and_checked_by_run_as_non_root(
    tmp_path: Path, podkit: Any, registry: Registry, oci_images: TestImages
) -> None:
    named = registry.push(oci_images.layered_named_user(), "run/named-user:1.0")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: users}}
        spec:
          restartPolicy: Never
          containers:
          - name: named
            image: {named.reference}
            args: ["id"]
          - name: non-root
            image: {named.reference}
            securityContext: {{runAsNonRoot: true}}
        """,
    )
    run = podkit("run", m)
    run.wait_stderr("CreateContainerConfigError", timeout=30)
    wait_for("named to finish", lambda: "terminated" in statuses(run)["named"]["state"], 30)
    assert lines(run, "named") == ["uid=1000(app) gid=1000(app) groups=1000(app)"]
    waiting = statuses(run)["non-root"]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "container has runAsNonRoot and image has non-numeric user (app)" in waiting["message"]
    assert run.stop() == 0


def test_a_restarted_container_starts_from_the_image_again(
    tmp_path: Path, podkit: Any, busybox: PushedImage, state_dir: Path
) -> None:
    """The writable layer is the container's, new at each start: what a crashed run wrote is
    gone, as in Kubernetes; the image's layers are never written."""
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: fresh}}
        spec:
          restartPolicy: OnFailure
          containers:
          - name: c
            image: {busybox.reference}
            command: [sh, -c]
            args:
            - >-
              test -e /bin/left-behind && echo SAW-OLD-WRITES;
              echo run; touch /bin/left-behind; rm /bin/ls;
              test -e /etc/second && exit 0; touch /etc/second; exit 3
        """,
    )
    run = podkit("run", m, "--backoff-scale", "0.01")
    wait_for("two runs", lambda: statuses(run)["c"]["restartCount"] >= 2, 30)
    assert run.stop() == 0
    assert "SAW-OLD-WRITES" not in lines(run, "c")
    assert lines(run, "c").count("run") >= 2
    layers = list((state_dir / "oci" / "layers").iterdir())
    assert all((layer / "bin" / "ls").is_symlink() for layer in layers)
    assert not any((layer / "bin" / "left-behind").exists() for layer in layers)


def test_read_only_root_filesystem_with_a_writable_volume(
    tmp_path: Path, podkit: Any, busybox: PushedImage
) -> None:
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: ro}}
        spec:
          restartPolicy: Never
          volumes: [{{name: scratch, emptyDir: {{}}}}]
          containers:
          - name: c
            image: {busybox.reference}
            command: [sh, -c, "touch /root-file 2>&1; touch /scratch/ok && echo volume-ok"]
            securityContext: {{readOnlyRootFilesystem: true}}
            volumeMounts: [{{name: scratch, mountPath: /scratch}}]
        """,
    )
    run = podkit("run", m)
    assert wait_exit(run) == 0, run.text()
    out = lines(run, "c")
    assert "Read-only file system" in out[0]
    assert out[1] == "volume-ok"


def test_the_images_stop_signal_stops_the_container(
    tmp_path: Path, podkit: Any, registry: Registry, oci_images: TestImages
) -> None:
    image = registry.push(oci_images.busybox_stop_signal(), "run/stop-signal:1.0")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: stopper}}
        spec:
          terminationGracePeriodSeconds: 20
          containers:
          - name: c
            image: {image.reference}
            command: [sh, -c]
            args:
            - trap 'echo got-USR1; exit 0' USR1; trap '' TERM; echo up; while :; do sleep 0.1; done
        """,
    )
    run = podkit("run", m)
    wait_for("the container up", lambda: "up" in lines(run, "c"), 30)
    began = time.monotonic()
    assert run.stop(signal.SIGTERM, timeout=30) == 0
    assert "got-USR1" in lines(run, "c")
    assert time.monotonic() - began < 10  # not the grace period's SIGKILL


def test_pull_policies_never_and_if_not_present(
    tmp_path: Path, podkit: Any, registry: Registry, oci_images: TestImages, state_dir: Path
) -> None:
    image = registry.push(oci_images.busybox(), "run/policy:1.0")
    pod = f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: policy}}
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: {image.reference}
            imagePullPolicy: POLICY
            command: [echo, ran]
        """
    never = write_manifest(tmp_path, pod.replace("POLICY", "Never"), "never.yaml")
    run = podkit("run", never)
    message = f'Container image "{image.reference}" is not present with pull policy of Never'
    run.wait_stderr(message, timeout=20)
    wait_for(
        "ErrImageNeverPull",
        lambda: statuses(run)["c"]["state"]["waiting"]["reason"] == "ErrImageNeverPull",
    )
    assert run.stop() == 0
    pulled = run_podkit("pull", image.reference, state_dir=state_dir, timeout=60)
    assert pulled.returncode == 0, pulled.stderr
    mark = registry.mark()
    for policy in ("Never", "IfNotPresent"):
        path = write_manifest(tmp_path, pod.replace("POLICY", policy), f"{policy}.yaml")
        run = podkit("run", path)
        assert wait_exit(run) == 0, run.text()
        assert f'Container image "{image.reference}" already present on machine' in run.text()
        assert lines(run, "c") == ["ran"]
    registry.sync_log()
    assert all(registry.blob_gets(d, since=mark) == 0 for d in image.layer_digests)


def test_an_invalid_image_name_waits_with_invalid_image_name(tmp_path: Path, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: invalid}
        spec:
          containers: [{name: c, image: "Team/App:1.0"}]
        """,
    )
    run = podkit("run", m)
    run.wait_stderr("Error: InvalidImageName")
    waiting = wait_for(
        "InvalidImageName", lambda: statuses(run)["c"]["state"].get("waiting", {}), 10
    )
    assert waiting["reason"] == "InvalidImageName"
    assert "must be lowercase" in waiting["message"]
    assert run.stop() == 0


def test_registry_down_then_up_err_image_pull_then_backoff_then_running(
    tmp_path: Path, podkit: Any, oci_images: TestImages
) -> None:
    with Registry(tmp_path / "flaky") as flaky:
        image = flaky.push(oci_images.busybox(), "run/flaky:1.0")
        flaky.stop()
        m = write_manifest(
            tmp_path,
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: flaky}}
            spec:
              terminationGracePeriodSeconds: 1  # sh as PID 1 ignores SIGTERM
              containers:
              - name: c
                image: {image.reference}
                command: [sh, -c, "echo pulled-and-running; sleep 60"]
            """,
        )
        run = podkit("run", m, "--backoff-scale", "0.2")  # backoff 2 s, then 4 s

        def reason() -> str:
            return statuses(run)["c"]["state"].get("waiting", {}).get("reason", "")

        wait_for("ErrImagePull", lambda: reason() == "ErrImagePull", 20)
        wait_for("ImagePullBackOff", lambda: reason() == "ImagePullBackOff", 20)
        flaky.restart()
        wait_for("Running", lambda: "running" in statuses(run)["c"]["state"], 30)
        wait_for("its output", lambda: lines(run, "c") == ["pulled-and-running"], 10)
        text = run.text()
        assert text.count(f'Pulling image "{image.reference}"') >= 2
        assert f'Back-off pulling image "{image.reference}"' in text
        assert run.stop() == 0


def test_image_pull_secrets_authenticate_and_never_show_the_password(
    tmp_path: Path, podkit: Any, htpasswd_registry: Registry, oci_images: TestImages
) -> None:
    import base64
    import json

    image = htpasswd_registry.push(oci_images.busybox(), "run/private:1.0")
    user, password = htpasswd_registry.username, htpasswd_registry.password
    assert user and password
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {htpasswd_registry.host: {"auth": auth}}})
    secret = base64.b64encode(config.encode()).decode()
    pod = f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: regcred}}
        type: kubernetes.io/dockerconfigjson
        data: {{.dockerconfigjson: {secret}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: private}}
        spec:
          restartPolicy: Never
          SECRETS
          containers: [{{name: c, image: {image.reference}, command: [echo, pulled-privately]}}]
        """
    without = write_manifest(tmp_path, pod.replace("SECRETS", ""), "without.yaml")
    run = podkit("run", without)
    run.wait_stderr("Error: ErrImagePull", timeout=20)
    assert "401" in run.text() or "credentials" in run.text()
    assert run.stop() == 0
    with_secret = pod.replace("SECRETS", "imagePullSecrets: [{name: regcred}]")
    run = podkit("run", write_manifest(tmp_path, with_secret, "with.yaml"))
    assert wait_exit(run) == 0, run.text()
    assert lines(run, "c") == ["pulled-privately"]
    assert password not in run.text() and auth not in run.text()


def test_on_a_terminal_the_pull_shows_a_bar_per_layer(
    tmp_path: Path, registry: Registry, oci_images: TestImages, state_dir: Path
) -> None:
    import os
    import pty

    from podkit_harness import PODKIT_ENV

    image = registry.push(oci_images.layered(), "run/bars:1.0")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: bars}}
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: {image.reference}, command: [echo, done]}}]
        """,
    )
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podkit.cli.main", "run", m, "--state-dir", str(state_dir)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **PODKIT_ENV, "COLUMNS": "120"},
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(30) == 0
    text = seen.decode(errors="replace")
    for digest in image.layer_digests:
        assert digest[7:19] in text  # its bar, labelled with the digest as podman shows it
    assert "Successfully pulled image" in text and "done" in text


def test_rmi_is_refused_while_a_running_pod_uses_the_image(
    tmp_path: Path, podkit: Any, registry: Registry, oci_images: TestImages, state_dir: Path
) -> None:
    image = registry.push(oci_images.busybox(), "run/in-use:1.0")
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: user}}
        spec:
          terminationGracePeriodSeconds: 1
          containers: [{{name: c, image: {image.reference}, command: [sleep, "300"]}}]
        """,
    )
    run = podkit("run", m)
    wait_for("running", lambda: "running" in statuses(run)["c"]["state"], 30)

    refused = run_podkit("rmi", image.reference, state_dir=state_dir)
    assert refused.returncode == 1
    assert f"{image.reference}: in use by running pod default/user" in refused.stderr
    assert run.stop() == 0
    removed = run_podkit("rmi", image.reference, state_dir=state_dir)
    assert removed.returncode == 0, removed.stderr
    assert f"Untagged: {image.reference}" in removed.stdout
