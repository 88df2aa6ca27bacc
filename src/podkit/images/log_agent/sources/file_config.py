"""The file source's settings (a `type: file` entry under `sources:`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from podkit.common.config_section import Section
from podkit.images.log_agent.rotated import DEFAULT_PATTERNS, check_pattern

KiB = 1024
MiB = 1024 * KiB


class MultilineConfig(Section):
    """Join lines into one event: a line matching start_pattern begins the next event."""

    start_pattern: str
    flush_timeout: float = Field(default=1.0, gt=0, description="seconds without a next line")
    max_lines: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=1 * MiB, gt=0)

    @field_validator("start_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.start_pattern)


class FileSourceConfig(Section):
    """Tail files matching glob patterns (Fluent Bit `tail`, Vector `file`)."""

    type: Literal["file"]
    name: str | None = None
    paths: list[str] = Field(min_length=1, description="globs; ** matches directories")
    exclude: list[str] = Field(
        default_factory=list, description='without "/": the file name, else the whole path'
    )
    # For files there at the agent's very first start (no checkpoint): later ones are new.
    read_from: Literal["head", "tail"] = "head"
    format: Literal["text", "cri"] = "text"
    multiline: MultilineConfig | None = None
    container_name: str | None = None  # kubernetes.container_name of text files' events
    max_line_bytes: int = Field(default=1 * MiB, gt=0)
    empty_lines: Literal["drop", "keep"] = Field(
        default="drop", description="drop (counted in log_agent_empty_lines_total) or keep"
    )
    fingerprint_bytes: int = Field(default=256, ge=16, le=64 * KiB)
    read_chunk: int = Field(default=256 * KiB, ge=4 * KiB, le=64 * MiB)
    poll_interval: float = Field(
        default=0.25, gt=0, le=10, description="seconds; when inotify is unavailable"
    )
    glob_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between scans")
    # A rotated file is let go once drained, its successor written and rotate_wait passed (or
    # once it was deleted and drained); rotate_idle_timeout only caps the wait for a writer
    # that never moves on.
    rotate_wait: float = Field(
        default=5.0,
        ge=0,
        description="seconds a rotated file stays open after its successor was written: a "
        "writer that reopens late (workers reopening on a signal) still has its lines read "
        "(Fluent Bit's Rotate_Wait)",
    )
    rotate_idle_timeout: float = Field(default=60.0, gt=0, description="seconds")
    rotated: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PATTERNS),
        description="names of a followed file's rotated copies ({name}: its name; glob "
        "characters allowed): at start-up, copies made while the agent was stopped are read",
    )
    rotated_compressed: Literal["read", "skip"] = Field(
        default="read",
        description="a rotated copy compressed while the agent was stopped (.gz): read it, or "
        "skip it with a warning naming what was not read",
    )

    @field_validator("rotated")
    @classmethod
    def _rotation_patterns(cls, value: list[str]) -> list[str]:
        problems = [p for p in map(check_pattern, value) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        relative = [p for p in value if not p.startswith("/")]
        if relative:
            raise ValueError(f"paths must be absolute: {', '.join(relative)}")
        return value
