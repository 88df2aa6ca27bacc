"""Real application images: Debian's nginx-light and python3, built by mmdebstrap and pushed to a
registry the test starts. A pod with nothing but `image:` and a containerPort serves nginx's
welcome page to curl, and stops on the image's StopSignal (SIGQUIT: nginx's graceful stop).
podman runs the same image and serves the same page, so the image itself is known to be right.
The python3 image runs a script from a ConfigMap with its own interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podkit_harness import free_port, wait_for, write_manifest
from podman_peer import Podman
from registry_harness import OciImage, PushedImage, Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="registry images run as root here")
WELCOME = "<title>Welcome to nginx!</title>"


@pytest.fixture(scope="module")
def nginx(registry: Registry, nginx_image: OciImage) -> PushedImage:
    return registry.push(nginx_image, "debian/nginx:bookworm")


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    peer = Podman(tmp_path / "podman")
    yield peer
    peer.close()


def curl(url: str) -> str:
    proc = subprocess.run(["curl", "-s", "--max-time", "2", url], capture_output=True, text=True)
    return proc.stdout


def test_a_pod_runs_debians_nginx_with_nothing_but_image_and_a_port(
    tmp_path: Path, podkit: Any, nginx: PushedImage
) -> None:
    port = free_port()
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: web}}
        spec:
          containers:
          - name: nginx
            image: {nginx.reference}
            ports: [{{containerPort: 80}}]
        """,
    )
    run = podkit("run", m, "-p", f"{port}:80")
    page = wait_for("nginx's welcome page", lambda: curl(f"http://127.0.0.1:{port}/"), 60)
    assert WELCOME in page
    began = time.monotonic()
    assert run.stop(signal.SIGTERM, timeout=40) == 0
    assert time.monotonic() - began < 10  # SIGQUIT: nginx quits at once, no grace-period kill
    status = run.status()["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["imageID"].endswith(nginx.digest)


def test_podman_serves_the_same_image(tmp_path: Path, podman: Podman, nginx: PushedImage) -> None:
    port = free_port()
    # The host's network (no iptables rules left behind), so nginx listens on a free port.
    listen = f"sed -i 's/listen 80 /listen {port} /; s/listen \\[::\\]:80 /listen [::]:{port} /'"
    started = podman.run(
        "run", "-d", "--tls-verify=false", "--network", "host", nginx.reference,
        "sh", "-c", f"{listen} /etc/nginx/sites-enabled/default; exec nginx -g 'daemon off;'",
    )  # fmt: skip
    cid = started.stdout.strip()
    try:
        page = wait_for("podman's nginx", lambda: curl(f"http://127.0.0.1:{port}/"), 30)
        assert WELCOME in page
    finally:
        podman.run("rm", "--force", "--time", "2", cid, check=False)


def test_a_python3_image_serves_a_script_from_a_config_map(
    tmp_path: Path, podkit: Any, registry: Registry, python_image: OciImage
) -> None:
    """The image's own interpreter (bookworm's 3.11, with its standard library) runs a
    script mounted from a ConfigMap, as the official python images are used."""
    image = registry.push(python_image, "debian/python3:bookworm")
    port = free_port()
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: app}}
        data:
          app.py: |
            import http.server, platform, sys
            class Hello(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = f"python {{platform.python_version()}} at {{sys.executable}}\\n"
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body.encode())
            http.server.HTTPServer(("0.0.0.0", 8000), Hello).serve_forever()
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: py}}
        spec:
          terminationGracePeriodSeconds: 2
          volumes: [{{name: app, configMap: {{name: app}}}}]
          containers:
          - name: app
            image: {image.reference}
            command: [python3, /app/app.py]
            ports: [{{containerPort: 8000}}]
            volumeMounts: [{{name: app, mountPath: /app}}]
        """,
    )
    run = podkit("run", m, "-p", f"{port}:8000")
    body = wait_for("the script's answer", lambda: curl(f"http://127.0.0.1:{port}/"), 60)
    assert body.startswith("python 3.11.") and body.strip().endswith("at /usr/bin/python3")
    assert run.stop() == 0
