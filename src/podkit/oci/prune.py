"""What the store can let go: blobs and layers no image name refers to (`podkit rmi`,
`podkit image prune`). Held under the store's `gc` lock taken exclusively, while pulls hold it
shared: nothing a pull has just written and not yet named is ever taken away."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from podkit.common.userns import remove_tree
from podkit.oci import manifest as mf
from podkit.oci.lower_dirs import remove_dangling
from podkit.oci.store import Store, StoreError


@dataclass(frozen=True, slots=True)
class Freed:
    blobs: int
    layers: int
    nbytes: int


def referenced(store: Store) -> tuple[set[str], set[str]]:
    """(blob digests, layer ChainIDs) the named images use."""
    blobs: set[str] = set()
    chains: set[str] = set()
    for image in store.images():
        blobs |= {image.digest, image.config}
        try:
            manifest = mf.parse_manifest(store.read_blob(image.digest))
            config = mf.parse_config(store.read_blob(image.config))
        except (OSError, StoreError, mf.ManifestError):
            continue  # unreadable: its layers are not kept for it
        blobs |= {d.digest for d in manifest.layers}
        chains |= set(mf.chain_ids(config.diff_ids))
    return blobs, chains


def prune(store: Store) -> Freed:
    """Delete every blob and layer no image uses, and downloads left unfinished."""
    with store.lock("gc", shared=False):
        blobs, chains = referenced(store)
        keep_blobs = {d.removeprefix("sha256:") for d in blobs}
        keep_layers = {c.removeprefix("sha256:") for c in chains}
        nblobs = nlayers = nbytes = 0
        for path in (store.root / "blobs" / "sha256").iterdir():
            if path.name not in keep_blobs:
                nbytes += _size(path)
                path.unlink(missing_ok=True)
                nblobs += 1
        for path in (store.root / "ingest").iterdir():
            nbytes += _size(path)
            path.unlink(missing_ok=True)
        for path in (store.root / "layers").iterdir():
            if path.name not in keep_layers and not path.name.startswith(".tmp-"):
                nbytes += _size(path)
                remove_tree(path)  # rootless, with what the image's own ids own
                nlayers += 1
        store.remove_stale_tmp()
        remove_dangling(store.root)
    return Freed(nblobs, nlayers, nbytes)


def _size(path: Path) -> int:
    """Bytes a file or a tree takes (hardlinked files once)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
