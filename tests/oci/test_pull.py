"""`podkit pull`, `podkit images`, `podkit rmi`, `podkit image prune` against Debian's
docker-registry: plain, Basic auth, token auth and TLS; indexes, zstd, faults, concurrency."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from podkit_harness import REPO, free_port, run_podkit
from registry_harness import PushedImage, Registry, TestImages


def podkit(
    state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_podkit(*args, state_dir=state, timeout=120, env=env)


def start_podkit(state: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "podkit.cli.main", *args, "--state-dir", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def registries_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    return path


def store_blobs(state: Path) -> set[str]:
    return {"sha256:" + p.name for p in (state / "oci" / "blobs" / "sha256").iterdir()}


def check_store(state: Path, finished: bool = True) -> None:
    """Every blob in the store matches its digest; once a pull finished, no layer is left half
    unpacked (one a killed pull left is only ever in a .tmp- directory)."""
    if not (state / "oci" / "blobs").exists():
        return  # killed before the store was made
    for path in (state / "oci" / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    if finished:
        assert not list((state / "oci" / "layers").glob(".tmp-*"))


@pytest.fixture(scope="module")
def busybox(registry: Registry, oci_images: TestImages) -> PushedImage:
    return registry.push(oci_images.busybox(), "test/busybox:1.36")


def test_pull_into_an_empty_store_then_list_it(
    tmp_path: Path, registry: Registry, busybox: PushedImage
) -> None:
    state = tmp_path / "state"
    mark = registry.mark()
    got = podkit(state, "pull", busybox.reference)
    assert got.returncode == 0, got.stderr
    image_id = busybox.config_digest
    assert image_id is not None
    assert got.stdout.splitlines()[-1] == image_id.removeprefix("sha256:")
    assert busybox.digest in got.stdout
    assert registry.blob_gets(since=mark) == 2  # the config and the one layer
    check_store(state)
    assert {busybox.digest, image_id, *busybox.layer_digests} <= store_blobs(state)
    [layer] = list((state / "oci" / "layers").iterdir())
    busybox_bin = layer / "bin" / "busybox"
    assert busybox_bin.stat().st_mode & 0o111 and (layer / "bin" / "sh").is_symlink()

    listed = podkit(state, "images")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:3] == [f"{registry.host}/test/busybox", "1.36", image_id[7:19]]
    [doc] = json.loads(podkit(state, "images", "-o", "json").stdout)
    assert (
        doc["names"] == [f"{registry.host}/test/busybox:1.36"] and doc["digest"] == busybox.digest
    )

    # Again: nothing is downloaded.
    mark = registry.mark()
    again = podkit(state, "pull", busybox.reference)
    assert again.returncode == 0 and "already present" in again.stdout
    assert registry.blob_gets(since=mark) == 0


def test_by_digest_and_an_index_resolved_to_this_platform(
    tmp_path: Path, registry: Registry, oci_images: TestImages
) -> None:
    multi = registry.push(oci_images.multiarch(), "test/multi:v1")
    state = tmp_path / "state"
    got = podkit(state, "pull", multi.reference)
    assert got.returncode == 0, got.stderr
    amd64 = multi.platforms["linux/amd64"]
    assert amd64 in got.stdout
    arm64 = multi.platforms["linux/arm64"]
    assert amd64 in store_blobs(state) and arm64 not in store_blobs(state)
    by_digest = podkit(state, "pull", f"{registry.host}/test/multi@{amd64}")
    assert by_digest.returncode == 0, by_digest.stderr


def test_zstd_and_docker_schema2_images(
    tmp_path: Path, registry: Registry, oci_images: TestImages
) -> None:
    zstd = registry.push(oci_images.busybox_zstd(), "test/zstd:v1")
    assert zstd.layer_media_types == ["application/vnd.oci.image.layer.v1.tar+zstd"]
    docker = registry.push(oci_images.busybox(), "test/docker:v1", format="v2s2")
    state = tmp_path / "state"
    got = podkit(state, "pull", zstd.reference, docker.reference)
    assert got.returncode == 0, got.stderr
    # Same uncompressed content: one layer on disk, whatever its compression.
    assert len(list((state / "oci" / "layers").iterdir())) == 1
    check_store(state)


def test_basic_auth_credentials_from_the_registries_file(
    tmp_path: Path, htpasswd_registry: Registry, oci_images: TestImages
) -> None:
    image = htpasswd_registry.push(oci_images.busybox(), "private/app:v1")
    state = tmp_path / "state"
    denied = podkit(state, "pull", image.reference)
    assert denied.returncode == 1
    assert "asks for credentials (401)" in denied.stderr
    password = htpasswd_registry.password
    config = registries_file(
        tmp_path,
        f"configs:\n  {htpasswd_registry.host}:\n    auth:\n"
        f"      username: {htpasswd_registry.username}\n      password: {password}\n",
    )
    got = podkit(state, "pull", image.reference, "--registry-config", str(config))
    assert got.returncode == 0, got.stderr
    wrong = registries_file(
        tmp_path,
        f"configs:\n  {htpasswd_registry.host}:\n    auth: {{username: x, password: wrong-pw}}\n",
    )
    refused = podkit(tmp_path / "s2", "pull", image.reference, "--registry-config", str(wrong))
    assert refused.returncode == 1
    assert "wrong-pw" not in refused.stderr + refused.stdout


def test_token_auth_anonymous_and_with_credentials(
    tmp_path: Path, token_registry: Registry, oci_images: TestImages
) -> None:
    server = token_registry.token_server
    assert server is not None
    public = token_registry.push(oci_images.busybox(), "public/app:v1")
    private = token_registry.push(oci_images.busybox(), "secret/app:v1")
    server.private_repos = {"secret/app"}
    server.clear()
    state = tmp_path / "state"
    got = podkit(state, "pull", public.reference)
    assert got.returncode == 0, got.stderr
    assert any(r.scopes == ["repository:public/app:pull"] and not r.credentials_given
               for r in server.requests)  # fmt: skip
    denied = podkit(state, "pull", private.reference)
    assert denied.returncode == 1
    user, password = (token_registry.credentials or ":").split(":", 1)
    config = registries_file(
        tmp_path,
        f"configs:\n  {token_registry.host}:\n"
        f"    auth: {{username: {user}, password: {password}}}\n",
    )
    got = podkit(state, "pull", private.reference, "--registry-config", str(config))
    assert got.returncode == 0, got.stderr
    assert password not in got.stderr + got.stdout


def test_tls_registry_with_its_ca_in_the_registries_file(
    tmp_path: Path, tls_registry: Registry, oci_images: TestImages
) -> None:
    image = tls_registry.push(oci_images.busybox(), "tls/app:v1")
    state = tmp_path / "state"
    untrusted = podkit(state, "pull", image.reference)
    assert untrusted.returncode == 1 and "TLS certificate not trusted" in untrusted.stderr
    assert f"configs.{tls_registry.host}.tls.ca_file" in untrusted.stderr
    config = registries_file(
        tmp_path,
        f"configs:\n  {tls_registry.host}:\n    tls: {{ca_file: {tls_registry.ca_file}}}\n",
    )
    got = podkit(state, "pull", image.reference, "--registry-config", str(config))
    assert got.returncode == 0, got.stderr


def test_bad_input_and_an_unreachable_registry(tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad = podkit(state, "pull", "Team/App:!")
    assert bad.returncode == 2 and "invalid" in bad.stderr
    down = podkit(state, "pull", f"127.0.0.1:{free_port()}/nothing/here:v1")
    assert down.returncode == 1 and "127.0.0.1" in down.stderr
    missing = tmp_path / "nope.yaml"
    no_file = podkit(state, "pull", "busybox", "--registry-config", str(missing))
    assert no_file.returncode == 2 and "nope.yaml: no such file" in no_file.stderr


def test_a_missing_tag_says_not_found(
    tmp_path: Path, registry: Registry, busybox: PushedImage
) -> None:
    got = podkit(tmp_path / "state", "pull", f"{registry.host}/test/busybox:9.99")
    assert got.returncode == 1 and "not found" in got.stderr and "MANIFEST_UNKNOWN" in got.stderr


# -- faults: a proxy in front of the real registry -------------------------------------------


class Faulty:
    """A reverse proxy to a registry that injects faults: 429 with Retry-After for the first
    blob GETs, a redirect of blob GETs to another host name, or a blob cut short. It records
    each request's path and whether it carried an Authorization header."""

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self.throttle = 0  # blob GETs still to refuse with 429
        self.redirect_to: str | None = None  # "localhost:PORT": blob GETs go there
        self.cut_blobs: set[str] = set()  # blob digests served only half, once each
        self.seen: list[tuple[str, str, bool]] = []  # (host header, path, had Authorization)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                proxy.handle(self)

            def do_HEAD(self) -> None:  # noqa: N802
                proxy.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return None  # a client hanging up on a cut blob is the point, not news

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        self.seen.append((h.headers.get("Host", ""), h.path, "Authorization" in h.headers))
        blob = "/blobs/sha256:" in h.path
        if blob and self.throttle > 0:
            self.throttle -= 1
            self.reply(h, 429, {"Retry-After": "1"}, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
            return
        if blob and self.redirect_to:
            if h.headers.get("Host", "").startswith("localhost"):  # "blob storage": no auth
                self.reply(h, 200, {}, self.stored_blob(h.path.rsplit("/", 1)[-1]))
            else:
                self.reply(h, 307, {"Location": f"http://{self.redirect_to}{h.path}"}, b"")
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host",)}
        req = urllib.request.Request(self.upstream.url + h.path, headers=headers, method=h.command)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, body, out = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, body, out = exc.code, exc.read(), dict(exc.headers)
        digest = h.path.rsplit("/", 1)[-1]
        if blob and digest in self.cut_blobs and status == 200:
            self.cut_blobs.discard(digest)
            out["Content-Length"] = str(len(body))
            h.send_response(status)
            for k, v in out.items():
                if k.lower() not in ("transfer-encoding", "connection"):
                    h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])  # then the connection drops
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        self.reply(h, status, out, body)

    def stored_blob(self, digest: str) -> bytes:
        """What blob storage would serve to a presigned URL: the registry's own file."""
        blobs = self.upstream.storage / "docker/registry/v2/blobs/sha256"
        return (blobs / digest[7:9] / digest[7:] / "data").read_bytes()

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        h.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty(registry: Registry) -> Iterator[Faulty]:
    proxy = Faulty(registry)
    yield proxy
    proxy.close()


