"""Fixtures for the OCI image tests: real registries (one per test module and mode) and the test
images (built once per session). How they are configured and built: tests/registry_harness.py.

- `oci_images` (session): `TestImages`; `.busybox()`, `.layered()`, `.layered_named_user()`,
  `.multiarch()`, `.busybox_zstd()` each return an `OciImage` (a tag in an OCI layout), built on
  first use. Push one with `registry.push(image, "name:tag")` -> `PushedImage`.
- `registry` (module): anonymous plain-HTTP registry.
- `htpasswd_registry` (module): Basic auth; `.username`, `.password`, `.credentials` ("u:p").
- `token_registry` (module): token auth; `.token_server` is the `TokenServer` (its `.requests`,
  `.private_repos`, `.anonymous_pull`, `.expires_in`, `.header`, `.clear()`); `.credentials` is the
  token server's user, which `push()` uses.
- `tls_registry` (module): anonymous HTTPS with a test CA: `.ca_file`, `.cert_dir` (ca.crt).
- `nginx_image`, `python_image` (session): Debian bookworm with nginx-light, or with python3,
  from mmdebstrap, as an OCI layout of three layers (tests/debian_images.py); about 30 s each
  the first time in a run.

They are shared by the tests of a module: a test that needs a fresh count of blob GETs takes
`mark = registry.mark()` first and passes `since=mark`; one that changes the token server's
policy puts it back (or uses a repository name of its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from debian_images import NGINX_CONFIG, PYTHON_CONFIG, debian_rootfs, layout_from_rootfs
from registry_harness import OciImage, Registry, TestImages, TokenServer


@pytest.fixture(scope="session")
def oci_images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    return TestImages(tmp_path_factory.mktemp("oci-images"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("htpasswd-registry"), auth="htpasswd") as r:
        yield r


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(workdir / "token-server").start()
    try:
        with Registry(workdir / "registry", auth="token", token_server=server) as r:
            yield r
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("tls-registry"), tls=True) as r:
        yield r


@pytest.fixture(scope="session")
def nginx_image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    cache = tmp_path_factory.mktemp("debian")
    rootfs = debian_rootfs("nginx-light", cache)
    return layout_from_rootfs(rootfs, cache / "nginx-layout", "nginx", NGINX_CONFIG)


@pytest.fixture(scope="session")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    cache = tmp_path_factory.mktemp("debian-python")
    rootfs = debian_rootfs("python3", cache)
    return layout_from_rootfs(rootfs, cache / "python-layout", "python3", PYTHON_CONFIG)
