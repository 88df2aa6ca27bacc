"""Where the registries file is when no --registry-config names one (apart from oci/hosts.py,
which needs pydantic: a start whose images are all present never imports it)."""

from __future__ import annotations

import os
from pathlib import Path


def default_path() -> Path:
    """/etc/podkit/registries.yaml as root, else $XDG_CONFIG_HOME/podkit/registries.yaml."""
    if os.geteuid() == 0:
        return Path("/etc/podkit/registries.yaml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "podkit" / "registries.yaml"
