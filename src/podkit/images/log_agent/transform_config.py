"""Config models for parsing/enrichment (`TransformConfig`) and for sink routing (`Match`).

Pure validation: every mistake is reported at load time with the field (or match key) it is in,
so a bad pattern or zone never surfaces as a silent drop while the agent runs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from podkit.common.config_section import Section
from podkit.images.log_agent.parsers import compile_regex
from podkit.images.log_agent.timestamps import zone

ParseMode = Literal["auto", "raw", "json", "regex", "common_log"]
Scalar = str | int | float | bool | None

# Keys the agent owns: every event has time/message (and _id from replayable sources); the
# sources and the Transformer set source/file/kubernetes. Static fields may not replace them.
RESERVED_KEYS = frozenset({"time", "message", "source", "file", "kubernetes", "_id"})

# time_format names that are not strptime formats.
NAMED_TIME_FORMATS = frozenset({"rfc3339", "epoch", "epoch_ms"})

# A fixed aware instant to check that a strptime format can read what it writes.
_SAMPLE_TIME = datetime(2026, 11, 25, 22, 15, 8, 123456, tzinfo=UTC)


class TransformConfig(Section):
    """How each event's message is parsed, where its timestamp comes from, what is added."""

    parse: ParseMode = "auto"
    regex: str | None = None
    time_key: str | None = Field(default=None, min_length=1)
    time_format: str | None = None
    timezone: str = "UTC"
    add_fields: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)  # its ValueError already says what is wrong
        return value

    @field_validator("time_format")
    @classmethod
    def _known_time_format(cls, value: str | None) -> str | None:
        if value is None or value in NAMED_TIME_FORMATS:
            return value
        if "%" not in value:
            raise ValueError(
                f"{value!r} is not rfc3339, epoch, epoch_ms or a strptime format (no % directive)"
            )
        # A format that cannot read its own output would fail on every event.
        try:
            datetime.strptime(_SAMPLE_TIME.strftime(value), value)
        except ValueError as exc:
            raise ValueError(f"strptime format {value!r} does not work: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zone(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Paris"
            ) from None
        return value

    @field_validator("add_fields")
    @classmethod
    def _no_reserved(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        clash = sorted(RESERVED_KEYS & value.keys())
        if clash:
            raise ValueError(f"may not set {', '.join(clash)}: the agent sets those fields")
        return value

    @model_validator(mode="after")
    def _regex_iff_parse_regex(self) -> TransformConfig:
        if self.parse == "regex" and self.regex is None:
            raise ValueError("regex: required when parse is 'regex'")
        if self.parse != "regex" and self.regex is not None:
            # Silently ignoring it would hide a config that does not do what it says.
            raise ValueError(f"regex: only used with parse: regex (parse is {self.parse!r})")
        return self


# ---- sink routing -----------------------------------------------------------------------------

_SCALAR_TYPES = (str, int, float, bool)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, _SCALAR_TYPES)


def _check_match_value(value: Any) -> Any:
    """A scalar, a list of scalars, {regex: PATTERN} or {exists: BOOL}, as plain values."""
    if _is_scalar(value):
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list matches nothing: list the values to match")
        if not all(_is_scalar(item) for item in value):
            raise ValueError("a list may hold only strings, numbers, booleans or null")
        return value
    if isinstance(value, dict):
        if value.keys() == {"regex"}:
            pattern = value["regex"]
            if not isinstance(pattern, str):
                raise ValueError("regex: must be a string")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
            return {"regex": pattern}
        if value.keys() == {"exists"}:
            if not isinstance(value["exists"], bool):
                raise ValueError("exists: must be true or false")
            return {"exists": value["exists"]}
        keys = ", ".join(sorted(map(str, value))) or "none"
        raise ValueError(f"expected {{regex: PATTERN}} or {{exists: true|false}}, got keys {keys}")
    raise ValueError(f"expected a value, a list, {{regex: ...}} or {{exists: ...}}, got {value!r}")


def _check_path(path: str) -> str:
    if not path or any(part == "" for part in path.split(".")):
        raise ValueError(f"{path!r} is not a field path like kubernetes.container_name")
    return path


# A validator per value (not a pydantic union) so an error is one line under the key it is
# about, e.g. `sinks[0].match.status: regex '5(' does not compile: ...`.
MatchValue = Annotated[Any, AfterValidator(_check_match_value)]
MatchPath = Annotated[str, AfterValidator(_check_path)]
Match = dict[MatchPath, MatchValue]
