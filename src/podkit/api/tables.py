"""meta.k8s.io/v1 Tables: what `kubectl get` prints, with each kind's columns (api/kinds.py);
rows carry PartialObjectMetadata, so `-A` and `--show-labels` find namespace and labels."""

from __future__ import annotations

import datetime
from typing import Any

from podkit.api.kinds import Kind, Obj

JSON = "application/json"
TABLE = "as=Table"  # in an Accept header: the client wants a Table


def wanted(accept: str) -> bool:
    return TABLE in accept


def table(kind: Kind, items: list[Obj], now: datetime.datetime) -> dict[str, Any]:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": [
            {
                "name": c.name,
                "type": c.type,
                "format": "name" if c.name == "Name" else "",
                "description": "",
                "priority": c.priority,
            }
            for c in kind.columns
        ],
        "rows": [
            {
                "cells": [c.cell(o, now) for c in kind.columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata", {}),
                },
            }
            for o in items
        ],
    }
