"""The kubeconfig `podkit serve` writes: one cluster, one user (the admin client
certificate), one context named `podkit`; mode 0600, since it holds the client key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from podkit.api.pki import Pki

CONTEXT = "podkit"


def render(pki: Pki, server: str) -> str:
    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": data(pki.ca)},
            }
        ],
        "users": [
            {
                "name": f"{CONTEXT}-admin",
                "user": {
                    "client-certificate-data": data(pki.client_cert),
                    "client-key-data": data(pki.client_key),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": f"{CONTEXT}-admin", "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
