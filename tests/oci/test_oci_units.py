"""The pure parts of image pulling: references, manifests and indexes, auth challenges,
Retry-After, registries files and pull secrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

from podkit.common.retry_after import parse_retry_after as retry_after
from podkit.oci import manifest as mf
from podkit.oci.auth_challenge import parse_challenge, token_from
from podkit.oci.hosts import (
    Hosts,
    RegistryConfigError,
    docker_config_credentials,
    load,
    pull_secret_credentials,
)
from podkit.oci.reference import InvalidReference, is_loopback, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "normalised", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/nginx", "docker.io/library/nginx:latest", "nginx:latest"),
        ("index.docker.io/team/app", "docker.io/team/app:latest", "team/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
        (f"quay.io/x/y@{DIGEST}", f"quay.io/x/y@{DIGEST}", f"quay.io/x/y@{DIGEST}"),
        (f"nginx:1.27@{DIGEST}", f"docker.io/library/nginx:1.27@{DIGEST}", f"nginx:1.27@{DIGEST}"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
    ],
)
def test_references_normalise_as_docker_and_the_kubelet(
    text: str, normalised: str, familiar: str
) -> None:
    ref = parse(text)
    assert str(ref) == normalised
    assert ref.familiar() == familiar
    assert ref.target == (ref.digest or ref.tag)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "invalid reference format"),
        ("busybox:", "invalid tag"),
        ("team/App", "must be lowercase"),
        ("busybox@sha256:abc", "invalid digest"),
        ("busybox@sha256:" + "A" * 64, "invalid sha256 digest"),
        ("a" * 64, "64-character hexadecimal"),
        ("-bad/x", "invalid"),
        ("registry.io/x/" + "y" * 260, "longer than 255"),
        (" busybox", "invalid reference format"),
    ],
)
def test_malformed_references_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse(text)


def test_loopback_registries() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example:5000") and not is_loopback("10.0.0.1:5000")


def index(*platforms: tuple[str, str, str]) -> bytes:
    return orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mf.OCI_MANIFEST,
                    "digest": "sha256:" + f"{n:02x}" * 32,
                    "size": 100 + n,
                    "platform": {"os": os_, "architecture": arch}
                    | ({"variant": var} if var else {}),
                }
                for n, (os_, arch, var) in enumerate(platforms)
            ],
        }
    )


def test_an_index_resolves_to_this_platform_or_says_what_it_has() -> None:
    data = index(("linux", "arm", "v7"), ("linux", "arm64", "v8"), ("linux", "amd64", ""))
    assert mf.choose(data, mf.Platform("linux", "amd64")).size == 102
    assert mf.choose(data, mf.Platform("linux", "arm64", "v8")).size == 101
    assert mf.choose(data, mf.Platform("linux", "arm", "v7")).size == 100
    with pytest.raises(mf.ManifestError, match="no image for linux/s390x.*linux/arm/v7, "):
        mf.choose(data, mf.Platform("linux", "s390x"))
    assert mf.media_type(data, None) == mf.OCI_INDEX


def test_schema1_and_unknown_types_are_refused_with_a_reason() -> None:
    old = b'{"schemaVersion": 1, "name": "x", "fsLayers": []}'
    with pytest.raises(mf.ManifestError, match="schema 1, deprecated since 2017"):
        mf.check_supported(mf.media_type(old, "application/json"))
    with pytest.raises(mf.ManifestError, match="unsupported manifest media type"):
        mf.check_supported("application/vnd.example+json")
    # A registry's Content-Type says what the document is when the document does not.
    plain = b'{"schemaVersion": 2, "config": {}, "layers": []}'
    assert mf.media_type(plain, mf.DOCKER_MANIFEST + "; charset=utf-8") == mf.DOCKER_MANIFEST
    assert mf.media_type(plain, "text/plain") == mf.OCI_MANIFEST


def test_manifest_and_config_are_read_and_chain_ids_computed() -> None:
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": DIGEST,
        "size": 5,
    }
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 9}
    got = mf.parse_manifest(orjson.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}))
    assert got.layers[0].media_type.endswith("+zstd") and got.config.size == 9
    bad = {**layer, "mediaType": "application/vnd.example.tar"}
    with pytest.raises(mf.ManifestError, match=r"layers\[0\]: unsupported media type"):
        mf.parse_manifest(orjson.dumps({"config": config, "layers": [bad]}))
    diff_a, diff_b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    cfg = mf.parse_config(
        orjson.dumps(
            {
                "os": "linux",
                "architecture": "amd64",
                "rootfs": {"type": "layers", "diff_ids": [diff_a, diff_b]},
                "config": {
                    "Entrypoint": ["/bin/app"],
                    "Cmd": ["--serve"],
                    "Env": ["PATH=/bin"],
                    "WorkingDir": "/srv",
                    "User": "1000:1000",
                    "StopSignal": "SIGQUIT",
                    "ExposedPorts": {"8080/tcp": {}},
                },
            }
        )
    )
    assert (cfg.entrypoint, cfg.cmd, cfg.env) == (("/bin/app",), ("--serve",), ("PATH=/bin",))
    assert (cfg.working_dir, cfg.user, cfg.stop_signal) == ("/srv", "1000:1000", "SIGQUIT")
    assert cfg.exposed_ports == ("8080/tcp",)
    # The OCI image spec's ChainID: the first is the DiffID, then sha256("<parent> <diff>").
    assert mf.chain_ids(cfg.diff_ids) == [diff_a, mf.sha256(f"{diff_a} {diff_b}".encode())]


def test_challenges_tokens_and_retry_after() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull"'
    )
    assert c is not None and c.scheme == "bearer"
    assert c.token_url("ignored") == (
        "https://auth.example/token?service=registry.example&scope=repository%3Ateam%2Fapp%3Apull"
    )
    bare = parse_challenge('Bearer realm="https://auth.example/token?x=1"')
    assert bare is not None
    assert bare.token_url("repository:a:pull") == (
        "https://auth.example/token?x=1&scope=repository%3Aa%3Apull"
    )
    assert parse_challenge('Basic realm="Registry Realm"') is not None
    assert parse_challenge("Negotiate abc") is None
    assert token_from(b'{"access_token": "t1", "expires_in": 300}') == ("t1", 300.0)
    assert token_from(b'{"token": "t2"}') == ("t2", 60.0)
    with pytest.raises(ValueError, match="no token"):
        token_from(b"{}")
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_epoch=1445412470.0) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_registries_file_in_k3s_format(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text(
        """
