"""Short names for unpacked layers, so an overlay of many fits its mount options (overlay2's l/).

The kernel takes mount options in one page (4096 bytes). Spelled out, a layer is
`<state>/oci/layers/<64 hex>`: some 100 bytes, 40 layers at most. As overlay2 does, each layer
gets a short symbolic link, `l/<20 hex>` (a prefix of its ChainID: 2^80 names, no clash in
practice), and the overlay is mounted from the store's directory with relative lower dirs:
23 bytes a layer, 170 layers in a page, more than an image may have (Docker stops at 127;
the kernel's own limit is 500).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SHORT = 20
MAX_OPTIONS = 4096 - 1  # the page, less its terminating NUL


class TooManyLayers(ValueError):
    pass


def short_name(chain_id: str) -> str:
    return "l/" + chain_id.removeprefix("sha256:")[:SHORT]


def link_layers(store_root: Path, chain_ids: list[str]) -> list[str]:
    """The lower dirs of an overlay of these layers (lowest first in `chain_ids`), relative to
    `store_root`, topmost first as overlayfs lists them; makes the links that are missing."""
    links = store_root / "l"
    links.mkdir(exist_ok=True)
    names: list[str] = []
    for chain in chain_ids:
        name = short_name(chain)
        target = f"../layers/{chain.removeprefix('sha256:')}"
        with contextlib.suppress(FileExistsError):  # another podkit made it just now
            os.symlink(target, store_root / name)
        names.append(name)
    names.reverse()
    return names


def overlay_options(lower: list[str], upper: str, work: str) -> str:
    """The mount options; TooManyLayers when they do not fit the kernel's page."""
    options = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if len(options) > MAX_OPTIONS:
        raise TooManyLayers(
            f"an image of {len(lower)} layers: its overlay's options exceed the kernel's "
            f"{MAX_OPTIONS + 1} bytes"
        )
    return options


def remove_dangling(store_root: Path) -> int:
    """Links whose layer is gone (prune removed it); returns how many."""
    links = store_root / "l"
    removed = 0
    if not links.is_dir():
        return 0
    for link in links.iterdir():
        if link.is_symlink() and not link.exists():
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
                removed += 1
    return removed
