"""What the images' config models share: the base section (unknown keys are an error, validators
built on first use), durations with units, and checked http(s) URLs and how messages show them."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from podkit.common.config import parse_hostport


class Section(BaseModel):
    # defer_build: validators are built on first use, so starting without a config file skips
    # ~90 ms of schema building (see common/config.py's fast path).
    model_config = ConfigDict(extra="forbid", defer_build=True)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """'250ms' -> 0.25, '10s' -> 10.0, 3 -> 3.0; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m is None:
            raise ValueError(
                f"invalid duration {value!r}: expected seconds, or e.g. 250ms, 10s, 5m, 1h"
            )
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


def _check_listen(value: str) -> str:
    parse_hostport(value)
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]  # HOST:PORT, or :PORT for all addresses
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def display_url(url: str) -> str:
    """The URL for messages: no query string (it may carry an API key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def check_http_url(value: str, *, instead: str) -> str:
    """An http(s) URL with a host, a valid port and no fragment. Credentials in it are refused
    without quoting the value (they would show wherever it is logged); `instead` says where
    they belong."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in the URL are not allowed: use {instead}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"need an http:// or https:// URL with a host, got {value!r}")
    _ = parts.port  # ValueError for a port that is not a number in 0-65535
    if parts.fragment:
        raise ValueError("a URL fragment is never sent: remove it")
    return value
