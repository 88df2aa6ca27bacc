"""The registry fixtures and test images work, seen with curl and skopeo only (not podkit)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from registry_harness import (
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    LAYER1,
    LAYERED_ABSENT,
    LAYERED_CONFIG,
    LAYERED_EXPECTED,
    LAYERED_HARDLINKS,
    LAYERED_NAMED_USER,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Registry,
    TestImages,
    TokenServer,
    host_arch,
)


def curl(*args: str) -> tuple[int, str, str]:
    """(HTTP status, body, response headers) of a curl run; status 0 if no answer came."""
    options = ["--silent", "--noproxy", "*", "--max-time", "10", "--dump-header", "/dev/stderr"]
    proc = subprocess.run(
        ["curl", *options, "--write-out", "\n%{http_code}", *args], capture_output=True, text=True
    )
    body, _, status = proc.stdout.rpartition("\n")
    return int(status or 0), body, proc.stderr


# -- anonymous HTTP -------------------------------------------------------------------------------


def test_registry_runs_on_loopback_with_its_own_config(
    registry: Registry, oci_images: TestImages
) -> None:
    config = registry.config_file.read_text()
    assert f"addr: 127.0.0.1:{registry.port}" in config
    assert "/etc/docker/registry" not in config and "htpasswd" not in config
    assert str(registry.storage) in config
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{registry.port}"], capture_output=True, text=True
    ).stdout
    assert f"127.0.0.1:{registry.port}" in listening and "*:" not in listening

    pushed = registry.push(oci_images.busybox(), "busybox:1")
    assert pushed.reference == f"127.0.0.1:{registry.port}/busybox:1"
    assert pushed.digest == oci_images.busybox().digest  # OCI manifest pushed byte for byte
    assert pushed.media_type == OCI_MANIFEST
    assert pushed.layer_media_types == [OCI_LAYER_GZIP]

    status, body, _ = curl(f"{registry.url}/v2/_catalog")
    assert status == 200 and "busybox" in json.loads(body)["repositories"]
    status, body, _ = curl(f"{registry.url}/v2/busybox/tags/list")
    assert json.loads(body)["tags"] == ["1"]

    inspect = json.loads(
        registry.skopeo.run("inspect", "--tls-verify=false", f"docker://{pushed.reference}").stdout
    )
    assert inspect["Digest"] == pushed.digest
    assert inspect["Architecture"] == host_arch() and inspect["Os"] == "linux"
    assert inspect["Layers"] == pushed.layer_digests
    config = json.loads(
        registry.skopeo.run(
            "inspect", "--config", "--tls-verify=false", f"docker://{pushed.reference}"
        ).stdout
    )
    assert config["config"]["Cmd"] == ["sh"]


def test_busybox_image_holds_busybox_its_applets_and_users(oci_images: TestImages) -> None:
    image = oci_images.busybox()
    members = {m.name: m for m in image.layer_members(0)}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode & 0o111
    for applet in ("sh", "ls", "cat", "echo", "id", "sleep", "env", "pwd"):
        assert members[f"bin/{applet}"].issym() and members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert (members["home/app"].uid, members["home/app"].gid) == (1000, 1000)
    tar = image.layer_tar(0)
    assert b"app:x:1000:1000:app:/home/app:/bin/sh\n" in tar and b"app:x:1000:\n" in tar


def test_blob_gets_counts_downloads_of_each_blob(
    registry: Registry, oci_images: TestImages, tmp_path: Path
) -> None:
    pushed = registry.push(oci_images.busybox(), "counted")
    layer = pushed.layer_digests[0]
    mark = registry.mark()
    assert registry.blob_gets(since=mark) == 0

    for _ in range(2):
        status, _, _ = curl("--output", "/dev/null", f"{registry.url}/v2/counted/blobs/{layer}")
        assert status == 200
    status, _, _ = curl("--head", f"{registry.url}/v2/counted/blobs/{layer}")  # HEAD: no count
    assert status == 200
    curl(f"{registry.url}/v2/counted/blobs/sha256:{'0' * 64}")  # 404: no count
    assert registry.blob_gets(layer, since=mark) == 2
    assert registry.blob_gets(layer, since=mark, successful_only=False) == 2
    assert registry.blob_gets(since=mark, successful_only=False) == 3

    mark = registry.mark()
    registry.skopeo.run(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{pushed.reference}",
        f"dir:{tmp_path / 'copy'}",
    )
    assert registry.blob_gets(layer, since=mark) == 1
    assert registry.blob_gets(pushed.config_digest, repository="counted", since=mark) == 1
    assert registry.blob_gets(since=mark) == 2


# -- htpasswd -------------------------------------------------------------------------------------


def test_htpasswd_registry_wants_basic_credentials(
    htpasswd_registry: Registry, oci_images: TestImages
) -> None:
    reg = htpasswd_registry
    assert (reg.workdir / "htpasswd").read_text().startswith(f"{reg.username}:$2b$04$")
    status, _, headers = curl(f"{reg.url}/v2/")
    assert status == 401 and 'www-authenticate: basic realm="podkit-test-registry"' in (
        headers.lower()
    )
    status, _, _ = curl("--user", f"{reg.username}:wrong", f"{reg.url}/v2/")
    assert status == 401

    pushed = reg.push(oci_images.busybox(), "busybox")  # with --dest-creds
    status, body, _ = curl(*reg.curl_args(), f"{reg.url}/v2/_catalog")
    assert status == 200 and json.loads(body)["repositories"] == ["busybox"]
    assert reg.inspect("busybox").digest == pushed.digest
    anonymous = reg.skopeo.run(
        "inspect",
        "--raw",
        *reg.tls_args(),
        "--no-creds",
        f"docker://{pushed.reference}",
        check=False,
    )
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower()


# -- token auth -----------------------------------------------------------------------------------


def test_token_registry_sends_clients_to_the_token_server(
    token_registry: Registry, oci_images: TestImages
) -> None:
    reg, ts = token_registry, token_registry.token_server
    assert ts is not None
    status, _, headers = curl(f"{reg.url}/v2/")
    assert status == 401
    assert f'bearer realm="{ts.realm}",service="{ts.service}"' in headers.lower()

    ts.clear()
    pushed = reg.push(oci_images.busybox(), "busybox")
    pushes = [r for r in ts.requests if "repository:busybox:pull,push" in r.scopes]
    assert pushes and all(r.authenticated and r.username == ts.username for r in pushes)
    assert pushes[0].granted == [
        {"type": "repository", "name": "busybox", "actions": ["pull", "push"]}
    ]

    ts.clear()  # a public repository: pulled anonymously
    assert reg.inspect("busybox", anonymous=True).digest == pushed.digest
    assert ts.requests and all(not r.credentials_given for r in ts.requests)
    assert ts.requests[0].scopes == ["repository:busybox:pull"]
    assert ts.requests[0].granted[0]["actions"] == ["pull"]

    # The same by hand: a token for the catalog (needs the user), then the catalog with it.
    query = f"service={ts.service}&scope=registry:catalog:*"
    status, body, _ = curl("--user", ts.credentials, f"{ts.realm}?{query}")
    answer = json.loads(body)
    assert status == 200 and answer["token"] == answer["access_token"]
    assert answer["expires_in"] == 300
    status, body, _ = curl(
        "--header", f"Authorization: Bearer {answer['token']}", f"{reg.url}/v2/_catalog"
    )
    assert status == 200 and "busybox" in json.loads(body)["repositories"]
    # Anonymous: no catalog access granted, so the registry says insufficient_scope.
    status, body, _ = curl(f"{ts.realm}?{query}")
    token = json.loads(body)["token"]
    status, _, headers = curl(
        "--header", f"Authorization: Bearer {token}", f"{reg.url}/v2/_catalog"
    )
    assert status == 401 and "insufficient_scope" in headers
    status, _, _ = curl("--user", f"{ts.username}:wrong", f"{ts.realm}?{query}")
    assert status == 401


def test_token_server_keeps_private_repositories_private(
    token_registry: Registry, oci_images: TestImages
) -> None:
    reg, ts = token_registry, token_registry.token_server
    assert ts is not None
    ts.private_repos.add("secret/busybox")
    try:
        pushed = reg.push(oci_images.busybox(), "secret/busybox")
        ts.clear()
        anonymous = reg.skopeo.run(
            "inspect",
            "--raw",
            *reg.tls_args(),
            "--no-creds",
            f"docker://{pushed.reference}",
            check=False,
        )
        assert anonymous.returncode != 0
        assert ts.requests and ts.requests[0].granted == []
        assert ts.requests[0].scopes == ["repository:secret/busybox:pull"]
        assert reg.inspect("secret/busybox").digest == pushed.digest  # with the user's creds
        assert ts.requests[-1].authenticated
    finally:
        ts.private_repos.discard("secret/busybox")


def test_registry_accepts_kid_tokens_and_refuses_foreign_ones(
    token_registry: Registry, oci_images: TestImages, tmp_path: Path
) -> None:
    reg, ts = token_registry, token_registry.token_server
    assert ts is not None
    reg.push(oci_images.busybox(), "busybox")
    access = [{"type": "repository", "name": "busybox", "actions": ["pull"]}]
    url = f"{reg.url}/v2/busybox/manifests/latest"
    accept = f"Accept: {OCI_MANIFEST}"
    ts.header = "kid"  # the libtrust key ID of a certificate in the rootcertbundle
    try:
        token = ts.issue(access)
        assert ts.key_id.count(":") == 11
        status, _, _ = curl("-H", f"Authorization: Bearer {token}", "-H", accept, url)
        assert status == 200
    finally:
        ts.header = "x5c"
    token = ts.issue(access)
    assert curl("-H", f"Authorization: Bearer {token}", "-H", accept, url)[0] == 200
    # Signed by a key the registry does not trust, or expired beyond the leeway: refused.
    foreign = TokenServer(tmp_path / "foreign").issue(access)
    assert curl("-H", f"Authorization: Bearer {foreign}", "-H", accept, url)[0] == 401
    expired = ts.issue(access, exp=0, nbf=0, iat=0)
    assert curl("-H", f"Authorization: Bearer {expired}", "-H", accept, url)[0] == 401


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_registry_is_verified_with_the_test_ca(
    tls_registry: Registry, oci_images: TestImages
) -> None:
    reg = tls_registry
    assert reg.ca_file is not None and reg.cert_dir is not None
    assert (reg.cert_dir / "ca.crt").read_bytes() == reg.ca_file.read_bytes()
    for host in ("127.0.0.1", "localhost"):
        status, body, _ = curl("--cacert", str(reg.ca_file), f"https://{host}:{reg.port}/v2/")
        assert (status, body) == (200, "{}")
    proc = subprocess.run(["curl", "--silent", "--noproxy", "*", f"{reg.url}/v2/"])
    assert proc.returncode == 60  # the peer's certificate is not trusted without our CA
    assert curl(f"http://127.0.0.1:{reg.port}/v2/")[0] == 400  # HTTP to the TLS port

    pushed = reg.push(oci_images.busybox(), "busybox")  # --dest-cert-dir, verifying
    inspect = json.loads(
        reg.skopeo.run(
            "inspect", *reg.tls_args(), "--no-creds", f"docker://{pushed.reference}"
        ).stdout
    )
    assert inspect["Digest"] == pushed.digest
    unverified = reg.skopeo.run(
        "inspect", "--raw", "--no-creds", f"docker://{pushed.reference}", check=False
    )
    assert unverified.returncode != 0 and "certificate" in unverified.stderr


# -- the images -----------------------------------------------------------------------------------


def test_layered_image_has_whiteouts_an_opaque_dir_and_its_config(
    registry: Registry, oci_images: TestImages, tmp_path: Path
) -> None:
    image, busybox = oci_images.layered(), oci_images.busybox()
    assert image.layer_digests[0] == busybox.layer_digests[0]
    assert len(image.layer_digests) == 4

    layer1 = {m.name: m for m in image.layer_members(1)}
    hello, link = layer1["app/hello.txt"], layer1["app/hello-hardlink.txt"]
    assert {hello.islnk(), link.islnk()} == {True, False}  # one entry is a link to the other
    assert (hello if hello.islnk() else link).linkname in (
        "app/hello.txt",
        "app/hello-hardlink.txt",
    )
    assert (
        layer1["app/hello-symlink"].issym() and layer1["app/hello-symlink"].linkname == "hello.txt"
    )
    assert layer1["app/passwd-link"].linkname == "/etc/passwd"
    assert layer1["usr/local/bin/setuid-tool"].mode == 0o4755
    assert layer1["usr/local/bin/setgid-tool"].mode == 0o2755
    assert (layer1["app/data/secret.txt"].uid, layer1["app/data/secret.txt"].mode) == (1000, 0o600)
    assert {e.path for e in LAYER1} <= set(layer1)

    layer2 = {m.name for m in image.layer_members(2)}
    assert {"app/.wh.to-delete.txt", "app/.wh.dir-to-delete", "app/added.txt"} <= layer2
    assert "app/empty" in layer2  # chmod 0600: the file again, with its new mode
    assert [m.name for m in image.layer_members(3)] == [
        "app/opaque",
        "app/opaque/.wh..wh..opq",
        "app/opaque/new.txt",
    ]

    assert {k: image.config()["config"][k] for k in LAYERED_CONFIG} == LAYERED_CONFIG
    named = oci_images.layered_named_user()
    assert named.config()["config"]["User"] == LAYERED_NAMED_USER
    assert named.layer_digests == image.layer_digests

    # Pushed and pulled back, then unpacked by umoci: the tree LAYERED_EXPECTED describes.
    pushed = registry.push(image, "layered")
    assert pushed.layer_digests == image.layer_digests
    registry.skopeo.run(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        f"docker://{pushed.reference}",
        f"oci:{tmp_path / 'pulled'}:x",
    )
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'pulled'}:x", str(tmp_path / "bundle")],
        check=True,
        capture_output=True,
    )
    root = tmp_path / "bundle" / "rootfs"
    for path, want in LAYERED_EXPECTED.items():
        st = os.lstat(root / path)
        if want.kind == "symlink":
            assert stat.S_ISLNK(st.st_mode) and os.readlink(root / path) == want.target, path
            continue
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            want.mode,
            want.uid,
            want.gid,
        ), path
        if want.kind == "dir":
            assert stat.S_ISDIR(st.st_mode), path
        elif want.kind == "file":
            assert (root / path).read_bytes() == want.data, path
    for a, b in LAYERED_HARDLINKS:
        assert os.stat(root / a).st_ino == os.stat(root / b).st_ino
    for path in LAYERED_ABSENT:
        assert not os.path.lexists(root / path), path
    assert sorted(os.listdir(root / "app/opaque")) == ["new.txt"]
    assert (root / "bin/busybox").is_file()


def test_multiarch_index_has_two_platforms(registry: Registry, oci_images: TestImages) -> None:
    pushed = registry.push(oci_images.multiarch(), "multiarch")
    raw = json.loads(registry.inspect_raw("multiarch"))
    assert raw["mediaType"] == OCI_INDEX == pushed.media_type
    assert len(raw["manifests"]) == 2
    assert set(pushed.platforms) == {"linux/amd64", "linux/arm64"}
    assert pushed.platforms[f"linux/{host_arch()}"] == oci_images.busybox().digest
    assert pushed.digest == oci_images.multiarch().digest
    for plat, digest in pushed.platforms.items():
        child = registry.inspect(f"multiarch@{digest}")
        config = json.loads(
            registry.skopeo.run(
                "inspect",
                "--config",
                "--raw",
                "--tls-verify=false",
                f"docker://{registry.ref('multiarch@' + digest)}",
            ).stdout
        )
        assert f"{config['os']}/{config['architecture']}" == plat
        assert child.media_type == OCI_MANIFEST

    docker = registry.push(oci_images.multiarch(), "multiarch:docker", format="v2s2")
    assert docker.media_type == DOCKER_MANIFEST_LIST and len(docker.platforms) == 2


def test_zstd_variant_keeps_zstd_layers_beside_the_gzip_ones(
    registry: Registry, oci_images: TestImages
) -> None:
    registry.push(oci_images.busybox(), "busybox")  # the gzip layer is already in the registry
    pushed = registry.push(oci_images.busybox_zstd(), "busybox:zstd")
    assert pushed.layer_media_types == [OCI_LAYER_ZSTD]
    assert pushed.config_digest == oci_images.busybox().manifest()["config"]["digest"]
    assert pushed.layer_digests != oci_images.busybox().layer_digests
    names = {m.name for m in oci_images.busybox_zstd().layer_members(0)}
    assert "bin/busybox" in names
    status, _, _ = curl("--head", f"{registry.url}/v2/busybox/blobs/{pushed.layer_digests[0]}")
    assert status == 200


def test_push_can_convert_to_docker_media_types(registry: Registry, oci_images: TestImages) -> None:
    pushed = registry.push(oci_images.busybox(), "docker-busybox", format="v2s2")
    assert pushed.media_type == DOCKER_MANIFEST
    assert pushed.layer_media_types == [DOCKER_LAYER_GZIP]
    assert pushed.layer_digests == oci_images.busybox().layer_digests


@pytest.mark.parametrize("auth", ["none", "htpasswd"])
def test_a_stopped_registry_leaves_nothing_listening(auth: str, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", auth=auth, tls=auth == "none").start()  # type: ignore[arg-type]
    port = reg.port
    assert curl("--insecure", f"{reg.url}/v2/")[0] in (200, 401)
    reg.stop()
    assert curl("--insecure", f"https://127.0.0.1:{port}/v2/")[0] == 0
    assert reg.proc is None
