"""Unpacking a layer rootless with subordinate ids: in a helper that is root of a user namespace
mapped with them (common/userns.py), so the files keep the owners the layer names, as they do
for podman's rootless storage. The helper runs unpack.py as usual and prints its UnpackStats
as JSON; a LayerError comes back as one.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from podkit.common import subids, userns
from podkit.oci.layer_entries import LayerError
from podkit.oci.unpack import UnpackStats, unpack_layer

_LAYER_ERROR = 3


def unpack_mapped(blob: Path, dest: Path, mapping: subids.IdMapping) -> UnpackStats:
    """unpack_layer(blob, dest, rootless=True, owners=True) as root of the mapped namespace."""
    done = userns.run("podkit.oci.unpack_mapped", [str(blob), str(dest)], mapping)
    if done.returncode == _LAYER_ERROR:
        error = json.loads(done.stdout)
        raise LayerError(error["entry"], error["reason"])
    if done.returncode != 0:
        raise LayerError("-", f"unpacking in the user namespace failed: {done.stderr.strip()}")
    return UnpackStats(**json.loads(done.stdout))


def main() -> int:
    blob, dest = sys.argv[1:3]
    userns.enter()
    try:
        stats = unpack_layer(blob, dest, rootless=True, owners=True)
    except LayerError as exc:
        print(json.dumps({"entry": exc.entry, "reason": exc.reason}))
        return _LAYER_ERROR
    print(json.dumps(dataclasses.asdict(stats)))
    return 0