def test_429_with_retry_after_is_waited_out(
    tmp_path: Path, faulty: Faulty, busybox: PushedImage
) -> None:
    faulty.throttle = 2
    started = time.monotonic()
    got = podkit(tmp_path / "state", "pull", f"{faulty.host}/test/busybox:1.36")
    assert got.returncode == 0, got.stderr
    assert faulty.throttle == 0 and time.monotonic() - started >= 1.0  # Retry-After: 1


def test_a_blob_cut_short_is_resumed_with_a_range(
    tmp_path: Path, faulty: Faulty, busybox: PushedImage
) -> None:
    [layer] = busybox.layer_digests
    faulty.cut_blobs = {layer}
    got = podkit(tmp_path / "state", "pull", f"{faulty.host}/test/busybox:1.36")
    assert got.returncode == 0, got.stderr
    check_store(tmp_path / "state")
    gets = [p for _, p, _ in faulty.seen if p.endswith(layer)]
    assert len(gets) == 2  # the cut one, then the rest of it


def test_redirects_to_another_host_carry_no_credentials(
    tmp_path: Path, token_registry: Registry, oci_images: TestImages
) -> None:
    image = token_registry.push(oci_images.busybox(), "redirect/app:v1")
    proxy = Faulty(token_registry)
    try:
        proxy.redirect_to = f"localhost:{proxy.port}"  # the same proxy, under another name
        got = podkit(tmp_path / "state", "pull", f"{proxy.host}/redirect/app:v1")
        assert got.returncode == 0, got.stderr
        blob_requests = [(host, auth) for host, p, auth in proxy.seen if "/blobs/" in p]
        assert any(host.startswith("127.0.0.1") and auth for host, auth in blob_requests)
        redirected = [auth for host, auth in blob_requests if host.startswith("localhost")]
        assert redirected and not any(redirected)
    finally:
        proxy.close()
    assert image.digest


