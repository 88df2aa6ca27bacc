"""hostPath volume type checks, done before anything starts (as the kubelet does at mount)."""

from __future__ import annotations

import os
import stat

from podkit.manifest.model import Pod


class HostPathError(ValueError):
    pass


_CHECKS = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a UNIX socket"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def check_host_path(path: str, kind: str) -> str | None:
    """None when `path` satisfies hostPath `type`, else why not. *OrCreate types create it."""
    if kind == "DirectoryOrCreate":
        if not os.path.exists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
        kind = "Directory"
    elif kind == "FileOrCreate":
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            open(path, "a").close()
        kind = "File"
    if kind == "":
        return None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist"
    test, what = _CHECKS[kind]
    return None if test(mode) else f"{path} is not {what}"


def check_host_paths(pods: list[Pod]) -> None:
    for pod in pods:
        for i, v in enumerate(pod.volumes):
            if v.kind != "hostPath":
                continue
            kind = v.source.get("type", "") or ""
            why = check_host_path(v.source["path"], kind)
            if why:
                raise HostPathError(
                    f"{pod.source}: spec.volumes[{i}].hostPath (volume {v.name}, type "
                    f"{kind}): {why}"
                )
