"""The base of every config section of an image: unknown keys are an error, validators built on
first use."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # defer_build: validators are built on first use, so starting without a config file skips
    # ~90 ms of schema building (see common/config.py's fast path).
    model_config = ConfigDict(extra="forbid", defer_build=True)
