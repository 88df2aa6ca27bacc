"""The app's status body -> a document the selectors read. Pure.

JSON is parsed as it is. key=value text (one setting a line, `key: value` also accepted,
blank lines and `#` comments skipped) becomes a flat object of strings: `requests=42` is
`{"requests": "42"}`, read with `$.requests` (or `$['http.requests']` for dotted keys).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

Format = Literal["auto", "json", "text"]


class DecodeError(ValueError):
    """A body that is not what the config says it is; str() says why."""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str = "", fmt: Format = "auto") -> Any:
    if fmt == "auto":
        fmt = "json" if _looks_like_json(body, content_type) else "text"
    if fmt == "json":
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from None
    return parse_text(body)


def _looks_like_json(body: bytes, content_type: str) -> bool:
    mt = media_type(content_type)
    if mt == "application/json" or mt.endswith("+json"):
        return True
    return body.lstrip()[:1] in (b"{", b"[")


def parse_text(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 text (byte {exc.start})") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # Whichever of '=' and ':' comes first separates: `time=12:30` and `uptime: 5` both work.
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if cut < 0:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise DecodeError(f"line {number}: expected key=value, got {shown!r}")
        out[line[:cut].strip()] = line[cut + 1 :].strip()
    return out
