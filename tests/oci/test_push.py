"""Pushing images podkit wrote (oci/push.py, with podkit's own registry client) to a real
registry: a blob the repository has is not sent again, a blob of another repository is
mounted instead of uploaded, skopeo reads back the same manifest, podkit runs the image, and
a registry with token auth grants the push to the user's credentials."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from test_layout import EPOCH, tree

from podkit.oci.hosts import Hosts, load
from podkit.oci.layout import Layout, layer_from_dir
from podkit.oci.manifest import this_platform
from podkit.oci.push import Pushed, Pusher
from podkit.oci.reference import parse
from podkit.oci.registry import RegistryClient, Unauthorized
from podkit_harness import write_manifest
from registry_harness import Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="registry images run as root here")


def two_images(tmp_path: Path) -> Layout:
    """Images `one` and `two`: a shared base layer, and a small layer each."""
    layout = Layout(tmp_path / "layout")
    base = layer_from_dir(tree(tmp_path / "base"), EPOCH)
    for name in ("one", "two"):
        own = tmp_path / f"own-{name}" / "etc"
        own.mkdir(parents=True)
        (own / "which").write_text(f"image {name}\n")
        config = {"architecture": this_platform().architecture, "os": "linux",
                  "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat /etc/which"],
                             "Env": ["PATH=/bin"]}}  # fmt: skip
        layout.add_image(name, [base, layer_from_dir(own.parent, EPOCH)], config)
    layout.write_index()
    return layout


def push(layout: Layout, pushes: list[tuple[str, str]], hosts: Hosts | None = None) -> list[Pushed]:
    async def run() -> list[Pushed]:
        client = RegistryClient(hosts or Hosts())
        try:
            pusher = Pusher(client, layout.path)
            return [await pusher.push(tag, parse(target)) for tag, target in pushes]
        finally:
            await client.close()

    return asyncio.run(run())


def test_shared_blobs_are_mounted_and_known_ones_not_sent(
    tmp_path: Path, registry: Registry, podkit: Any
) -> None:
    layout = two_images(tmp_path)
    one, two, again = push(layout, [
        ("one", registry.ref("built/one:1")),
        ("two", registry.ref("built/two:1")),
        ("one", registry.ref("built/one:1")),
    ])  # fmt: skip
    assert list(one.blobs.values()) == ["uploaded"] * 3  # config, base, its own layer
    config, base, own = two.blobs
    assert (two.blobs[base], two.blobs[own], two.blobs[config]) == (
        "mounted", "uploaded", "uploaded",
    )  # fmt: skip
    assert set(again.blobs.values()) == {"exists"}
    served = registry.inspect("built/two:1")  # skopeo, another client, reads it back
    assert served.digest == two.digest
    assert [layer["digest"] for layer in served.manifest["layers"]] == [base, own]
    m = write_manifest(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: pushed}}
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: {served.reference}}}]
        """,
    )
    run = podkit("run", m)
    assert run.wait(60) == 0, run.text()
    assert "[c] image two" in run.out


def test_a_token_registry_grants_the_push_to_the_users_credentials(
    tmp_path: Path, token_registry: Registry
) -> None:
    layout = two_images(tmp_path)
    server = token_registry.token_server
    assert server is not None
    target = token_registry.ref("team/one:1")
    with pytest.raises(Unauthorized, match="refused access to blob upload .* \\(401\\)") as refused:
        push(layout, [("one", target)])
    user, password = (token_registry.credentials or ":").split(":", 1)
    assert password not in str(refused.value)
    config = tmp_path / "registries.yaml"
    config.write_text(
        f"configs:\n  {token_registry.host}:\n"
        f"    auth: {{username: {user}, password: {password}}}\n"
    )
    server.clear()
    (pushed,) = push(layout, [("one", target)], Hosts(load(config)))
    assert token_registry.inspect("team/one:1").digest == pushed.digest
    # The token that pushed was the user's: granted push on team/one for their password. (The
    # scope podkit asks for is the registry's challenge's, whose actions distribution lists in Go
    # map order: "pull,push" or, about one time in eight, "push,pull".)
    granted = [
        (r.username, r.authenticated, g["actions"])
        for r in server.requests
        for g in r.granted
        if g["type"] == "repository" and g["name"] == "team/one"
    ]
    assert any(name == user and ok and "push" in actions for name, ok, actions in granted), granted
