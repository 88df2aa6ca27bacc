"""Volumes, environment and workingDir as a container sees them, in a real pod."""

from __future__ import annotations

from pathlib import Path

from podkit_harness import write_manifest

SCRIPT = r"""
CFG=/etc/app/settings.conf
echo "cfg=$(cat $CFG) mode=$(stat -L -c %a $CFG) link=$(readlink $CFG)"
echo "cfg-missing=$(ls /etc/app/other.conf 2>&1 | grep -c 'No such')"
echo "ro=$(touch /etc/app/x 2>&1 | grep -c 'Read-only')"
echo "secret-env=$DB_PASSWORD"
echo "secret-file=$(cat /secrets/password) fs=$(stat -f -c %T /secrets)"
echo "labels=$(cat /podinfo/labels | tr '\n' ' ')"
echo "mem-fs=$(stat -f -c %T /scratch) blocks=$(stat -f -c '%b*%S' /scratch)"
echo "subpath=$(cat /sub/hello.txt)"
echo "host=$(cat /host/data.txt)"
echo "expanded=$1"
echo "pod=$MY_POD uid-set=$([ -n "$MY_UID" ] && echo yes)"
echo "mem-limit=$MEM_LIMIT"
echo "from-prefix=$CFG_mode"
echo "cwd=$(pwd)"
echo "shared=$(cat /scratch/from-writer)"
"""


def test_volumes_env_and_working_dir(tmp_path: Path, podkit) -> None:
    host_dir = tmp_path / "hostdata"
    host_dir.mkdir()
    (host_dir / "data.txt").write_text("from the host")
    manifest = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: app-config}}
        data:
          settings.conf: "level=debug"
          other.conf: "unused"
          mode: "fast"
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: db}}
        stringData: {{password: s3cret}}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: volumes
          labels: {{app: demo, tier: web}}
        spec:
          restartPolicy: Never
          initContainers: []
          containers:
          - name: writer
            image: x
            command: ["sh", "-c", "echo hi > /scratch/from-writer; mkdir -p /data/sub;
                       echo sub-content > /data/sub/hello.txt"]
            volumeMounts:
            - {{name: scratch, mountPath: /scratch}}
            - {{name: data, mountPath: /data}}
          - name: reader
            image: x
            workingDir: /work/here
            command: ["sh", "-c"]
            args: ["for i in $(seq 100); do [ -f /scratch/from-writer ] && break; sleep 0.05;
                    done; {SCRIPT.strip().replace(chr(10), "; ").replace('"', chr(92) + '"')}",
                   "sh", "$(GREETING) world"]
            env:
            - {{name: NAME, value: world}}
            - {{name: GREETING, value: "hello $(NAME)"}}
            - name: DB_PASSWORD
              valueFrom: {{secretKeyRef: {{name: db, key: password}}}}
            - name: MY_POD
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: MY_UID
              valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}
            - name: MEM_LIMIT
              valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
            envFrom:
            - {{prefix: CFG_, configMapRef: {{name: app-config}}}}
            resources: {{limits: {{memory: 256Mi}}}}
            volumeMounts:
            - {{name: config, mountPath: /etc/app}}
            - {{name: secret, mountPath: /secrets}}
            - {{name: podinfo, mountPath: /podinfo}}
            - {{name: scratch, mountPath: /scratch}}
            - {{name: data, mountPath: /sub, subPath: sub}}
            - {{name: host, mountPath: /host, readOnly: true}}
          volumes:
          - name: config
            configMap:
              name: app-config
              items: [{{key: settings.conf, path: settings.conf, mode: 0600}}]
          - {{name: secret, secret: {{secretName: db}}}}
          - name: podinfo
            downwardAPI:
              items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
          - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
          - {{name: data, emptyDir: {{}}}}
          - {{name: host, hostPath: {{path: {host_dir}, type: Directory}}}}
        """,
    )
    run = podkit("run", manifest)
    assert run.wait(30) == 0, run.text()
    out = {}
    for line in run.stdout_lines("[reader] "):
        key, _, value = line.removeprefix("[reader] ").partition("=")
        out[key] = value
    assert (
        out["cfg"] == "level=debug mode=600 link=..data/settings.conf"
    )  # as the kubelet lays it out
    assert out["cfg-missing"] == "1"  # only the listed item is projected
    assert out["ro"] == "1"  # configMap volumes are read-only
    assert out["secret-env"] == "s3cret"
    assert out["secret-file"] == "s3cret fs=tmpfs"  # secrets never touch the disk
    assert out["labels"] == 'app="demo" tier="web"'
    assert out["mem-fs"].startswith("tmpfs")
    blocks, block_size = out["mem-fs"].split("blocks=")[1].split("*")
    assert int(blocks) * int(block_size) == 8 * 1024 * 1024  # sizeLimit is the tmpfs size
    assert out["subpath"] == "sub-content"
    assert out["host"] == "from the host"
    assert out["expanded"] == "hello world world"
    assert out["pod"] == "volumes uid-set=yes"
    assert out["mem-limit"] == "256"
    assert out["from-prefix"] == "fast"
    assert out["cwd"] == "/work/here"
    assert out["shared"] == "hi"
    assert not Path("/work/here").exists()  # the workingDir was created inside only


def test_a_mount_under_a_symlinked_directory_stays_inside_the_container(
    tmp_path: Path, podkit
) -> None:
    """/var/run is a link to /run (absolute, on Debian): a volume at /var/run/secrets/... must
    be resolved inside the container's root, never follow the link onto the host's /run (where
    Kubernetes' own /var/run/secrets/kubernetes.io/serviceaccount would land otherwise)."""
    name = f"podkit-test-{tmp_path.name}"
    host_side = Path("/run/secrets") / name
    manifest = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: token}}
        stringData: {{token: inside-only}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: symlinked-mount}}
        spec:
          restartPolicy: Never
          containers:
          - name: reader
            image: x
            command: ["sh", "-c", "echo token=$(cat /var/run/secrets/{name}/token)"]
            volumeMounts:
            - {{name: token, mountPath: /var/run/secrets/{name}, readOnly: true}}
          volumes:
          - {{name: token, secret: {{secretName: token}}}}
        """,
    )
    parent_existed = host_side.parent.exists()
    try:
        run = podkit("run", manifest)
        assert run.wait(30) == 0, run.text()
        assert "[reader] token=inside-only" in run.stdout_lines("[reader] "), run.text()
        assert not host_side.exists()
    finally:
        if host_side.is_dir():  # the bug this test is about: clean up after it
            host_side.rmdir()
            if not parent_existed:
                host_side.parent.rmdir()


def test_services_in_the_files_give_their_environment_variables(tmp_path: Path, podkit) -> None:
    manifest = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Service
        metadata: {name: backend}
        spec:
          clusterIP: 10.96.7.7
          ports: [{name: http, port: 8080}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: linked}
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: x
            command: ["sh", "-c", "echo $BACKEND_SERVICE_HOST:$BACKEND_SERVICE_PORT_HTTP $URL"]
            env: [{name: URL, value: "http://$(BACKEND_SERVICE_HOST):$(BACKEND_SERVICE_PORT)/"}]
        """,
    )
    run = podkit("run", manifest, "--no-publish")
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[c] ") == ["[c] 10.96.7.7:8080 http://10.96.7.7:8080/"]
