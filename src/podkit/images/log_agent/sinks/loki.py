"""The Loki sink (Vector `loki`, Fluent Bit `loki`): `POST {endpoint}/loki/api/v1/push`, JSON.

    {"streams": [{"stream": {"namespace": "shop", "pod": "web-7f9c", ...},
                  "values": [["1795644908123456789", "<line>"], ...]}]}

Labels: `labels` maps a label name to a template, literal text with `{field.path}` placeholders
(`{kubernetes.labels."app.kubernetes.io/name"}` quotes a key holding dots). A label whose value
comes out empty (field missing or null) is left out; an event left with no label at all gets
`job="log-agent"`, since Loki refuses a stream without labels. Events with the same label set form
one stream, its values in event order. Timestamps are the event's "time" in Unix nanoseconds, as
a decimal string; an event whose time does not parse gets the time of encoding.

Lines: `line_format: json` (default) is the full event as JSON, minus the fields a label already
carries whole (`remove_label_fields`, default true): a label such as `pod: "{kubernetes.pod_name}"`
removes `kubernetes.pod_name` from the line, since Loki shows and queries it as a label; a field
used in a composite template (`"{a}-{b}"`) stays. `line_format: message` is the message alone.

Payload: one item a line, `<labels JSON>\x1f<["ts", "line"]>`; the push body groups the items
by their labels when it is sent (`push_body`), so any run of items is a request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson
from pydantic import Field, field_validator

from podkit.images.log_agent.event import Batch, Event
from podkit.images.log_agent.sinks.base import Rejected
from podkit.images.log_agent.sinks.http import unix_nanos
from podkit.images.log_agent.sinks.http_client import HttpClient, HttpClientConfig, base_url

DEFAULT_LABELS = {
    "job": "log-agent",
    "namespace": "{kubernetes.namespace_name}",
    "pod": "{kubernetes.pod_name}",
    "container": "{kubernetes.container_name}",
}
FALLBACK_LABELS = {"job": "log-agent"}
PUSH_PATH = "/loki/api/v1/push"
# Prometheus label names; names starting with "__" are reserved for Loki's own use.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SEGMENT = re.compile(r'"([^"]*)"|([^."]+)')

Path = tuple[str, ...]


class LokiConfig(HttpClientConfig):
    type: Literal["loki"]
    name: str | None = None
    endpoint: str = Field(
        default="http://localhost:3100", description=f"base URL; {PUSH_PATH} is appended"
    )
    labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS), min_length=1)
    line_format: Literal["json", "message"] = "json"
    remove_label_fields: bool = True
    tenant_id: str | None = Field(default=None, description="sent as X-Scope-OrgID")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            if not _LABEL_NAME.fullmatch(name):
                raise ValueError(
                    f"label name {name!r}: use letters, digits and _, not starting with a digit"
                )
            if name.startswith("__"):
                raise ValueError(f"label name {name!r}: names starting with __ are reserved")
            Template.parse(template)
        return value


def parse_path(text: str) -> Path:
    """`a.b."c.d"` -> ("a", "b", "c.d")."""
    segments: list[str] = []
    pos = 0
    while True:
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise ValueError(f"bad field path {text!r}")
        segments.append(m.group(1) if m.group(1) is not None else m.group(2))
        pos = m.end()
        if pos == len(text):
            return tuple(segments)
        if text[pos] != ".":
            raise ValueError(f"bad field path {text!r}")
        pos += 1


def lookup(event: Event, common: Event, path: Path) -> object:
    """The value at `path` in the full event; None when missing."""
    head = path[0]
    value = event[head] if head in event else common.get(head)
    for key in path[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def label_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str).decode()


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Path, ...]  # literal text, or a field path to fill in

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | Path] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(parse_path(m.group(1).strip()))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return cls(tuple(parts))

    @property
    def paths(self) -> list[Path]:
        return [p for p in self.parts if isinstance(p, tuple)]

    @property
    def whole_field(self) -> Path | None:
        """The path when the template is one placeholder and nothing else."""
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], tuple) else None

    def render(self, event: Event, common: Event) -> str:
        return "".join(
            p if isinstance(p, str) else label_text(lookup(event, common, p)) for p in self.parts
        )


def without(obj: Event, path: Path) -> Event:
    """`obj` minus the field at `path`, copying only the dicts along the path."""
    head = path[0]
    if head not in obj:
        return obj
    if len(path) == 1:
        out = dict(obj)
        del out[head]
        return out
    child = obj[head]
    if not isinstance(child, dict):
        return obj
    return {**obj, head: without(child, path[1:])}


class LokiEncoder:
    def __init__(
        self, labels: Mapping[str, str], line_format: Literal["json", "message"], remove: bool
    ) -> None:
        self.labels = [(name, Template.parse(text)) for name, text in labels.items()]
        self.line_format = line_format
        removed = [t.whole_field for _, t in self.labels] if remove else []
        self.removed: list[Path] = [p for p in removed if p is not None]

    def encode(self, batch: Batch) -> bytes:
        common = batch.common
        # Labels that only read `common` are the same for the whole batch: render them once.
        fixed: dict[str, str] = {}
        varying: list[tuple[str, Template]] = []
        for name, template in self.labels:
            if all(path[0] in common for path in template.paths):
                value = template.render({}, common)
                if value:
                    fixed[name] = value
            else:
                varying.append((name, template))
        line_common = common
        for path in self.removed:
            line_common = without(line_common, path)

        dumps = orjson.dumps
        fixed_key = dumps(fixed or FALLBACK_LABELS, option=orjson.OPT_SORT_KEYS) + b"\x1f"
        keys: dict[tuple[tuple[str, str], ...], bytes] = {}
        out: list[bytes] = []
        now_ns: int | None = None
        for event in batch.events:
            key = fixed_key
            if varying:
                labels = dict(fixed)
                for name, template in varying:
                    value = template.render(event, common)
                    if value:
                        labels[name] = value
                labels = labels or FALLBACK_LABELS
                sort = tuple(sorted(labels.items()))
                key = keys.get(sort) or keys.setdefault(
                    sort, dumps(labels, option=orjson.OPT_SORT_KEYS) + b"\x1f"
                )
            ts = unix_nanos(event["time"] if "time" in event else common.get("time"))
            if ts is None:
                now_ns = now_ns or time.time_ns()
                ts = now_ns
            out += (key, dumps([str(ts), self._line(event, common, line_common)]), b"\n")
        return b"".join(out)

    def _line(self, event: Event, common: Event, line_common: Event) -> str:
        if self.line_format == "message":
            return label_text(lookup(event, common, ("message",)))
        for path in self.removed:
            event = without(event, path)
        return orjson.dumps({**event, **line_common}, default=str).decode()


def push_body(payload: bytes) -> bytes:
    """The push request for a payload of items: one stream per label set, in first-seen order,
    its values in payload order."""
    streams: dict[bytes, list[bytes]] = {}
    for item in payload.splitlines():
        labels, _, value = item.partition(b"\x1f")
        streams.setdefault(labels, []).append(value)
    body = b",".join(
        b'{"stream":' + labels + b',"values":[' + b",".join(values) + b"]}"
        for labels, values in streams.items()
    )
    return b'{"streams":[' + body + b"]}"


class LokiSink:
    def __init__(self, id: str, cfg: LokiConfig) -> None:
        self.id = id
        self.cfg = cfg
        self._encoder = LokiEncoder(cfg.labels, cfg.line_format, cfg.remove_label_fields)
        self._client = HttpClient(id, cfg)
        self._url = base_url(cfg.endpoint) + PUSH_PATH
        self._headers = {"X-Scope-OrgID": cfg.tenant_id} if cfg.tenant_id else {}
        self.batching = cfg.batching()

    def encode(self, batch: Batch) -> bytes:
        return self._encoder.encode(batch)

    async def start(self) -> None:
        await self._client.start()

    async def send(self, payload: bytes) -> Rejected | None:
        # Loki answers 204; a 400 (entry too old, line too long) refuses the whole request.
        body = push_body(payload)
        await self._client.post(self._url, body, "application/json", self._headers)
        return None

    async def close(self) -> None:
        await self._client.close()
