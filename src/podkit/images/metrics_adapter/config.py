"""The metrics-adapter's configuration file (YAML), validated with pydantic. See README.md.

Selectors, label templates and names are checked here, so a bad one stops the adapter at start
with the file, the field path and the reason (exit 2) instead of failing at every scrape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from podkit.common.config_section import Duration, Listen, PositiveDuration, Section
from podkit.images.metrics_adapter import mapping, selector
from podkit.images.metrics_adapter.mapping import (
    LABEL_NAME,
    METRIC_NAME,
    RESERVED_PREFIX,
    SAMPLE_SUFFIX,
    Rule,
)

ENV_PREFIX = "METRICS_ADAPTER_"
DEFAULT_LISTEN = "0.0.0.0:9102"  # the page Prometheus scrapes: reachable on the pod's IP
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9103"
DEFAULT_URL = "http://127.0.0.1:8080/status"  # simple-webapp's status on the pod's localhost
MiB = 1024 * 1024


def _check_selector(text: str) -> str:
    selector.compile(text)  # SelectorError is a ValueError: pydantic reports it at the field
    return text


SelectorText = Annotated[str, AfterValidator(_check_selector)]


def _scalar_to_text(value: Any) -> Any:
    # `id: 5` or `enabled: true` in YAML are label values too, as text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_template(text: str) -> str:
    mapping.parse_template(text)
    return text


LabelText = Annotated[str, BeforeValidator(_scalar_to_text), AfterValidator(_check_template)]


def _check_value_source(value: float | str) -> float | str:
    if isinstance(value, str):
        if not selector.looks_like_selector(value):
            raise ValueError(f"expected a selector ($.key or {{.key}}) or a number, got {value!r}")
        selector.compile(value)
    return value


ValueSourceText = Annotated[float | str, AfterValidator(_check_value_source)]


class TargetConfig(Section):
    """Where the app's status is, and how long to wait for it."""

    url: str = Field(default=DEFAULT_URL, description="http://HOST:PORT/PATH of the status")
    format: Literal["auto", "json", "text"] = "auto"
    headers: dict[str, str] = Field(default_factory=dict, description="sent with each scrape")
    timeout: PositiveDuration = Field(default=2.0, description="seconds for a whole scrape")
    cache_ttl: Duration = Field(default=1.0, description="reuse a scrape's result this long")
    serve_stale_for: Duration = Field(
        default=0.0, description="after a failed scrape, keep showing the last values this long"
    )
    max_body_bytes: int = Field(default=4 * MiB, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http":
            raise ValueError(
                f"must be an http:// URL (the app's status on the pod's localhost), got {value!r}"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"invalid port in {value!r}") from None
        if not parts.hostname:
            raise ValueError(f"no host in {value!r}")
        return value


class MetricConfig(Section):
    """One metric (json_exporter's `metrics` entry, with our additions)."""

    name: str
    path: SelectorText
    # gauge | counter | info | untyped; json_exporter's `value` / `object` are accepted too
    # (then `valuetype` gives the metric type, untyped by default, as json_exporter does).
    type: Literal["gauge", "counter", "info", "untyped", "value", "object"] = "gauge"
    valuetype: Literal["gauge", "counter", "untyped"] | None = None
    help: str = ""
    unit: str = ""
    labels: dict[str, LabelText] = Field(default_factory=dict)
    value: SelectorText | None = None
    values: dict[str, ValueSourceText] = Field(default_factory=dict)
    value_map: dict[str, float] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not METRIC_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid metric name (letters, digits, _ and :, "
                "not starting with a digit)"
            )
        if value.startswith(RESERVED_PREFIX):
            raise ValueError(f"names starting with {RESERVED_PREFIX} are the adapter's own")
        return value

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-zA-Z0-9_]+", value):
            raise ValueError(f"{value!r} is not a valid unit (letters, digits and _)")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(
                    f"label name {name!r} is not valid (letters, digits and _, not starting "
                    "with a digit or __)"
                )
        return value

    @field_validator("values")
    @classmethod
    def _value_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not re.fullmatch(r"[a-zA-Z0-9_:]+", key):
                raise ValueError(
                    f"values key {key!r} is not valid: it becomes part of the metric name "
                    "<name>_<key> (letters, digits, _ and :)"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MetricConfig:
        if self.value is not None and self.values:
            raise ValueError("give either value or values, not both")
        if self.metric_type == "info" and (self.value is not None or self.values):
            raise ValueError("an info metric has no value: its labels are the information")
        if (
            self.valuetype is not None
            and self.type not in ("value", "object")
            and "type" in self.model_fields_set
            and self.valuetype != self.type
        ):
            raise ValueError(f"type {self.type!r} and valuetype {self.valuetype!r} disagree")
        return self

    @property
    def metric_type(self) -> mapping.MetricType:
        if self.type in ("value", "object"):
            return self.valuetype or "untyped"
        if self.valuetype is not None and "type" not in self.model_fields_set:
            return self.valuetype
        return cast(mapping.MetricType, self.type)  # value / object handled above

    def rule(self) -> Rule:
        values = tuple(
            (key, float(src) if not isinstance(src, str) else selector.compile(src))
            for key, src in self.values.items()
        )
        return Rule(
            name=self.name,
            path=selector.compile(self.path),
            type=self.metric_type,
            help=self.help,
            unit=self.unit,
            labels=tuple((k, mapping.parse_template(v)) for k, v in self.labels.items()),
            value=selector.compile(self.value) if self.value is not None else None,
            values=values,
            value_map=dict(self.value_map),
            scope=cast(mapping.Scope, {"object": "item", "value": "root"}.get(self.type, "auto")),
        )


class Admin(Section):
    enabled: bool = True
    listen: Listen = DEFAULT_ADMIN_LISTEN


class AdapterConfig(Section):
    listen: Listen = Field(default=DEFAULT_LISTEN, description="where the page is served")
    path: str = Field(default="/metrics", description="the page's path")
    target: TargetConfig = Field(default_factory=TargetConfig.model_construct)
    metrics: list[MetricConfig] = Field(
        default_factory=list, description="none: every number in the status, by its path"
    )
    admin: Admin = Field(default_factory=Admin.model_construct)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="before")
    @classmethod
    def _json_exporter_modules(cls, data: Any) -> Any:
        # A json_exporter config pasted whole: say what to do rather than "unknown field".
        if isinstance(data, dict) and "modules" in data:
            raise ValueError(
                "modules: json_exporter's modules are not used here (the adapter scrapes one "
                "app): move one module's `metrics` list to the top level, its `headers` to "
                "target.headers"
            )
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with / (got {value!r})")
        if value in ("/healthz", "/readyz"):
            raise ValueError(f"{value} is the adapter's own health endpoint")
        return value

    @model_validator(mode="after")
    def _families_agree(self) -> AdapterConfig:
        """Metrics that share a name add series to one family: they must agree on its type.
        Different families must not expose the same name (a counter `a` writes `a_total`)."""
        families: dict[str, tuple[int, str, str]] = {}  # family -> (metric index, type, unit)
        exposed: dict[str, str] = {}  # a name on the page -> the family that writes it
        for i, metric in enumerate(self.metrics):
            rule = metric.rule()
            for fname, _ in rule.outputs():
                if fname.startswith(RESERVED_PREFIX):
                    raise ValueError(
                        f"metrics[{i}].values: {fname} would be one of the adapter's own names"
                    )
                if fname in families:
                    j, typ, unit = families[fname]
                    if (typ, unit) != (rule.type, rule.unit):
                        raise ValueError(
                            f"metrics[{i}].name: {fname} is also made by metrics[{j}] as a {typ}"
                            f"{f' in {unit}' if unit else ''}; one name, one type and unit"
                        )
                    continue
                families[fname] = (i, rule.type, rule.unit)
                for name in {fname, fname + SAMPLE_SUFFIX[rule.type]}:
                    other = exposed.setdefault(name, fname)
                    if other != fname:
                        j, typ, _ = families[other]
                        raise ValueError(
                            f"metrics[{i}].name: the page would have two {name}: this "
                            f"{rule.type} and the {typ} {other} of metrics[{j}]"
                        )
        return self

    def rules(self) -> list[Rule]:
        return [m.rule() for m in self.metrics]