def test_a_corrupt_blob_is_refused_and_nothing_of_it_kept(
    tmp_path: Path, registry: Registry, oci_images: TestImages
) -> None:
    image = registry.push(oci_images.layered(), "test/corrupt:v1")
    victim = image.layer_digests[-1]
    data = registry.storage / "docker/registry/v2/blobs/sha256" / victim[7:9] / victim[7:] / "data"
    original = data.read_bytes()
    data.write_bytes(original[:-10] + b"x" * 10)
    try:
        state = tmp_path / "state"
        got = podkit(state, "pull", image.reference)
        assert got.returncode == 1 and "does not match its digest" in got.stderr
        assert victim not in store_blobs(state)
        assert not (state / "oci" / "ingest" / victim[7:]).exists()  # thrown away
        check_store(state)
    finally:
        data.write_bytes(original)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # gone since it was listed
        return 0


def test_kill_9_during_a_pull_then_pull_again(
    tmp_path: Path, registry: Registry, oci_images: TestImages
) -> None:
    image = registry.push(oci_images.layered(), "test/killed:v1")
    state = tmp_path / "state"
    oci = state / "oci"
    moments = [
        lambda: (oci / "images.db").exists(),  # the store just opened
        lambda: any(size(p) for p in (oci / "ingest").glob("*")),  # mid-download
        lambda: list((oci / "layers").glob(".tmp-*")),  # mid-unpack
        lambda: len(list((oci / "layers").iterdir())) >= 2,  # some layers done
    ]
    for moment in moments * 3:  # kill it at each of these moments, then finish the pull
        proc = start_podkit(state, "pull", image.reference)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if (oci / "ingest").is_dir() and moment():
                break
            time.sleep(0.001)  # the polling interval
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        check_store(state, finished=False)
    got = podkit(state, "pull", image.reference)
    assert got.returncode == 0, got.stderr
    check_store(state)


