"""The log-agent's configuration file (YAML), validated with pydantic. See README.md.

Each component's own settings live beside it (sources/file_config.py, sinks/<type>.py,
transform_config.py); this module adds what every sink shares (routing, buffer, retry) and the
top-level sections.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from podkit.common.config_section import Listen, Section
from podkit.images.log_agent.sinks import elasticsearch, file, http, loki, otlp, stdout, syslog
from podkit.images.log_agent.sources.file_config import FileSourceConfig
from podkit.images.log_agent.transform_config import Match, TransformConfig

ENV_PREFIX = "LOG_AGENT_"
# Shares our prefix but is the webapp's setting (where to send its access log), not ours.
FOREIGN_ENV = ("LOG_AGENT_ADDR",)

DEFAULT_TCP_LISTEN = "127.0.0.1:5170"  # Fluent Bit's tcp input default port
DEFAULT_HTTP_LISTEN = "127.0.0.1:9880"  # Fluent Bit's http input default port
DEFAULT_ADMIN_LISTEN = "127.0.0.1:2020"  # Fluent Bit's monitoring port
MiB = 1024 * 1024


def default_data_dir() -> Path:
    """/var/lib/log-agent as root (in a container), else under the user's XDG state home."""
    if os.geteuid() == 0:
        return Path("/var/lib/log-agent")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "log-agent"


class TcpSourceConfig(Section):
    """Newline-delimited text or JSON over TCP (Fluent Bit `tcp`, Vector `socket`)."""

    type: Literal["tcp"]
    name: str | None = None
    listen: Listen = DEFAULT_TCP_LISTEN
    max_line_bytes: int = Field(default=1 * MiB, gt=0)
    empty_lines: Literal["drop", "keep"] = Field(
        default="drop", description="drop (counted in log_agent_empty_lines_total) or keep"
    )


class HttpSourceConfig(Section):
    """HTTP POST of a JSON object, a JSON array or JSON/text lines (Fluent Bit `http`)."""

    type: Literal["http"]
    name: str | None = None
    listen: Listen = DEFAULT_HTTP_LISTEN
    max_body_bytes: int = Field(default=16 * MiB, gt=0)


SourceConfig = Annotated[
    TcpSourceConfig | HttpSourceConfig | FileSourceConfig, Field(discriminator="type")
]


class BufferConfig(Section):
    """Where a sink's events wait (Vector `buffer`): memory, then disk, then `when_full`."""

    max_memory_bytes: int = Field(default=8 * MiB, gt=0)
    max_disk_bytes: int = Field(default=256 * MiB, gt=0)
    when_full: Literal["block", "drop_oldest"] = "block"


class RetryConfig(Section):
    """Failed sends are retried with exponential backoff and jitter; unlimited by default. The
    cap is low so that a receiver back from an outage gets data within seconds."""

    initial_backoff: float = Field(default=0.5, gt=0, description="seconds")
    max_backoff: float = Field(default=5.0, gt=0, description="seconds")
    max_attempts: int = Field(default=0, ge=0, description="0: retry for ever")

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.initial_backoff > self.max_backoff:
            raise ValueError("initial_backoff may not be larger than max_backoff")
        return self


class SinkOptions(Section):
    """What every sink has besides its own settings."""

    match: Match = Field(default_factory=dict)
    buffer: BufferConfig = Field(default_factory=BufferConfig.model_construct)
    retry: RetryConfig = Field(default_factory=RetryConfig.model_construct)


def _with_options(model: type[Section]) -> type[Section]:
    """The sink's own model plus SinkOptions, under the sink's name (for error messages)."""
    return type(model.__name__, (model, SinkOptions), {"__module__": model.__module__})


StdoutSinkConfig = _with_options(stdout.StdoutConfig)
SINK_MODELS = {
    "stdout": (StdoutSinkConfig, stdout.StdoutSink),
    "file": (_with_options(file.FileConfig), file.FileSink),
    "syslog": (_with_options(syslog.SyslogConfig), syslog.SyslogSink),
    "http": (_with_options(http.HttpConfig), http.HttpSink),
    "loki": (_with_options(loki.LokiConfig), loki.LokiSink),
    "elasticsearch": (
        _with_options(elasticsearch.ElasticsearchConfig),
        elasticsearch.ElasticsearchSink,
    ),
    "otlp": (_with_options(otlp.OtlpConfig), otlp.OtlpSink),
}
if TYPE_CHECKING:  # the union below is built at run time: what every member has

    class SinkConfig(SinkOptions):
        type: str

else:
    SinkConfig = Annotated[
        Union[tuple(model for model, _ in SINK_MODELS.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class Admin(Section):
    enabled: bool = True
    listen: Listen = DEFAULT_ADMIN_LISTEN


# model_construct: defaults are known valid, and validating them would build the schemas.
def _default_sources() -> list[Any]:
    return [
        TcpSourceConfig.model_construct(type="tcp"),
        HttpSourceConfig.model_construct(type="http"),
    ]


def _default_sinks() -> list[Any]:
    return [StdoutSinkConfig.model_construct(type="stdout")]


class AgentConfig(Section):
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="file offsets and disk buffers; mount an emptyDir here to keep them",
    )
    shutdown_timeout: float = Field(
        default=20.0,
        gt=0,
        description="seconds to deliver what is buffered on SIGTERM (keep under the pod's "
        "terminationGracePeriodSeconds); what is left stays on disk for the next run",
    )
    sources: list[SourceConfig] = Field(default_factory=_default_sources, min_length=1)
    transforms: TransformConfig = Field(default_factory=TransformConfig.model_construct)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks, min_length=1)
    admin: Admin = Field(default_factory=Admin.model_construct)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        for kind, components in (("sources", self.sources), ("sinks", self.sinks)):
            _check_names(kind, components)
        return self


def _check_names(kind: str, components: list[Any]) -> None:
    """A component's id names its metrics, its disk buffer and its checkpoints, so it must not
    change when the config changes: when a type repeats, each of that type needs a `name` (a
    number would move when one is added or removed, and the data filed under it with it)."""
    counts: dict[str, int] = {}
    for c in components:
        counts[c.type] = counts.get(c.type, 0) + 1
    seen: set[str] = set()
    for index, c in enumerate(components):
        if c.name is None and counts[c.type] > 1:
            raise ValueError(
                f"{kind}[{index}]: {counts[c.type]} {kind} are of type {c.type}: give each a "
                f"`name` (its id in metrics and the name of its buffer and file checkpoints, "
                f"which must stay the same)"
            )
        name = c.name or c.type
        if name in seen:
            raise ValueError(f"{kind}[{index}]: two {kind} are named {name!r}")
        seen.add(name)


def component_ids(components: list[Any]) -> list[str]:
    """Each component's id: its `name`, else its type (a type that repeats has names)."""
    return [c.name or c.type for c in components]
