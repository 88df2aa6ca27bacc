"""`limit` and `continue` on lists, pure: kubectl asks for 500 at a time (`--chunk-size`), the
official client for what it is told. A page ends at an object; the token names that object
(namespace, name), and the next page starts after it. Unlike etcd's, the pages are not one
snapshot: an object written between two pages shows in the later one as it is then."""

from __future__ import annotations

import base64
import json
from typing import Any

from podkit.api import status


def page(
    items: list[dict[str, Any]], limit: int, token: str
) -> tuple[list[dict[str, Any]], str, int]:
    """The page of items (in key order) after token: the items, the next token ("" at the
    end) and how many remain after this page."""
    if token:
        after = _decode(token)
        items = [o for o in items if _position(o) > after]
    if limit <= 0 or len(items) <= limit:
        return items, "", 0
    shown = items[:limit]
    return shown, _encode(_position(shown[-1])), len(items) - limit


def _position(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


def _encode(position: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


def _decode(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(namespace), str(name)
    except (ValueError, TypeError):
        raise status.bad_request(f"invalid continue token {token!r}") from None