def test_two_pulls_at_once_download_each_blob_once(
    tmp_path: Path, registry: Registry, oci_images: TestImages
) -> None:
    image = registry.push(oci_images.layered(), "test/together:v1")
    state = tmp_path / "state"
    mark = registry.mark()
    procs = [start_podkit(state, "pull", image.reference) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for digest in image.layer_digests:
        assert registry.blob_gets(digest, since=mark) == 1
    check_store(state)


def test_rmi_and_prune_free_what_no_image_uses(
    tmp_path: Path, registry: Registry, oci_images: TestImages, busybox: PushedImage
) -> None:
    layered = registry.push(oci_images.layered(), "test/prunable:v1")
    state = tmp_path / "state"
    assert podkit(state, "pull", busybox.reference, layered.reference).returncode == 0
    layers_before = len(list((state / "oci" / "layers").iterdir()))
    removed = podkit(state, "rmi", layered.reference)
    assert removed.returncode == 0, removed.stderr
    assert f"Untagged: {layered.reference}" in removed.stdout
    # The busybox layer is shared with the other image, and stays.
    assert len(list((state / "oci" / "layers").iterdir())) == 1 < layers_before
    assert podkit(state, "images", "-o", "json").stdout.count('"names"') == 1
    missing = podkit(state, "rmi", layered.reference)
    assert missing.returncode == 1 and "no such image" in missing.stderr
    (state / "oci" / "ingest" / ("0" * 64)).write_bytes(b"partial")
    pruned = podkit(state, "image", "prune")
    assert pruned.returncode == 0 and pruned.stdout.startswith("Freed 7 B")
    check_store(state)
