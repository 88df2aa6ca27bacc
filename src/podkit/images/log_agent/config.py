"""The log-agent's configuration file (YAML), validated with pydantic. See README.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from podkit.common.config import parse_hostport

ENV_PREFIX = "LOG_AGENT_"
# Shares our prefix but is the webapp's setting (where to send its access log), not ours.
FOREIGN_ENV = ("LOG_AGENT_ADDR",)

DEFAULT_TCP_LISTEN = "127.0.0.1:5170"  # Fluent Bit's tcp input default port
DEFAULT_HTTP_LISTEN = "127.0.0.1:9880"  # Fluent Bit's http input default port
DEFAULT_ADMIN_LISTEN = "127.0.0.1:2020"  # Fluent Bit's monitoring port
MiB = 1024 * 1024

# Keys the agent owns in every event; static fields may not replace them.
RESERVED_FIELDS = frozenset({"time", "message", "source", "file", "kubernetes"})


def _check_listen(value: str) -> str:
    parse_hostport(value)
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]


class _Section(BaseModel):
    # defer_build: validators are built on first use, so starting without a config file skips
    # ~90 ms of schema building (see common/config.py's fast path).
    model_config = ConfigDict(extra="forbid", defer_build=True)


class TcpSource(_Section):
    """Newline-delimited text or JSON over TCP (Fluent Bit `tcp`, Vector `socket`)."""

    type: Literal["tcp"]
    name: str | None = None
    listen: Listen = DEFAULT_TCP_LISTEN
    max_line_bytes: int = Field(default=1 * MiB, gt=0)


class HttpSource(_Section):
    """HTTP POST of a JSON object, a JSON array or JSON/text lines (Fluent Bit `http`)."""

    type: Literal["http"]
    name: str | None = None
    listen: Listen = DEFAULT_HTTP_LISTEN
    max_body_bytes: int = Field(default=16 * MiB, gt=0)


class FileSource(_Section):
    """Tail files matching glob patterns (Fluent Bit `tail`, Vector `file`)."""

    type: Literal["file"]
    name: str | None = None
    paths: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    read_from: Literal["head", "tail"] = "head"
    poll_interval: float = Field(default=0.25, gt=0, le=10, description="seconds")
    rotate_wait: float = Field(
        default=5.0, ge=0, description="seconds to keep reading a rotated-away file"
    )
    container_name: str | None = None
    max_line_bytes: int = Field(default=1 * MiB, gt=0)


Source = Annotated[TcpSource | HttpSource | FileSource, Field(discriminator="type")]


class Transforms(_Section):
    parse: Literal["auto", "raw", "json", "common_log"] = "auto"
    add_fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("add_fields")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_FIELDS & value.keys())
        if clash:
            raise ValueError(f"may not set {', '.join(clash)}: the agent sets those fields")
        return value


class StdoutSink(_Section):
    type: Literal["stdout"]
    name: str | None = None
    format: Literal["json", "pretty", "text"] = "json"


Sink = Annotated[StdoutSink, Field(discriminator="type")]


class Admin(_Section):
    enabled: bool = True
    listen: Listen = DEFAULT_ADMIN_LISTEN


# model_construct: defaults are known valid, and validating them would build the schemas.
def _default_sources() -> list[TcpSource | HttpSource | FileSource]:
    return [TcpSource.model_construct(type="tcp"), HttpSource.model_construct(type="http")]


def _default_sinks() -> list[StdoutSink]:
    return [StdoutSink.model_construct(type="stdout")]


class AgentConfig(_Section):
    sources: list[Source] = Field(default_factory=_default_sources, min_length=1)
    transforms: Transforms = Field(default_factory=Transforms.model_construct)
    sinks: list[Sink] = Field(default_factory=_default_sinks, min_length=1)
    admin: Admin = Field(default_factory=Admin.model_construct)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        for kind, names in (
            ("sources", component_ids(self.sources)),
            ("sinks", component_ids(self.sinks)),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{kind}: two components are named {name!r}")
                seen.add(name)
        return self


def component_ids(
    components: list[TcpSource | HttpSource | FileSource] | list[StdoutSink],
) -> list[str]:
    """Each component's id: its `name`, else its type, numbered when a type repeats."""
    counts: dict[str, int] = {}
    for c in components:
        counts[c.type] = counts.get(c.type, 0) + 1
    seen: dict[str, int] = {}
    ids = []
    for c in components:
        if c.name:
            ids.append(c.name)
            continue
        seen[c.type] = seen.get(c.type, 0) + 1
        ids.append(c.type if counts[c.type] == 1 else f"{c.type}_{seen[c.type]}")
    return ids
