"""Images from an OCI image layout (oci/layout.py) to a registry, with podkit's own client.

Images pushed together share blobs (the built-in images share their base and podkit
layers): a blob a repository already holds is not sent again, and a blob pushed to one
repository is mounted into the next (the distribution API's cross-repository mount) instead
of being uploaded once per image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from podkit.oci.layout import REF_NAME
from podkit.oci.reference import Reference
from podkit.oci.registry import RegistryClient


class PushError(Exception):
    """An image that cannot be pushed; the message says which and why."""


@dataclass
class Pushed:
    digest: str  # the manifest's, as the registry named it
    blobs: dict[str, str] = field(default_factory=dict)  # digest -> exists|mounted|uploaded


class Pusher:
    """Pushes images of one layout; remembers where each blob went, to mount it next time."""

    def __init__(self, client: RegistryClient, layout: Path) -> None:
        self.client = client
        self.layout = layout
        self.placed: dict[tuple[str, str], str] = {}  # (registry, digest) -> repository

    def _blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    def _manifest(self, tag: str) -> tuple[bytes, str]:
        index = json.loads((self.layout / "index.json").read_text())
        for m in index.get("manifests", []):
            if (m.get("annotations") or {}).get(REF_NAME) == tag:
                return self._blob(m["digest"]), m["mediaType"]
        raise PushError(f"{self.layout}: no image tagged {tag!r}")

    async def push(self, tag: str, target: Reference) -> Pushed:
        """The layout's image `tag` to `target` (its tag, or `tag`)."""
        body, media_type = self._manifest(tag)
        manifest = json.loads(body)
        blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        done = Pushed("")
        for digest in blobs:
            source = self.placed.get((target.domain, digest))
            mount = source if source != target.path else None
            done.blobs[digest] = await self.client.push_blob(
                target, self._blob(digest), digest, mount
            )
            self.placed[(target.domain, digest)] = target.path
        done.digest = await self.client.push_manifest(target, target.tag or tag, body, media_type)
        return done
