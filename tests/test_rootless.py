"""podkit as an ordinary user: user namespaces, loopback-only pod network, published ports."""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podkit_harness import (
    HOST_IMAGES,
    REPO,
    SYSTEM_PYTHON,
    free_port,
    http_get,
    require_system_python,
    wait_for,
)

USER = "podkit-rootless"
KUBECTL = Path(sys.executable).parent / "kubectl"  # the venv's, never one on PATH


@pytest.fixture
def user_dir() -> Iterator[Path]:
    # useradd (passwd), setpriv (util-linux) and python3 are in the Makefile's DEBS.
    require_system_python("useradd", "setpriv")
    created = subprocess.run(["id", USER], capture_output=True).returncode != 0
    if created:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
    home = Path(tempfile.mkdtemp(prefix="podkit-rootless-"))
    user = pwd.getpwnam(USER)
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        yield home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        if created:  # userdel refuses while a killed process of the user lingers
            wait_for(
                "the test user removed",
                lambda: subprocess.run(["userdel", USER], capture_output=True).returncode in (0, 6),
                10,
            )


def as_user(user_dir: Path, *args: str) -> list[str]:
    """`podkit ARGS` as the test user; setpriv execs podkit itself, so signals reach it."""
    path = os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO / "src")])
    return [
        "setpriv",
        f"--reuid={USER}",
        f"--regid={USER}",
        "--clear-groups",
        "env",
        f"PYTHONPATH={path}",
        f"PODKIT_STATE_DIR={user_dir}/state",
        f"PODKIT_IMAGE_CATALOG={HOST_IMAGES}",
        SYSTEM_PYTHON,
        "-m",
        "podkit.cli.main",
        *args,
    ]


