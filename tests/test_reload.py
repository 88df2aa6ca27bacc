"""`podkit run` re-reads its manifests on SIGUSR1, as a kubelet takes a pod's newer version:
configMap and secret volumes change all at once, a container whose image changed is restarted
with it, other changes are named and not followed, and a file that no longer loads changes
nothing. (podkit serve's node agent sends the same signal to a pod's supervisor.)"""

from __future__ import annotations

import signal
from pathlib import Path

from podkit_harness import wait_for

POD = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: {greeting}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reloaded}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: reader
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do
               echo \\"seen=$(cat /etc/cfg/greeting)\\"; sleep 0.2; done"]
    volumeMounts: [{{name: cfg, mountPath: /etc/cfg}}]
  - name: app
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done"]
  volumes:
  - {{name: cfg, configMap: {{name: cfg}}}}
"""


def test_sigusr1_follows_config_and_image_changes(tmp_path: Path, podkit) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD.format(greeting="hello", image="busybox"))
    run = podkit("run", str(manifest), "--no-publish")
    try:
        wait_for("the first greeting", lambda: "[reader] seen=hello" in run.out, 20)
        wait_for("app started", lambda: "[app] started" in run.out, 10)

        manifest.write_text(POD.format(greeting="bonjour", image="x"))
        run.proc.send_signal(signal.SIGUSR1)
        wait_for("the new greeting", lambda: "[reader] seen=bonjour" in run.out, 10)

        def restarted() -> dict | None:
            statuses = {c["name"]: c for c in run.status()["status"]["containerStatuses"]}
            app = statuses["app"]
            return statuses if app["restartCount"] == 1 and "running" in app["state"] else None

        statuses = wait_for("app restarted with its new image", restarted, 15)
        assert statuses["app"]["image"] == "x"
        assert statuses["app"]["lastState"]["terminated"]["exitCode"] == 0
        assert statuses["reader"]["restartCount"] == 0  # only the changed container restarts
        assert run.out.count("[app] started") == 2
        assert "Container app definition changed, will be restarted" in run.text()

        # A change a pod may not make is named; a broken file changes nothing.
        manifest.write_text(
            POD.format(greeting="bonjour", image="x").replace("echo started", "echo again")
        )
        run.proc.send_signal(signal.SIGUSR1)
        run.wait_stderr("a change to container app (only its image may change) is not followed")
        manifest.write_text("kind: Pod\napiVersion: v1\nmetadata: {name: [broken\n")
        run.proc.send_signal(signal.SIGUSR1)
        run.wait_stderr("the manifests no longer load, nothing changes")
        assert run.proc.poll() is None
        assert run.stop() == 0
    finally:
        run.kill()


def test_a_volume_version_is_swapped_in_whole_and_the_old_one_removed(tmp_path: Path) -> None:
    from podkit.runtime import atomic_volume

    vol = tmp_path / "vol"
    vol.mkdir()
    assert atomic_volume.write(str(vol), {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    first = (vol / "..data").readlink()
    assert (vol / "a").readlink() == Path("..data/a") and (vol / "dir/b").read_text() == "2"
    assert (vol / "dir/b").stat().st_mode & 0o777 == 0o600
    assert not atomic_volume.write(str(vol), {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (vol / "..data").readlink() == first  # unchanged: not rewritten
    assert atomic_volume.write(str(vol), {"a": (b"one", 0o644)})
    assert (vol / "a").read_text() == "one"
    assert not (vol / "dir").exists()  # a name the new version lacks goes
    assert sorted(p.name for p in vol.iterdir()) == sorted(
        ["..data", (vol / "..data").readlink().name, "a"]
    )  # the old version's directory is gone


def test_the_objects_a_pod_reads_and_how_it_waits_for_them() -> None:
    from podkit.manifest.references import Reference, references
    from podkit.runtime.node_agent import waiting_status

    sources = [{"secret": {"name": "tls"}}, {"configMap": {"name": "opt", "optional": True}}]
    from_app = {"configMapKeyRef": {"name": "app", "key": "x"}}
    spec = {
        "volumes": [
            {"name": "cfg", "configMap": {"name": "app"}},
            {"name": "all", "projected": {"sources": sources}},
        ],
        "containers": [{"name": "c", "image": "i", "envFrom": [{"secretRef": {"name": "env"}}],
                        "env": [{"name": "X", "valueFrom": from_app}]}],
        "imagePullSecrets": [{"name": "pull"}],
    }  # fmt: skip
    found = references(spec)
    assert found == [
        Reference("ConfigMap", "app", False, "cfg"),
        Reference("Secret", "tls", False, "all"),
        Reference("ConfigMap", "opt", True, "all"),
        Reference("ConfigMap", "app", False),
        Reference("Secret", "env", False),
        Reference("Secret", "pull", True),
    ]
    pod = {"spec": spec}
    status, events = waiting_status(pod, [found[1], found[4]])
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert events == [  # the volume holds the pod: the env's turn comes after
        ("Warning", 'MountVolume.SetUp failed for volume "all" : secret "tls" not found',
         "FailedMount"),
    ]  # fmt: skip
    status, events = waiting_status(pod, [found[4]])
    assert status["containerStatuses"][0]["state"]["waiting"] == {
        "reason": "CreateContainerConfigError", "message": 'secret "env" not found',
    }  # fmt: skip
    assert events == [("Warning", 'Error: secret "env" not found', "Failed")]
