"""A configMap, secret, downwardAPI or projected volume's files, written so that they change
all at once, as the kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go) writes them:

    <volume>/..2026_12_05_10_00_00.123456789/<files>   this version's files
    <volume>/..data -> ..2026_12_05_10_00_00.123456789
    <volume>/<key> -> ..data/<key>                      one link per top-level name

A new version is a new timestamped directory and one rename of `..data`: a reader sees the
old files or the new, never a mix, and programs that watch `..data` (the ambassador does)
see one change. Unchanged content is not rewritten.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile

Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)
DATA = "..data"


def write(volume: str, files: Files) -> bool:
    """Makes `volume` hold exactly `files`; False when it already did (nothing written)."""
    old_dir = _current(volume)
    if old_dir is not None and _holds(os.path.join(volume, old_dir), files):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    new_dir = tempfile.mkdtemp(prefix=stamp, dir=volume)
    os.chmod(new_dir, 0o755)
    for rel, (content, mode) in files.items():
        target = os.path.join(new_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(target, mode)  # the umask narrowed it
    link = os.path.join(volume, DATA + "_tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(os.path.basename(new_dir), link)
    os.rename(link, os.path.join(volume, DATA))  # the one step that switches versions
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        path = os.path.join(volume, top)
        if not os.path.islink(path):
            os.symlink(os.path.join(DATA, top), path)
    for entry in os.listdir(volume):  # names the new version no longer has
        if not entry.startswith("..") and entry not in tops:
            path = os.path.join(volume, entry)
            if os.path.islink(path):
                os.unlink(path)
    if old_dir is not None:
        shutil.rmtree(os.path.join(volume, old_dir), ignore_errors=True)
    return True


def _current(volume: str) -> str | None:
    try:
        return os.readlink(os.path.join(volume, DATA))
    except OSError:
        return None


def _holds(directory: str, files: Files) -> bool:
    """Whether `directory` has these files with this content, and no other (the kubelet
    compares content only; fsGroup may have changed the modes since)."""
    found = set()
    for root, _, names in os.walk(directory):
        for name in names:
            found.add(os.path.relpath(os.path.join(root, name), directory))
    if found != set(files):
        return False
    for rel, (content, _) in files.items():
        with open(os.path.join(directory, rel), "rb") as f:
            if f.read() != content:
                return False
    return True