def run_once_as_user(user_dir: Path, manifest: Path) -> subprocess.CompletedProcess[str]:
    """`podkit run MANIFEST` as the test user, to its end."""
    manifest.chmod(0o644)
    return subprocess.run(
        as_user(user_dir, "run", str(manifest), "--no-color"),
        cwd=user_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_seed_pod_runs_as_an_ordinary_user(user_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        as_user(
            user_dir,
            "run",
            str(REPO / "examples" / "pod-definition.yaml"),
            "-p",
            f"{port}:8080",
            "--no-color",
        ),
        cwd=user_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    # read_until reads a pipe: a pod that never gets there must not hang the suite.
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()

    def read_until(needle: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if needle in line:
                return
        raise AssertionError(f"{needle!r} never came:\n{''.join(lines)}")

    try:
        read_until("READY 2/2")
        assert "loopback only" in "".join(lines)  # no bridge without root, and podkit says so
        status, body = wait_for(
            "the webapp", lambda: http_get(f"http://127.0.0.1:{port}/api/info"), 15
        )
        assert status == 200 and json.loads(body)["pod_name"] == "simple-webapp"
        read_until('"path":"/api/info"')  # the log agent shipped the request
        owner = os.stat(next((user_dir / "state" / "pods").glob("*/status.json"))).st_uid
        assert owner == pwd.getpwnam(USER).pw_uid  # podkit ran as the user, not as root
        # port-forward works rootless too: into the unpublished log agent's admin port.
        fwd = subprocess.Popen(
            as_user(user_dir, "port-forward", "simple-webapp", ":2020"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert fwd.stdout is not None
            line = fwd.stdout.readline().strip()
            assert line.startswith("Forwarding from 127.0.0.1:"), fwd.stderr.read()
            admin = int(line.split()[2].rsplit(":", 1)[1])
            assert (
                wait_for(
                    "the admin port", lambda: http_get(f"http://127.0.0.1:{admin}/healthz"), 10
                )[0]
                == 200
            )
        finally:
            fwd.send_signal(signal.SIGINT)
            assert fwd.wait(10) == 0
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0, "".join(lines)


def test_exec_and_tcp_probes_work_rootless(user_dir: Path) -> None:
    manifest = user_dir / "probed.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probed}\nspec:\n  containers:\n"
        "  - name: c\n    image: x\n"
        '    command: ["sh", "-c", "touch /tmp/ok; exec python3 -m http.server 8000"]\n'
        "    readinessProbe: {exec: {command: [cat, /tmp/ok]}, periodSeconds: 1}\n"
        "    startupProbe: {tcpSocket: {port: 8000}, periodSeconds: 1, failureThreshold: 30}\n"
        "    resources: {limits: {memory: 64Mi}}\n"
    )
    manifest.chmod(0o644)
    proc = subprocess.Popen(
        as_user(user_dir, "run", str(manifest), "-o", "json", "--grace", "1"),
        cwd=user_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # one Pod document per status change
            status = json.loads(line)["status"]
            if status["containerStatuses"][0]["ready"]:
                break
        else:
            raise AssertionError(proc.stderr.read() if proc.stderr else "no output")
        # Ready needs both: the startup probe (tcp, through the sandbox's socket) gates the
        # readiness probe (exec, through nsenter into the user namespace).
        assert status["containerStatuses"][0]["started"] is True
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert proc.stderr is not None
        # No cgroups for an ordinary user here: podkit says once that limits are not enforced.
        assert proc.stderr.read().count("resource limits are not enforced") == 1
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0


def test_rootless_containers_are_confined_too(user_dir: Path) -> None:
    """What a user namespace allows: the default capabilities (inside it), seccomp, the masked
    and read-only /proc paths; with no cgroups for an ordinary user, no device allowlist."""
    manifest = user_dir / "confined.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: confined}\nspec:\n"
        "  restartPolicy: Never\n  containers:\n  - name: c\n    image: x\n"
        '    command: [sh, -c, \'grep -E "^(CapEff|Seccomp):" /proc/self/status; '
        "echo core > /proc/sys/kernel/core_pattern || echo refused']\n"
        "  - name: nnp\n    image: x\n"
        "    command: [sh, -c, 'grep -E \"^(CapEff|NoNewPrivs):\" /proc/self/status']\n"
        "    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n"
    )
    result = run_once_as_user(user_dir, manifest)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[c] CapEff:\t00000000a80425fb" in lines
    assert "[c] Seccomp:\t2" in lines
    assert "[c] refused" in lines
    assert "[nnp] CapEff:\t0000000000000000" in lines
    assert "[nnp] NoNewPrivs:\t1" in lines


def test_an_ordinary_user_pulls_and_runs_a_registry_image(user_dir: Path, tmp_path: Path) -> None:
    """busybox from a registry the test starts: pulled into the user's store (the files are
    the user's, and podkit says so once), run from an overlay in the pod's user namespace."""
    script = "id; echo $(ls /); touch /new && echo wrote"
    run, image, out = run_image_as_user(user_dir, tmp_path, "busybox", script)
    assert out[0].startswith("uid=0(root) gid=0(root)")
    assert out[1].split() == ["bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr"]
    assert out[2] == "wrote"
    assert f'Successfully pulled image "{image.reference}"' in run.stderr
    assert run.stderr.count("rootless: the files of registry images belong to you") == 1
    layers = user_dir / "state" / "oci" / "layers"
    busybox = next(p for p in layers.iterdir() if (p / "bin" / "busybox").exists())
    assert os.stat(busybox / "bin" / "busybox").st_uid == pwd.getpwnam(USER).pw_uid


def run_image_as_user(
    user_dir: Path, tmp_path: Path, image_name: str, script: str
) -> tuple[subprocess.CompletedProcess[str], Any, list[str]]:
    """Pushes the test image `image_name` (TestImages) to a registry the test starts and runs
    it as the test user with `sh -c script`: the run, the pushed image and container c's lines."""
    from registry_harness import Registry, TestImages

    with Registry(tmp_path / "registry") as registry:
        built = getattr(TestImages(tmp_path / "images"), image_name)()
        image = registry.push(built, f"rootless/{image_name}:1")
        manifest = user_dir / "image.yaml"
        manifest.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: image}\nspec:\n"
            "  restartPolicy: Never\n  containers:\n  - name: c\n"
            f"    image: {image.reference}\n"
            f"    command: [sh, -c, {json.dumps(script)}]\n"
        )
        run = run_once_as_user(user_dir, manifest)
    assert run.returncode == 0, run.stderr
    out = [line.removeprefix("[c] ") for line in run.stdout.splitlines() if line.startswith("[c]")]
    return run, image, out


SUB_START, SUB_COUNT = 300000, 65536


@pytest.fixture
def subordinate_ids(user_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A range of subordinate ids for the test user in /etc/subuid and /etc/subgid (newuidmap,
    from Debian's uidmap, checks them), taken out again afterwards. Its size: the test's
    `subordinate_count` parameter, else SUB_COUNT."""
    require_system_python("newuidmap", "newgidmap")
    count = getattr(request, "param", SUB_COUNT)
    line = f"{USER}:{SUB_START}:{count}\n"
    saved = {}
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        saved[path] = path.read_text() if path.exists() else None
        path.write_text((saved[path] or "") + line)
    try:
        yield user_dir
    finally:
        for path, text in saved.items():
            if text is None:
                path.unlink()
            else:
                path.write_text(text)


def test_with_subordinate_ids_image_files_keep_their_owners_and_its_user_runs(
    subordinate_ids: Path, tmp_path: Path
) -> None:
    """As podman rootless: the pod's user namespace maps the user's subordinate ids, so the
    layered image's files owned by 1000 stay 1000's, its USER 1000 runs, and the files it
    writes belong to it; podkit removes all of it afterwards (rmi, then nothing is left)."""
    user_dir = subordinate_ids
    script = (
        'id; stat -c "%u:%g %a" /app/data/secret.txt; cat /app/data/secret.txt; '
        "mkdir -p /home/app/made/deep && touch /home/app/made/deep/f && "
        "stat -c %u:%g /home/app/made/deep/f"
    )
    run, image, out = run_image_as_user(user_dir, tmp_path, "layered", script)
    assert out[0].startswith("uid=1000(app) gid=1000(app)"), out
    assert out[1:4] == ["1000:1000 600", "only for app", "1000:1000"]
    assert "belong to you" not in run.stderr  # nothing to warn about: owners are kept
    # On the host the layer's 1000 is the 1000th subordinate id (0 is the user itself).
    layers = user_dir / "state" / "oci" / "layers"
    secret = next(layers.glob("*/app/data/secret.txt"))
    assert (secret.stat().st_uid, secret.stat().st_gid) == (SUB_START + 999, SUB_START + 999)
    # The container's upper dir, with a directory of uid 1000 in it, went with the pod.
    assert not list((user_dir / "state" / "pods").glob("*/containers"))
    rmi = subprocess.run(
        as_user(user_dir, "rmi", image.reference), capture_output=True, text=True, timeout=60
    )
    assert rmi.returncode == 0, rmi.stderr
    assert [p.name for p in layers.iterdir()] == []


@pytest.mark.parametrize("subordinate_ids", [500], indirect=True)
def test_an_owner_beyond_the_subordinate_ids_is_a_clear_pull_error(
    subordinate_ids: Path, tmp_path: Path
) -> None:
    """The layered image has files of uid 1000; 500 subordinate ids cannot hold them."""
    from registry_harness import Registry, TestImages

    user_dir = subordinate_ids
    with Registry(tmp_path / "registry") as registry:
        image = registry.push(TestImages(tmp_path / "images").layered(), "rootless/layered:1")
        pull = subprocess.run(
            as_user(user_dir, "pull", image.reference), capture_output=True, text=True, timeout=60
        )
    assert pull.returncode == 1
    assert "owner 1000:1000 is beyond the subordinate ids of this user" in pull.stderr
    assert "(/etc/subuid, /etc/subgid)" in pull.stderr
    layers = user_dir / "state" / "oci" / "layers"
    # The half-unpacked layer went (busybox's own layer, whole and checked, may stay).
    assert not [p.name for p in layers.iterdir() if p.name.startswith(".tmp-")]
    assert not list(layers.glob("*/app/data"))  # layer 1: the files of uid 1000


SERVICES = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: simple-webapp, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: asker}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while sleep 1; do :; done"]
"""


def test_services_and_cluster_dns_work_rootless_on_each_pods_loopback(user_dir: Path) -> None:
    """Without root there are no pod IPs: cluster IPs are loopback addresses (127.96.0.0/12),
    and serve's userspace proxy listens on them inside each pod. By name, through the cluster
    DNS, a pod reaches both `web` pods; the kubernetes Service leads to the API; a NodePort
    on the host's 127.0.0.1 leads to the pods too."""
    port = free_port()
    serve = subprocess.Popen(
        as_user(user_dir, "serve", "--listen", f"127.0.0.1:{port}"),
        cwd=user_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    config = user_dir / "state" / "serve" / "kubeconfig.yaml"
    env = {"KUBECONFIG": str(config), "HOME": str(user_dir), "PATH": os.environ["PATH"]}

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), *args], input=stdin, capture_output=True, text=True, env=env,
            timeout=60,
        )  # fmt: skip

    try:
        wait_for("serve", lambda: config.exists() and kubectl("get", "ns").returncode == 0, 30)
        assert kubectl("apply", "-f", "-", stdin=SERVICES).returncode == 0
        done = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        assert done.returncode == 0, done.stderr
        ready = kubectl("wait", "--for=condition=Ready", "pod/asker", "--timeout=60s")
        assert ready.returncode == 0, ready.stderr
        svc = json.loads(kubectl("get", "svc", "web", "-o", "json").stdout)["spec"]
        assert ipaddress.ip_address(svc["clusterIP"]) in ipaddress.ip_network("127.96.0.0/12")
        resolv = kubectl("exec", "asker", "--", "cat", "/etc/resolv.conf").stdout
        assert resolv.splitlines()[0] == "nameserver 127.96.0.10"
        found = kubectl("exec", "asker", "--", "getent", "hosts", "web").stdout.split()
        assert found[:2] == [svc["clusterIP"], "web.default.svc.cluster.local"]
        pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)
        names = {p["metadata"]["name"] for p in pods["items"]}
        seen: set[str] = set()
        for _ in range(30):  # random choice: both, in 30 tries (1 in 2^29 to fail)
            got = kubectl("exec", "asker", "--", "curl", "-s", "-m", "3", "http://web/api/info")
            seen.add(json.loads(got.stdout)["pod_name"])
        assert seen == names
        api = kubectl(
            "exec", "asker", "--", "sh", "-c",
            "curl -sk -m 3 -o /dev/null -w '%{http_code}' "
            "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version",
        )  # fmt: skip
        assert api.stdout == "200", api.stderr
        node_port = svc["ports"][0]["nodePort"]
        status, body = wait_for(
            "the NodePort", lambda: http_get(f"http://127.0.0.1:{node_port}/api/info"), 10
        )
        assert status == 200 and json.loads(body)["pod_name"] in names
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