mirrors:
  docker.io:
    endpoint: ["https://mirror.example:5000", "http://10.0.0.5:5000/"]
configs:
  mirror.example:5000:
    auth: {username: shipper, password: s3cret}
    tls: {insecure_skip_verify: true}
  127.0.0.1:5000:
    auth: {auth: """
        + base64.b64encode(b"u:p").decode()
        + "}\n"
    )
    hosts = Hosts(load(path), docker_config=tmp_path / "none.json")
    ends = hosts.endpoints("docker.io")
    assert [e.base for e in ends] == [
        "https://mirror.example:5000/v2",
        "http://10.0.0.5:5000/v2",
        "https://registry-1.docker.io/v2",
    ]
    assert hosts.credentials("mirror.example:5000", "docker.io") == ("shipper", "s3cret")
    assert hosts.credentials("127.0.0.1:5000", "127.0.0.1:5000") == ("u", "p")
    assert hosts.credentials("registry-1.docker.io", "docker.io") is None
    # A loopback registry: HTTPS first, then plain HTTP, as Docker does.
    [local] = hosts.endpoints("127.0.0.1:5000")
    assert (local.base, local.fallback) == ("https://127.0.0.1:5000/v2", "http://127.0.0.1:5000/v2")
    path.write_text("mirrors:\n  docker.io:\n    endpoints: [x]\n")
    with pytest.raises(RegistryConfigError, match=r"registries.yaml: mirrors.docker.io.endpoints"):
        load(path)
    with pytest.raises(RegistryConfigError, match="no such file"):
        load(tmp_path / "missing.yaml")


def test_pull_secrets_and_docker_config(tmp_path: Path) -> None:
    def secret(kind: str, key: str, doc: object) -> tuple[str, dict[str, bytes]]:
        return kind, {key: json.dumps(doc).encode()}

    auth = base64.b64encode(b"robot:tok3n").decode()
    found = pull_secret_credentials(
        [
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                {"auths": {"https://index.docker.io/v1/": {"auth": auth}}},
            ),
            secret(
                "kubernetes.io/dockercfg",
                ".dockercfg",
                {"reg.example:5000": {"username": "u", "password": "p"}},
            ),
        ]
    )
    assert found == {"docker.io": ("robot", "tok3n"), "reg.example:5000": ("u", "p")}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth}}}))
    assert docker_config_credentials(config, "reg.example:5000") == ("robot", "tok3n")
    assert docker_config_credentials(config, "other.example") is None
    hosts = Hosts(secrets=found, docker_config=config)
    assert hosts.credentials("registry-1.docker.io", "docker.io") == ("robot", "tok3n")
